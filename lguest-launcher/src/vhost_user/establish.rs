//! Setting a VM's link up: wait for its rings, describe its memory to the
//! peer (QEMU's memfd and regions), meet the peer and install the [`Link`].

use super::backend::{ready, ring_info, Mem, NetBackend, RX, TX};
use super::link::Link;
use super::VhostArgs;
use crate::cli::config::Writes;
use crate::copier::Copier;
use crate::memory::{GuestMap, MemoryError, Region};
use crate::stats::Stats;
use crate::virtq::{DeviceQueue, NotifyMode, RingError};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use transport::{ConnectOptions, Handshake, MemRegion, Transport};
use vhost_user_backend::VringT;
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryBackend, GuestMemoryRegion};

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
    /// The first service (packets already waiting) could not signal the VM.
    #[error("cannot signal the VM: {0}")]
    Signal(std::io::Error),
}

/// The VM's memfd and its regions by file offset (what the peer maps):
/// QEMU's `memory-backend-memfd` gives every RAM region as the same file at
/// different offsets.
fn vm_memory(mem: &Mem) -> Result<(File, u64, Vec<MemRegion>), EstablishError> {
    let guard = mem.memory();
    let mut file: Option<File> = None;
    let mut ino = None;
    let mut regions = Vec::new();
    let os = |what| move |err| EstablishError::VmFile { what, err };
    for r in guard.iter() {
        let fo = r.file_offset().ok_or(EstablishError::NoFile {
            gpa: r.start_addr().0,
        })?;
        let meta = fo.file().metadata().map_err(os("fstat"))?;
        let id = (meta.dev(), meta.ino());
        match ino {
            None => {
                ino = Some(id);
                file = Some(fo.file().try_clone().map_err(os("dup"))?);
            }
            Some(i) if i != id => return Err(EstablishError::SeveralFiles),
            _ => {}
        }
        regions.push(MemRegion {
            gpa: r.start_addr().0,
            size: r.len(),
            offset: fo.start(),
        });
    }
    let file = file.ok_or(EstablishError::NoRegions)?;
    let size = file.metadata().map_err(os("fstat"))?.len();
    Ok((file, size, regions))
}

/// Our own view of the VM's memory: the backend's mapping, borrowed.
///
/// `Region` is one contiguous range. QEMU sends one region for a VM whose
/// RAM is one `memory-backend-memfd` below the 32-bit PCI hole (everything
/// up to 2-3 GiB, all our VMs): that region's mapping, as rust-vmm's
/// backend made it, becomes the region, and it is kept alive by an `Arc` of
/// the backend's memory for as long as any clone of it lives. A VM with
/// several regions (RAM above 4 GiB) has several mappings at unrelated
/// addresses; there we map the memfd once more as one range, as before,
/// until `GuestMap` can hold several regions.
fn vm_map(
    mem: &Mem,
    file: &File,
    size: u64,
    regions: &[MemRegion],
) -> Result<GuestMap, EstablishError> {
    let snapshot = mem.memory().into_inner();
    if snapshot.num_regions() == 1 {
        if let Some(r) = snapshot.iter().next() {
            let (base, len, gpa) = (r.as_ptr(), r.len(), r.start_addr().0);
            // SAFETY: `base..base+len` is the backend's shared, read-write
            // mapping of this region (vm-memory's MmapRegion, MAP_SHARED
            // with PROT_READ|PROT_WRITE as vhost-user-backend maps the memory
            // table); it stays mapped while the `Arc<GuestMemoryMmap>` we
            // hand over as owner lives, whatever memory table the backend
            // installs next. We never make Rust references into it.
            let region = unsafe { Region::from_raw_parts(base, len, snapshot.clone()) };
            let whole = MemRegion {
                gpa,
                size: len,
                offset: 0,
            };
            return Ok(GuestMap::new(region, &[whole]));
        }
    }
    let region = Region::map(file, size).map_err(|err| EstablishError::Map { whose: "VM", err })?;
    Ok(GuestMap::new(region, regions))
}

/// Wait for the VM's rings, meet the peer, and install the link.
pub(super) fn establish<T: Transport + 'static>(
    backend: &Arc<RwLock<NetBackend<T>>>,
    register: &dyn Fn(i32),
    args: &VhostArgs,
) -> Result<(), EstablishError> {
    // 1. The VM's driver is up: memory known, both rings ready. Their
    // positions are what the backend library holds (SET_VRING_BASE for
    // next_avail, the used index in guest memory for next_used).
    let (mem, file, size, regions, tx, rx, rx_state, mode) = loop {
        {
            let b = backend.read().map_err(|_| EstablishError::Poisoned)?;
            if let Some(mem) = &b.mem {
                if b.vrings.len() == 2 && b.vrings.iter().all(ready) && b.ended.is_none() {
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
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let features = mode.features();
    let local = Handshake::new(std::process::id(), features, size, file.as_raw_fd(), tx, rx)
        .with_regions(&regions);
    local
        .validate()
        .map_err(EstablishError::RingsOutsideMemory)?;
    if !args.quiet {
        eprintln!(
            "VM rings ready ({} regions, {} MiB); waiting for peer on {} ...",
            regions.len(),
            size >> 20,
            args.sharenet
        );
    }
    // 2. Meet the peer (no lock held: the VM keeps running meanwhile).
    let opts = ConnectOptions {
        nonblocking_writes: args.writes == Writes::Nonblocking,
        timeout: Some(Duration::from_secs_f64(args.timeout)),
    };
    let (t, peer) = T::connect(&args.sharenet.path, &local, file.as_fd(), &opts)
        .map_err(EstablishError::Connect)?;
    let peer_pid = peer.handshake.pid;
    let peer_mode = NotifyMode::from_features(peer.handshake.features);
    // The VM reads the suppression fields of its negotiated mode: a peer
    // that maintains less would miss kicks.
    if peer_mode < mode {
        return Err(EstablishError::NotifyMode {
            pid: peer_pid,
            peer: peer_mode.name(),
            vm: mode.name(),
        });
    }
    let peer_map = GuestMap::new(
        crate::memory::map_peer(peer.memory, peer.handshake.mem_size)
            .map_err(|err| EstablishError::Map { whose: "peer", err })?,
        peer.handshake.regions(),
    );
    let vm = vm_map(&mem, &file, size, &regions)?;
    let fd = t.as_fd().as_raw_fd();
    let copier = Copier::new(t, &peer_map, &peer.handshake.tx, &vm, &rx, mode)
        .map_err(|err| EstablishError::Ring {
            whose: "peer TX or VM RX",
            err,
        })?
        .with_rx_state(rx_state.0, rx_state.1)
        .with_guest_interrupts();
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
    if !args.quiet {
        eprintln!(
            "connected to peer pid {peer_pid} over {}: peer memory {} MiB; notify {}; VM RX ring at {}/{}",
            args.sharenet.kind.name(),
            peer.handshake.mem_size >> 20,
            mode.name(),
            rx_state.0,
            rx_state.1
        );
    }
    {
        let mut b = backend.write().map_err(|_| EstablishError::Poisoned)?;
        // Where the peer's copier will start on the VM's TX ring: what it
        // has marked used so far (0 on a fresh ring).
        let tx_used_seen = vm
            .region()
            .load_u16("vm tx used idx", tx_used_idx, Ordering::Acquire)
            .unwrap_or(0);
        b.link = Some(Link {
            _vm_file: file,
            copier,
            vm,
            vm_tx,
            vm_tx_info: tx,
            vm_rx_info: rx,
            tx_used_idx,
            tx_used_seen,
            tx_bytes: 0,
            segs: Vec::with_capacity(8),
            stats: Stats {
                transport: args.sharenet.kind.name().into(),
                workload: "vhost-user".into(),
                notify: args.notify.name().into(),
                notify_effective: mode.name().into(),
                writes: args.writes.name().into(),
                wait: "sleep".into(),
                size: 0, // a VM's frames have no fixed size
                peer_pid,
                ..Stats::default()
            },
            started: Instant::now(),
        });
        register(fd);
        // Packets may already be waiting on either side.
        b.service().map_err(EstablishError::Signal)?;
        if let Some(link) = b.link.as_ref() {
            let _ = link.copier.link().notify();
        }
    }
    Ok(())
}
