//! Setting a VM's link up: wait for its rings, describe its memory to the
//! peer (QEMU's memfd and regions), meet the peer and install the [`Link`].

use super::backend::{ready, ring_info, NetBackend, RX, TX};
use super::link::Link;
use super::{features, VhostArgs};
use crate::cli::config::Share;
use crate::cli::config::Writes;
use crate::copier::Copier;
use crate::memory::{GuestMap, MemoryError};
use crate::stats::Stats;
use crate::virtq::{DeviceQueue, NotifyMode, RingError};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use transport::{ConnectOptions, Handshake, Transport};
use vhost_user_backend::VringT;
use virtio_queue::QueueT;

mod vm_mem;

pub(super) use vm_mem::memory_layout;
use vm_mem::{vm_map, vm_memory};

/// Why the link could not be set up. The launcher exits 1 with this line.
#[derive(Debug, thiserror::Error)]
pub(super) enum EstablishError {
    /// A RAM region QEMU sent is not backed by a file: no memfd to share.
    #[error("VM memory region at guest address {gpa:#x} has no file: start QEMU with -object memory-backend-memfd,share=on")]
    NoFile {
        /// The region's guest-physical start.
        gpa: u64,
    },
    /// RAM regions come from more than one file; the handshake names one.
    #[error("VM memory spans several files; use one memory-backend-memfd for all RAM")]
    SeveralFiles,
    /// `SET_MEM_TABLE` had no regions.
    #[error("QEMU sent no memory regions")]
    NoRegions,
    /// Looking at or duplicating QEMU's memfd failed.
    #[error("VM memfd: {what}: {err}")]
    VmFile {
        /// The call that failed.
        what: &'static str,
        /// The OS error.
        err: std::io::Error,
    },
    /// The VM's rings do not lie inside the memory it declared.
    #[error("the VM's rings do not fit its memory: {0}")]
    RingsOutsideMemory(transport::Error),
    /// Meeting the peer launcher failed (timeout, refused, gone).
    #[error("{0}")]
    Connect(transport::Error),
    /// The peer maintains fewer suppression fields than the VM reads.
    #[error("peer {pid} maintains notify mode {peer} but this VM negotiated {vm}; start both launchers with the same --notify")]
    NotifyMode {
        /// The peer's pid.
        pid: u32,
        /// The peer's mode.
        peer: &'static str,
        /// The VM's.
        vm: &'static str,
    },
    /// Both sides stated an MTU, and they differ: frames one VM may send
    /// would be too large for the other.
    #[error("peer {pid} states MTU {peer} but this VM has MTU {ours} (--mtu); start both launchers (and both VMs' host_mtu) with the same --mtu")]
    MtuMismatch {
        /// The peer's pid.
        pid: u32,
        /// The peer's MTU.
        peer: u32,
        /// Ours.
        ours: u32,
    },
    /// Mapping the peer's memory, or (multi-region VMs) the VM's, failed.
    #[error("{whose} memory: {err}")]
    Map {
        /// `peer` or `VM`.
        whose: &'static str,
        /// What failed.
        err: MemoryError,
    },
    /// A ring (the peer's TX, the VM's RX or TX) is not where it said.
    #[error("{whose} ring: {err}")]
    Ring {
        /// Which ring.
        whose: &'static str,
        /// What is wrong with it.
        err: RingError,
    },
    /// The backend's lock was poisoned by a panic in another thread.
    #[error("vhost-user backend state poisoned by a panic")]
    Poisoned,
    /// `--share exchange` without an exchange area (a bug).
    #[error("--share exchange: no exchange area")]
    NoExchange,
    /// The first service (packets already waiting) could not signal the VM.
    #[error("cannot signal the VM: {0}")]
    Signal(std::io::Error),
}

/// Wait for the VM's rings, meet the peer, and install the link.
///
/// # Generations (`--reconnect`)
/// The first link and every later one come up here; what outlives a link
/// is in the backend: the counters ([`Ended`](super::backend::Ended)), the
/// generation number, and the VM's ring positions in the library's queues.
///
/// 1. **Generation number.** We propose 1 + the links we had, the peer
///    proposes its own, both take the larger (as `run.rs` does), so a
///    restarted peer and its survivor print the same number.
/// 2. **The peer's TX ring** resumes at its published used index
///    ([`Copier::resume_peer_tx`]): what the last device side completed. A
///    restarted VM launcher's QEMU restarts that ring at the same place
///    (`SET_VRING_BASE` = used index, QEMU's "ring restore" when its
///    backend vanished), so nothing is sent twice and nothing skipped.
/// 3. **The VM's RX ring** starts at the library's `next_avail`/`next_used`:
///    our last copier's position (`link_down` wrote it back), or QEMU's
///    after a device start (a reboot or driver reset sends 0 and new rings).
/// 4. **The VM's TX ring**: the peer's copier applies step 2 to it.
///
/// While we wait for a peer the VM may reset its NIC again: a handshake
/// that described rings the VM no longer uses is dropped (the peer sees us
/// leave and waits for our next offer).
pub(super) fn establish<T: Transport + 'static>(
    backend: &Arc<RwLock<NetBackend<T>>>,
    args: &VhostArgs,
) -> Result<(), EstablishError> {
    loop {
        if establish_once(backend, args)? {
            return Ok(());
        }
    }
}

/// One attempt of [`establish`]: `Ok(false)` when the peer met was dropped
/// (the VM's rings changed meanwhile, or the peer was refused) and we
/// should wait again.
fn establish_once<T: Transport + 'static>(
    backend: &Arc<RwLock<NetBackend<T>>>,
    args: &VhostArgs,
) -> Result<bool, EstablishError> {
    // 1. The VM's driver is up: memory known, both rings ready. Their
    // positions are what the backend library holds (see step 3 above).
    // While QEMU is away (`--carrier follow`) the VM keeps its memory and
    // rings: we describe those (`Parked`), and take QEMU back once the
    // peer has linked.
    let (mem, file, size, regions, tx, rx, rx_state, mode, generation, parked, acked) = loop {
        {
            let b = backend.read().map_err(|_| EstablishError::Poisoned)?;
            if let (Some(mem), Some(p)) = (&b.mem, b.away.as_ref()) {
                let (file, size, regions) = vm_memory(mem)?;
                break (
                    mem.clone(),
                    file,
                    size,
                    regions,
                    p.tx,
                    p.rx,
                    p.rx_state,
                    b.mode(),
                    b.generation,
                    true,
                    b.acked,
                );
            }
            if let Some(mem) = &b.mem {
                if b.vrings.len() == 2
                    && b.vrings.iter().all(ready)
                    && (b.ended.is_none() || args.reconnect)
                {
                    let (file, size, regions) = vm_memory(mem)?;
                    let rx_state = {
                        let g = b.vrings[RX].get_ref();
                        (g.get_queue().next_avail(), g.get_queue().next_used())
                    };
                    break (
                        mem.clone(),
                        file,
                        size,
                        regions,
                        ring_info(&b.vrings[TX]),
                        ring_info(&b.vrings[RX]),
                        rx_state,
                        b.mode(),
                        b.generation,
                        false,
                        b.acked,
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let first = generation == 0;
    let features = mode.features();
    // What the peer maps: the exchange area (`--share exchange`), or the
    // VM's memfd and regions (`--share guest`).
    let exchange = args.share == Share::Exchange;
    if !exchange {
        // The peer will map the VM's memory: refuse what it could SIGBUS us
        // (and QEMU) with — an unsealed memfd, a file, hugetlbfs. (With
        // `exchange` the peer never sees it.)
        crate::memory::check_vm_memory_shareable(file.as_fd())
            .map_err(|err| EstablishError::Map { whose: "VM", err })?;
    }
    let shared = if exchange {
        let b = backend.read().map_err(|_| EstablishError::Poisoned)?;
        let x = b.exchange.as_ref().ok_or(EstablishError::NoExchange)?;
        let f = x.file().map_err(|err| EstablishError::VmFile {
            what: "dup exchange memfd",
            err,
        })?;
        let (xtx, xrx) = x.rings();
        Some((f, x.size(), xtx, xrx))
    } else {
        None
    };
    let local = match &shared {
        Some((f, xsize, xtx, xrx)) => Handshake::new(
            std::process::id(),
            features,
            *xsize,
            f.as_raw_fd(),
            *xtx,
            *xrx,
        ),
        None => Handshake::new(std::process::id(), features, size, file.as_raw_fd(), tx, rx)
            .with_regions(&regions),
    }
    .with_generation(generation + 1)
    .with_mtu(args.mtu.unwrap_or(0))
    .with_offloads(features::receive_offloads(acked));
    local
        .validate()
        .map_err(EstablishError::RingsOutsideMemory)?;
    if !args.quiet && first {
        eprintln!(
            "VM rings ready ({} regions, {} MiB); waiting for peer on {} ...",
            regions.len(),
            size >> 20,
            args.sharenet
        );
    }
    // 2. Meet the peer (no lock held: the VM keeps running meanwhile). Only
    // the first wait has a deadline: a survivor waits as long as its VM
    // runs.
    let opts = ConnectOptions {
        nonblocking_writes: args.writes == Writes::Nonblocking,
        timeout: first.then(|| Duration::from_secs_f64(args.timeout)),
    };
    let offered = shared.as_ref().map_or(file.as_fd(), |(f, ..)| f.as_fd());
    let (t, peer) =
        T::connect(&args.sharenet.path, &local, offered, &opts).map_err(EstablishError::Connect)?;
    let up_at = Instant::now();
    let peer_pid = peer.handshake.pid;
    let peer_mode = NotifyMode::from_features(peer.handshake.features);
    // The VM reads the suppression fields of its negotiated mode: a peer
    // that maintains less would miss kicks. Two stated MTUs must agree.
    let ours = args.mtu.unwrap_or(0);
    let refusal = if peer_mode < mode {
        Some(EstablishError::NotifyMode {
            pid: peer_pid,
            peer: peer_mode.name(),
            vm: mode.name(),
        })
    } else if crate::offload::mtu::check_pair(ours, peer.handshake.mtu).is_err() {
        Some(EstablishError::MtuMismatch {
            pid: peer_pid,
            peer: peer.handshake.mtu,
            ours,
        })
    } else {
        None
    };
    if let Some(err) = refusal {
        if first || !args.reconnect {
            return Err(err);
        }
        eprintln!(
            "refused peer {peer_pid}: {err}; still waiting on {}",
            args.sharenet
        );
        drop((t, peer));
        std::thread::sleep(Duration::from_millis(500));
        return Ok(false);
    }
    let generation = crate::link::next_generation(generation, peer.handshake.generation);
    let peer_map = GuestMap::new(
        crate::memory::map_peer(peer.memory, peer.handshake.mem_size)
            .map_err(|err| EstablishError::Map { whose: "peer", err })?,
        peer.handshake.regions(),
    );
    let vm = vm_map(&mem, &file, size, &regions)?;
    let copier = Copier::new(t, &peer_map, &peer.handshake.tx, &vm, &rx, mode)
        .and_then(Copier::resume_peer_tx)
        .map_err(|err| EstablishError::Ring {
            whose: "peer TX or VM RX",
            err,
        })?
        .with_rx_state(rx_state.0, rx_state.1)
        .with_guest_interrupts();
    let mut copier = copier;
    copier.set_guest_features(acked);
    let vm_tx = DeviceQueue::new(&vm, &tx).map_err(|err| EstablishError::Ring {
        whose: "VM TX",
        err,
    })?;
    let tx_used_idx = vm.translate(tx.used + 2, 2).ok_or(EstablishError::Ring {
        whose: "VM TX",
        err: RingError::Memory(crate::memory::OutOfBounds {
            what: "used idx",
            offset: tx.used + 2,
            len: 2,
            size: vm.region().len(),
        }),
    })?;
    let ino = file.metadata().map(|m| m.ino()).unwrap_or(0);
    {
        let mut b = backend.write().map_err(|_| EstablishError::Poisoned)?;
        // The VM set its rings up anew while we met the peer: the peer was
        // told the old ones. Dropping the copier closes the link; the peer
        // (with --reconnect) waits for our next offer.
        // (While QEMU is away the rings cannot change; once it is back,
        // `running` checks them before the link moves a packet.)
        let still = if parked {
            b.away.is_some()
        } else {
            b.vrings.len() == 2
                && b.vrings.iter().all(ready)
                && ring_info(&b.vrings[TX]) == tx
                && ring_info(&b.vrings[RX]) == rx
                && b.vrings[RX].get_ref().get_queue().next_avail() == rx_state.0
        };
        if !still {
            if !args.quiet {
                eprintln!(
                    "the VM's rings changed while meeting peer {peer_pid}; offering the new ones"
                );
            }
            return Ok(false);
        }
        // Where the peer's copier will start on the VM's TX ring: what it
        // has marked used so far (0 on a fresh ring).
        let tx_used_seen = vm
            .region()
            .load_u16("vm tx used idx", tx_used_idx, Ordering::Acquire)
            .unwrap_or(0);
        // `--share exchange`: we serve the VM's TX ring ourselves, from
        // the same place (every chain before it was completed: copied into
        // the exchange area, or QEMU restarted the ring there).
        let vm_tx = if exchange {
            vm_tx.with_state(tx_used_seen, tx_used_seen)
        } else {
            vm_tx
        };
        let carried = b.ended.take();
        let down_ms = carried
            .as_ref()
            .map(|e| up_at.saturating_duration_since(e.at).as_secs_f64() * 1e3);
        let (mut stats, tx_bytes, started) = match carried {
            Some(e) => (e.carry.stats, e.carry.tx_bytes, e.carry.started),
            None => (
                Stats {
                    transport: args.sharenet.kind.name().into(),
                    workload: "vhost-user".into(),
                    notify: args.notify.name().into(),
                    notify_effective: mode.name().into(),
                    share: args.share.name().into(),
                    writes: args.writes.name().into(),
                    wait: "sleep".into(),
                    size: 0, // a VM's frames have no fixed size
                    ..Stats::default()
                },
                0,
                Instant::now(),
            ),
        };
        stats.peer_pid = peer_pid;
        stats.generation = generation;
        stats.offloads = features::receive_offloads(acked).into();
        stats.peer_offloads = peer.handshake.offloads.into();
        stats.mtu = args.mtu.unwrap_or(0);
        if let Some(ms) = down_ms {
            stats.reconnects += 1;
            stats.link_down_ms += ms;
            stats.link_down_ms_each.push(ms);
        }
        if !args.quiet {
            match down_ms {
                Some(ms) => eprintln!(
                    "link up (generation {generation}) after {ms:.1} ms: peer pid {peer_pid}; VM RX ring at {}/{}",
                    rx_state.0, rx_state.1
                ),
                None => eprintln!(
                    "connected to peer pid {peer_pid} over {}: peer memory {} MiB; notify {}; VM RX ring at {}/{}; link generation {generation}; VM offloads {}; mtu {}; peer accepts offloads {:#x}, mtu {}",
                    args.sharenet.kind.name(),
                    peer.handshake.mem_size >> 20,
                    mode.name(),
                    rx_state.0,
                    rx_state.1,
                    features::describe(acked),
                    args.mtu.map_or("none".to_string(), |m| m.to_string()),
                    peer.handshake.offloads,
                    match peer.handshake.mtu { 0 => "none".to_string(), m => m.to_string() },
                ),
            }
        }
        b.generation = generation;
        // The rings are running (checked above): whatever QEMU stopped
        // before, it has started again. (Not while QEMU is away: `running`
        // checks its rings when it is back.)
        if !parked {
            b.stopped = false;
        }
        b.link = Some(Link {
            _offered: shared.map_or(file, |(f, ..)| f),
            copier,
            vm,
            vm_tx,
            exchange,
            vm_tx_info: tx,
            vm_rx_info: rx,
            tx_used_idx,
            tx_used_seen,
            tx_bytes,
            segs: Vec::with_capacity(8),
            stats,
            started,
            memory: (ino, regions),
        });
        b.watch_link();
        // Packets may already be waiting on either side.
        b.service().map_err(EstablishError::Signal)?;
        if let Some(link) = b.link.as_ref() {
            let _ = link.copier.link().notify();
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtu_mismatch_names_both_values_and_the_fix() {
        let e = EstablishError::MtuMismatch {
            pid: 42,
            peer: 9000,
            ours: 1500,
        }
        .to_string();
        assert!(e.contains("MTU 9000") && e.contains("MTU 1500"), "{e}");
        assert!(e.contains("--mtu"), "{e}");
    }
}
