//! The link to the peer launcher for a VM: meet it once the VM's rings are
//! ready, then move packets through the one wait loop; and how the link
//! ends.

use super::backend::{ring_info, NetBackend, RX, TX};
use super::exchange::{Exchange, PumpError};
use super::VhostArgs;
use crate::copier::{Copier, CopyError};
use crate::memory::GuestMap;
use crate::run::{account, notify};
use crate::stats::Stats;
use crate::virtq::{DeviceQueue, Seg};
use crate::wait::{Device, Slept, Turn};
use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use transport::{MemRegion, RingInfo, Transport};
use vhost_user_backend::{VringRwLock, VringT};

/// How often the link is checked outside the event loop.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// The link, once the peer launcher is met.
pub(super) struct Link<T: Transport> {
    /// The memfd the peer was offered (the exchange area's, or the VM's
    /// with `--share guest`), kept open for the link's life: the FIFO
    /// transport's peer opens it through /proc/OUR_PID/fd/N after the
    /// handshake.
    pub(super) _offered: File,
    pub(super) copier: Copier<T>,
    /// The VM's memory as the backend mapped it (see `establish::vm_map`).
    pub(super) vm: GuestMap,
    /// The VM's TX ring. `--share guest`: read (never served: the peer
    /// serves it) to learn the length of each chain the peer consumed.
    /// `--share exchange`: served by us (`Exchange::pump`).
    pub(super) vm_tx: DeviceQueue,
    /// `--share exchange`: the peer maps the exchange area, not the VM.
    pub(super) exchange: bool,
    pub(super) vm_tx_info: RingInfo,
    pub(super) vm_rx_info: RingInfo,
    pub(super) tx_used_idx: u64,
    pub(super) tx_used_seen: u16,
    pub(super) tx_bytes: u64,
    pub(super) segs: Vec<Seg>,
    pub(super) stats: Stats,
    pub(super) started: Instant,
    /// The VM memory the peer was told about (memfd inode, regions): a
    /// `SET_MEM_TABLE` with the same layout (QEMU sends one on every device
    /// start) keeps the link; another one needs a new handshake.
    pub(super) memory: (u64, Vec<MemRegion>),
}

/// What outlives one link generation: the counters so far (not yet
/// finished), the VM's TX bytes, and when the first link came up.
pub(super) struct Carry {
    pub(super) stats: Stats,
    pub(super) tx_bytes: u64,
    pub(super) started: Instant,
}

impl Carry {
    /// The stats as a run that ends now reports them.
    pub(super) fn finish(mut self, result: String) -> Stats {
        let mut s = std::mem::take(&mut self.stats);
        // What crossed into the VM is what our copier delivered.
        s.packets_received = s.packets_copied;
        s.bytes_received = s.bytes_copied;
        let elapsed = self.started.elapsed().as_secs_f64();
        s.finish(elapsed);
        // `finish` counts bytes of the busier direction from `size`, which
        // a VM's frames have none of: use the bytes we saw instead (both
        // include the 12-byte virtio-net header).
        let bytes = if s.packets_received >= s.packets_sent {
            s.bytes_received
        } else {
            self.tx_bytes
        };
        if elapsed > 0.0 {
            s.gbps = bytes as f64 * 8.0 / elapsed / 1e9;
        }
        s.result = result;
        s
    }
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
    /// Moving the VM's TX chains into the exchange area failed.
    #[error(transparent)]
    Pump(#[from] PumpError),
}

/// A VM's link as the wait loop drives it: it sleeps in the backend's
/// event loop ([`Slept::Yield`]).
pub(super) struct VmDevice<'a, T: Transport> {
    pub(super) link: &'a mut Link<T>,
    pub(super) vrings: &'a [VringRwLock],
    /// `--share exchange`: the area the VM's TX chains are copied into.
    pub(super) exchange: Option<&'a mut Exchange>,
}

impl<T: Transport> Link<T> {
    /// Count the VM TX chains the peer's copier marked used since we last
    /// looked (packets and bytes the VM sent). Returns whether any were.
    pub(super) fn reap_vm_tx(&mut self) -> bool {
        if self.exchange {
            return false; // counted as the peer reaps the exchange ring
        }
        let used = self
            .vm
            .region()
            .load_u16("vm tx used idx", self.tx_used_idx, Ordering::Acquire)
            .unwrap_or(self.tx_used_seen);
        let n = used.wrapping_sub(self.tx_used_seen);
        if n == 0 {
            return false;
        }
        // Byte count: each used entry names a head; its chain's length is
        // in the VM's descriptor table. The VM may already be reusing a
        // descriptor, so this is a count, never trusted for anything else.
        let size = self.vm_tx_info.size.max(1) as u16;
        for i in 0..n {
            let slot = self.tx_used_seen.wrapping_add(i) % size;
            let id = self
                .vm
                .translate(self.vm_tx_info.used + 4 + 8 * slot as u64, 4)
                .and_then(|off| self.vm.region().load_u32("vm tx used id", off).ok());
            if let Some(id) = id {
                if let Ok(len) = self.vm_tx.read_chain(id as u16, false, &mut self.segs) {
                    self.tx_bytes += len as u64;
                }
            }
        }
        self.stats.packets_sent += n as u64;
        self.stats.packets_consumed += n as u64;
        self.tx_used_seen = used;
        true
    }

    /// Where the VM's rings are, as the backend must report them on
    /// `GET_VRING_BASE`: RX from our copier; TX from the used index the
    /// peer's copier published (it marks every chain it takes used, in
    /// order, before each batch ends).
    pub(super) fn queue_state(&self, index: usize) -> (u16, u16) {
        if index == RX {
            self.copier.rx_state()
        } else if self.exchange {
            // We serve the VM's TX ring and complete each chain as we copy
            // it: (last_avail, next_used), all published after a pump.
            self.vm_tx.state()
        } else {
            let used = self
                .vm
                .region()
                .load_u16("vm tx used idx", self.tx_used_idx, Ordering::Acquire)
                .unwrap_or(self.tx_used_seen);
            (used, used)
        }
    }

    /// The rings the link was made for: a VM that set up other rings (its
    /// driver reset the device) cannot be followed by the peer.
    pub(super) fn same_rings(&self, vrings: &[VringRwLock]) -> bool {
        vrings.len() == 2
            && ring_info(&vrings[TX]) == self.vm_tx_info
            && ring_info(&vrings[RX]) == self.vm_rx_info
    }

    /// Has the peer left? A non-blocking look at the transport; a pending
    /// kick is consumed first (eventfd reports kicks before the socket), so
    /// look a few times.
    pub(super) fn peer_gone(&self) -> Option<transport::Error> {
        for _ in 0..4 {
            match self.copier.link().wait(Some(Duration::ZERO)) {
                Ok(transport::Wakeup::Notified) => continue,
                Ok(transport::Wakeup::Timeout) => return None,
                Err(e) => return Some(e),
            }
        }
        None
    }

    /// Take a last look at the VM's TX ring and hand over the counters.
    pub(super) fn carry(&mut self) -> Carry {
        self.reap_vm_tx();
        Carry {
            stats: std::mem::take(&mut self.stats),
            tx_bytes: self.tx_bytes,
            started: self.started,
        }
    }

    /// Take a last look at the VM's TX ring and fill in the stats.
    pub(super) fn final_stats(&mut self, result: String) -> Stats {
        self.carry().finish(result)
    }
}

impl<T: Transport> Device for VmDevice<'_, T> {
    type Error = LinkError;

    fn turn(&mut self) -> Result<Turn, LinkError> {
        let link = &mut *self.link;
        let out = link.copier.poll()?;
        account(&mut link.copier, &out, &mut link.stats)?;
        if out.guest_wants_irq {
            self.vrings[RX].signal_used_queue()?;
        }
        let mut busy = out.finished() > 0;
        match self.exchange.as_deref_mut() {
            // Our VM's TX chains go into the exchange area, which the
            // peer's copier pulls from.
            Some(x) => {
                let mode = link.copier.mode();
                let p = x.pump(
                    link.vm.region(),
                    &mut link.vm_tx,
                    mode,
                    &mut link.segs,
                    &mut link.stats,
                    &mut link.tx_bytes,
                )?;
                if p.vm_wants_irq {
                    self.vrings[TX].signal_used_queue()?;
                }
                if p.peer_wants_kick {
                    notify(link.copier.link(), &mut link.stats)?;
                }
                busy |= p.finished > 0 || p.reaped > 0;
            }
            // The peer's copier consumed VM TX buffers: the VM's TX
            // completion interrupt is ours to raise.
            None => {
                if link.reap_vm_tx() {
                    self.vrings[TX].signal_used_queue()?;
                }
            }
        }
        Ok(if busy { Turn::Busy } else { Turn::Idle })
    }

    fn arm(&mut self, on: bool) -> Result<(), LinkError> {
        self.link.copier.set_notifications(on)?;
        self.link.copier.set_rx_notifications(on)?;
        if self.exchange.is_some() {
            // We serve the VM's TX ring: its kicks are ours to ask for.
            let mode = self.link.copier.mode();
            self.link
                .vm_tx
                .set_notifications(mode, on)
                .map_err(PumpError::Vm)?;
        }
        Ok(())
    }

    fn has_work(&mut self) -> Result<bool, LinkError> {
        if self.link.copier.has_work()? {
            return Ok(true);
        }
        match self.exchange.as_deref() {
            Some(x) => Ok(x.has_work(&self.link.vm_tx).map_err(PumpError::Vm)?),
            None => Ok(false),
        }
    }

    fn tick(&mut self, _now: Instant) -> Result<(), LinkError> {
        Ok(()) // `watch` looks at the link every WATCH_EVERY
    }

    fn sleep(&mut self, _max: Duration) -> Result<Slept, LinkError> {
        Ok(Slept::Yield) // the backend's epoll thread sleeps for us
    }
}

/// Only one thread writes the final stats and exits (the main thread when
/// QEMU hangs up, a linger timer, a failing handler).
static EXITING: Mutex<()> = Mutex::new(());

/// Write `stats`, print `line` (if any, as it is: callers say `error: `
/// only for a failure) and exit with `code`. Never returns: a second
/// caller blocks here until the first has exited the process.
pub(super) fn exit_with(args: &VhostArgs, stats: &Stats, line: &str, code: u8) -> ! {
    let _once = EXITING.lock().unwrap_or_else(|p| p.into_inner());
    super::seen::finish(stats);
    if let Some(p) = &args.stats_json {
        if let Err(e) = stats.write_json(p) {
            eprintln!("warning: cannot write stats to {}: {e}", p.display());
        }
    }
    if !line.is_empty() {
        eprintln!("{line}");
    }
    std::process::exit(code as i32)
}

/// Look at the link every [`WATCH_EVERY`]: some transports only show a dead
/// peer on an fd the event loop does not watch (eventfd's socket), and a
/// periodic service is a backstop against any lost wake-up.
pub(super) fn watch<T: Transport + 'static>(backend: &Arc<RwLock<NetBackend<T>>>) {
    loop {
        std::thread::sleep(WATCH_EVERY);
        let mut b = backend.write().unwrap_or_else(|p| p.into_inner());
        super::seen::publish(b.link.as_ref());
        let Some(link) = b.link.as_mut() else {
            return;
        };
        if let Some(e) = link.peer_gone() {
            b.link_failed(LinkError::Transport(e));
            return;
        }
        if let Err(e) = b.service() {
            let stats = b.stats_so_far(format!("cannot signal the VM: {e}"));
            exit_with(&b.args, &stats, &format!("error: {}", stats.result), 1);
        }
    }
}
