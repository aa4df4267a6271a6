//! The link to the peer launcher for a VM: meet it once the VM's rings are
//! ready, then move packets through the one wait loop.

use super::backend::{ready, ring_info, Mem, NetBackend, RX, TX};
use super::VhostArgs;
use crate::cli::config::Writes;
use crate::copier::{Copier, CopyError};
use crate::memory::{GuestMap, Region};
use crate::run::account;
use crate::stats::Stats;
use crate::virtq::NotifyMode;
use crate::wait::{Device, Slept, Turn};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use transport::{ConnectOptions, Handshake, MemRegion, Transport};
use vhost_user_backend::{VringRwLock, VringT};
use vm_memory::{GuestAddressSpace, GuestMemoryBackend, GuestMemoryRegion};

/// How often the link is checked outside the event loop.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// The link, once the peer launcher is met.
pub(super) struct Link<T: Transport> {
    /// The VM's memfd, kept open for the link's life: the FIFO transport's
    /// peer opens it through /proc/OUR_PID/fd/N after the handshake.
    _vm_file: File,
    pub(super) copier: Copier<T>,
    vm: Region,
    tx_used_idx: u64,
    tx_used_seen: u16,
    pub(super) stats: Stats,
    started: Instant,
}

/// Why servicing the link stopped.
#[derive(Debug, thiserror::Error)]
pub(super) enum LinkError {
    /// The copier stopped the link (the peer's ring).
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// The transport failed (peer gone).
    #[error(transparent)]
    Transport(#[from] transport::Error),
    /// Signalling the VM failed.
    #[error("cannot signal the VM: {0}")]
    Signal(#[from] std::io::Error),
}

/// A VM's link as the wait loop drives it: it sleeps in the backend's
/// event loop ([`Slept::Yield`]).
pub(super) struct VmDevice<'a, T: Transport> {
    pub(super) link: &'a mut Link<T>,
    pub(super) vrings: &'a [VringRwLock],
}

impl<T: Transport> Device for VmDevice<'_, T> {
    type Error = LinkError;

    fn turn(&mut self) -> Result<Turn, LinkError> {
        let link = &mut *self.link;
        let out = link.copier.poll()?;
        account(&link.copier, &out, &mut link.stats)?;
        if out.guest_wants_irq {
            self.vrings[RX].signal_used_queue()?;
        }
        // The peer's copier consumed VM TX buffers: the VM's TX completion
        // interrupt is ours to raise.
        let used = link
            .vm
            .load_u16("vm tx used idx", link.tx_used_idx, Ordering::Acquire)
            .unwrap_or(link.tx_used_seen);
        if used != link.tx_used_seen {
            link.stats.packets_sent += used.wrapping_sub(link.tx_used_seen) as u64;
            link.tx_used_seen = used;
            self.vrings[TX].signal_used_queue()?;
        }
        Ok(if out.finished() > 0 {
            Turn::Busy
        } else {
            Turn::Idle
        })
    }

    fn arm(&mut self, on: bool) -> Result<(), LinkError> {
        self.link.copier.set_notifications(on)?;
        self.link.copier.set_rx_notifications(on)?;
        Ok(())
    }

    fn has_work(&mut self) -> Result<bool, LinkError> {
        Ok(self.link.copier.has_work()?)
    }

    fn tick(&mut self, _now: Instant) -> Result<(), LinkError> {
        Ok(()) // `watch` looks at the link every WATCH_EVERY
    }

    fn sleep(&mut self, _max: Duration) -> Result<Slept, LinkError> {
        Ok(Slept::Yield) // the backend's epoll thread sleeps for us
    }
}

/// Leave: write stats, print one line, exit 1 (the peer sees link down).
pub(super) fn leave<T: Transport>(link: &mut Link<T>, args: &VhostArgs, why: &str) -> ! {
    // What crossed into the VM is what its copier delivered.
    link.stats.packets_received = link.stats.packets_copied;
    link.stats.bytes_received = link.stats.bytes_copied;
    link.stats.finish(link.started.elapsed().as_secs_f64());
    link.stats.result = why.to_string();
    if let Some(p) = &args.stats_json {
        let _ = link.stats.write_json(p);
    }
    eprintln!("error: {why}; link down");
    std::process::exit(1);
}

/// The VM's memory as one memfd plus its regions: QEMU's
/// `memory-backend-memfd` gives every RAM region as the same file at
/// different offsets.
fn vm_memory(mem: &Mem) -> Result<(File, u64, Vec<MemRegion>), String> {
    let guard = mem.memory();
    let mut file: Option<File> = None;
    let mut ino = None;
    let mut regions = Vec::new();
    for r in guard.iter() {
        let fo = r.file_offset().ok_or(
            "a VM memory region has no file: start QEMU with -object memory-backend-memfd,share=on",
        )?;
        let meta = fo.file().metadata().map_err(|e| e.to_string())?;
        let id = (meta.dev(), meta.ino());
        match ino {
            None => {
                ino = Some(id);
                file = Some(fo.file().try_clone().map_err(|e| e.to_string())?);
            }
            Some(i) if i != id => {
                return Err(
                    "VM memory spans several files; use one memory-backend-memfd for all RAM"
                        .into(),
                )
            }
            _ => {}
        }
        regions.push(MemRegion {
            gpa: r.start_addr().0,
            size: r.len(),
            offset: fo.start(),
        });
    }
    let file = file.ok_or("QEMU sent no memory regions")?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    Ok((file, size, regions))
}

/// Wait for the VM's rings, meet the peer, and install the link.
pub(super) fn establish<T: Transport + 'static>(
    backend: &Arc<RwLock<NetBackend<T>>>,
    register: &dyn Fn(i32),
    args: &VhostArgs,
) -> Result<(), String> {
    // 1. The VM's driver is up: memory known, both rings ready.
    let (file, size, regions, tx, rx, mode) = loop {
        {
            let b = backend.read().map_err(|_| "backend lock poisoned")?;
            if let Some(mem) = &b.mem {
                if b.vrings.len() == 2 && b.vrings.iter().all(ready) {
                    let (file, size, regions) = vm_memory(mem)?;
                    break (
                        file,
                        size,
                        regions,
                        ring_info(&b.vrings[TX]),
                        ring_info(&b.vrings[RX]),
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
        .map_err(|e| format!("the VM's rings do not fit its memory: {e}"))?;
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
    let (t, peer) =
        T::connect(&args.sharenet.path, &local, file.as_fd(), &opts).map_err(|e| e.to_string())?;
    let peer_pid = peer.handshake.pid;
    let peer_mode = NotifyMode::from_features(peer.handshake.features);
    // The VM reads the suppression fields of its negotiated mode: a peer
    // that maintains less would miss kicks.
    if peer_mode < mode {
        return Err(format!(
            "peer {peer_pid} maintains notify mode {} but this VM negotiated {}; start both launchers with the same --notify", peer_mode.name(), mode.name()
        ));
    }
    let peer_map = GuestMap::new(
        crate::memory::map_peer(peer.memory, peer.handshake.mem_size).map_err(|e| e.to_string())?,
        peer.handshake.regions(),
    );
    let vm_region = Region::map(&file, size).map_err(|e| e.to_string())?;
    let vm_map = GuestMap::new(vm_region.clone(), &regions);
    let fd = t.as_fd().as_raw_fd();
    let copier = Copier::new(t, &peer_map, &peer.handshake.tx, &vm_map, &rx, mode)
        .map_err(|e| format!("peer {peer_pid}: {e}"))?
        .with_guest_interrupts();
    let tx_used_idx = vm_map
        .translate(tx.used + 2, 2)
        .ok_or("the VM's TX used ring is outside its memory")?;
    if !args.quiet {
        eprintln!(
            "connected to peer pid {peer_pid} over {}: peer memory {} MiB; notify {}",
            args.sharenet.kind.name(),
            peer.handshake.mem_size >> 20,
            mode.name()
        );
    }
    {
        let mut b = backend.write().map_err(|_| "backend lock poisoned")?;
        let tx_used_seen = vm_region
            .load_u16("vm tx used idx", tx_used_idx, Ordering::Acquire)
            .unwrap_or(0);
        b.link = Some(Link {
            _vm_file: file,
            copier,
            vm: vm_region,
            tx_used_idx,
            tx_used_seen,
            stats: Stats {
                transport: args.sharenet.kind.name().into(),
                workload: "vhost-user".into(),
                notify: args.notify.name().into(),
                writes: args.writes.name().into(),
                wait: "sleep".into(),
                peer_pid,
                ..Stats::default()
            },
            started: Instant::now(),
        });
        register(fd);
        // Packets may already be waiting on either side.
        b.service().map_err(|e| e.to_string())?;
        if let Some(link) = b.link.as_ref() {
            let _ = link.copier.link().notify();
        }
    }
    Ok(())
}

/// Look at the link every [`WATCH_EVERY`]: some transports only show a dead
/// peer on an fd the event loop does not watch (eventfd's socket), and a
/// periodic service is a backstop against any lost wake-up.
pub(super) fn watch<T: Transport + 'static>(backend: &Arc<RwLock<NetBackend<T>>>) {
    loop {
        std::thread::sleep(WATCH_EVERY);
        let mut b = backend.write().unwrap_or_else(|p| p.into_inner());
        let args = b.args.clone();
        let Some(link) = b.link.as_mut() else {
            return;
        };
        if let Err(e) = link.copier.link().wait(Some(Duration::ZERO)) {
            leave(link, &args, &e.to_string());
        }
        if let Err(e) = b.service() {
            eprintln!("error: cannot signal the VM: {e}");
            std::process::exit(1);
        }
    }
}
