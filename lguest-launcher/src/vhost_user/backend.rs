//! The vhost-user-net device for one VM, as rust-vmm's backend trait sees
//! it: features, memory table, vring events, and the ring state QEMU asks
//! back when it stops the device.

use super::exchange::{Exchange, PumpError};
use super::features;
use super::link::{exit_with, Carry, Link, LinkError, VmDevice};
use super::{Carrier, Offloads, VhostArgs};
use crate::cli::config::Wait;
use crate::run::notify;
use crate::stats::Stats;
use crate::virtq::NotifyMode;
use crate::wait::WaitLoop;
use std::os::fd::{AsRawFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use transport::{RingInfo, Transport};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{ShutdownHandle, VhostUserBackendMut, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

mod device;

pub(super) const RX: usize = 0;
pub(super) const TX: usize = 1;
const QUEUE_MAX: usize = 1024;
const VIRTIO_F_VERSION_1: u64 = 1 << 32;
const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;
/// After the peer leaves, how long we keep answering our VM's QEMU before
/// exiting: long enough for a VM that is itself shutting down (the usual
/// end of a run: both guests finish) to stop its rings through us, so QEMU
/// gets its ring state back instead of "ring restore failed"; short enough
/// that a VM left running learns within seconds that its link is down.
pub(super) const LINGER: Duration = Duration::from_secs(5);

pub(super) type Mem = GuestMemoryAtomic<GuestMemoryMmap>;

/// The link is down and the VM lives on: the counters so far, and since
/// when (the next link's down time).
pub(super) struct Ended {
    pub(super) carry: Carry,
    pub(super) at: Instant,
}

/// Register an fd (the link's transport) in the current connection's
/// event loop.
pub(super) type Watch = Box<dyn Fn(RawFd) -> std::io::Result<()> + Send + Sync>;

/// QEMU's current vhost-user connection, as the backend reaches it.
pub(super) struct Conn {
    /// Closes it (`--carrier follow`: the VM sees NO-CARRIER).
    close: Option<ShutdownHandle>,
    /// Watches an fd in its event loop.
    watch: Watch,
}

/// The VM's rings while QEMU is away (`--carrier follow`): what the next
/// handshake describes. QEMU keeps the same rings and, having lost its
/// backend, restarts each at its used index when it reconnects.
#[derive(Clone, Copy)]
pub(super) struct Parked {
    pub(super) tx: RingInfo,
    pub(super) rx: RingInfo,
    /// The VM's RX ring position QEMU will restart it at: (used, used).
    pub(super) rx_state: (u16, u16),
}

/// The vhost-user-net backend for one VM.
pub(super) struct NetBackend<T: Transport> {
    pub(super) args: VhostArgs,
    pub(super) mem: Option<Mem>,
    pub(super) event_idx: bool,
    /// The features QEMU acked for the VM (`SET_FEATURES`, again on every
    /// device start: a reboot renegotiates): what our copier delivers into
    /// and what the handshake tells the peer (see `features.rs`).
    pub(super) acked: u64,
    pub(super) vrings: Vec<VringRwLock>,
    pub(super) link: Option<Link<T>>,
    /// QEMU stopped a ring (`GET_VRING_BASE`): the VM is shutting down or
    /// pausing. The link pauses until both rings are ready again.
    pub(super) stopped: bool,
    /// Set while the link is down and the VM lives on (we wait for the
    /// next peer, or linger without `--reconnect`).
    pub(super) ended: Option<Ended>,
    /// The generation of the last link (0 before the first; see
    /// `establish`).
    pub(super) generation: u32,
    /// QEMU's connection (`None` while QEMU is away).
    pub(super) conn: Option<Conn>,
    /// `--share exchange`: the area the peer maps; it outlives links.
    pub(super) exchange: Option<Exchange>,
    /// QEMU's pid (SO_PEERCRED): while it is away, a QEMU that exits is a
    /// VM that shut down.
    pub(super) qemu_pid: Option<u32>,
    /// Set while we keep QEMU away to show the VM NO-CARRIER (`--carrier
    /// follow`, the peer left): the rings the next handshake describes.
    pub(super) away: Option<Parked>,
    /// The vrings of connections that ended. An event that carries them
    /// comes from that connection's worker thread: it is ignored and ends
    /// the worker. (Kept, with their eventfds dropped, so that no new
    /// vring can be allocated at a retired one's address.)
    retired: Vec<VringRwLock>,
}

pub(super) fn ready(v: &VringRwLock) -> bool {
    v.get_ref().get_queue().ready()
}

pub(super) fn ring_info(v: &VringRwLock) -> RingInfo {
    let g = v.get_ref();
    let q = g.get_queue();
    RingInfo {
        desc: q.desc_table(),
        avail: q.avail_ring(),
        used: q.used_ring(),
        size: q.size() as u32,
    }
}

impl<T: Transport> NetBackend<T> {
    pub(super) fn new(args: VhostArgs) -> Self {
        NetBackend {
            args,
            mem: None,
            event_idx: false,
            acked: 0,
            vrings: Vec::new(),
            link: None,
            stopped: false,
            ended: None,
            generation: 0,
            conn: None,
            exchange: None,
            qemu_pid: None,
            away: None,
            retired: Vec::new(),
        }
    }

    /// QEMU connected (first time, or back after `--carrier follow` kept it
    /// away). A link made while QEMU was away starts moving packets once
    /// its rings are ready again and are the ones the peer was told about
    /// (`running`, as after a pause).
    pub(super) fn connected(
        &mut self,
        close: Option<ShutdownHandle>,
        watch: Watch,
        pid: Option<u32>,
    ) {
        self.conn = Some(Conn { close, watch });
        self.qemu_pid = pid;
        self.away = None;
        self.watch_link();
    }

    /// QEMU's connection ended. `true` if we closed it to show the VM
    /// NO-CARRIER: the VM lives on and QEMU will be taken back.
    pub(super) fn disconnected(&mut self) -> bool {
        self.conn = None;
        for v in self.vrings.drain(..) {
            v.set_kick(None);
            v.set_call(None);
            self.retired.push(v);
        }
        self.away.is_some()
    }

    /// Watch the link's transport in QEMU's connection's event loop (none
    /// while QEMU is away: `connected` does it when QEMU is back).
    pub(super) fn watch_link(&mut self) {
        let (Some(conn), Some(link)) = (self.conn.as_ref(), self.link.as_ref()) else {
            return;
        };
        let fd = link.copier.link().as_fd().as_raw_fd();
        if let Err(e) = (conn.watch)(fd) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                eprintln!("error: cannot watch the transport: {e}");
                std::process::exit(1);
            }
        }
    }

    /// `--carrier follow`: the peer left, so the VM's link goes down.
    /// QEMU 7.2 offers a vhost-user net backend one lever for that: close
    /// its connection. QEMU then sets the NIC's link down (the VM gets a
    /// config interrupt and shows NO-CARRIER), stops the rings without us
    /// (its GET_VRING_BASE fails: "ring restore failed" in its log) and
    /// restarts them later at their used indexes; while it is away its own
    /// virtio-net drops what the VM transmits (a NIC without carrier).
    /// `parked` is what the next handshake describes.
    fn carrier_down(&mut self, parked: Parked) {
        let Some(close) = self.conn.as_ref().and_then(|c| c.close.clone()) else {
            return;
        };
        self.away = Some(parked);
        // QEMU will restart the rings as after a stop: the next link
        // checks them (`running`) before it moves a packet.
        self.stopped = true;
        if !self.args.quiet {
            eprintln!(
                "VM carrier down: closed QEMU's vhost-user connection until the next peer links (--carrier follow)"
            );
        }
        close.shutdown();
    }

    pub(super) fn mode(&self) -> NotifyMode {
        if self.event_idx {
            NotifyMode::EventIdx
        } else {
            NotifyMode::Flags
        }
    }

    /// May the link move packets now? Not while QEMU has a ring stopped.
    /// When both rings are ready again after a stop (a paused VM resumed)
    /// they must be the rings the peer was told about, at the positions
    /// we reported; a driver that reset the device set up new ones, which
    /// the peer cannot follow: the link goes down.
    fn running(&mut self) -> bool {
        if self.vrings.len() != 2 || !self.vrings.iter().all(ready) {
            return false;
        }
        if !self.stopped {
            return true;
        }
        let Some(link) = self.link.as_ref() else {
            return false;
        };
        // QEMU restarts a paused device at the positions we reported; a
        // reset driver starts its (new, or re-used) rings at 0.
        let at = |i: usize| self.vrings[i].get_ref().get_queue().next_avail();
        if link.same_rings(&self.vrings)
            && at(RX) == link.queue_state(RX).0
            && at(TX) == link.queue_state(TX).0
        {
            self.stopped = false;
            return true;
        }
        // With --reconnect this is a re-attach, not a failure: the next
        // link describes the new rings to the peer.
        self.link_down(
            "the VM set up its rings anew (a reboot or a driver reset of the NIC); the peer must be told"
                .into(),
            !self.args.reconnect,
        );
        false
    }

    /// Move what can be moved, interrupt the VM as its rings ask, and
    /// re-arm notifications with the re-check that closes the sleep race —
    /// the one wait loop, sleeping in the backend's event loop.
    pub(super) fn service(&mut self) -> std::io::Result<()> {
        if self.link.is_none() || !self.running() {
            return Ok(());
        }
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        let exchange = if link.exchange {
            self.exchange.as_mut()
        } else {
            None
        };
        let mut vm = VmDevice {
            link,
            vrings: &self.vrings,
            exchange,
        };
        match WaitLoop::new(Wait::Sleep).run(&mut vm) {
            Ok(_) => Ok(()),
            Err(LinkError::Signal(e)) => Err(e),
            Err(e) => {
                self.link_failed(e);
                Ok(())
            }
        }
    }

    /// The transport or the peer's ring ended the link.
    pub(super) fn link_failed(&mut self, e: LinkError) {
        let pid = self
            .link
            .as_ref()
            .map(|l| l.copier.link().peer_pid())
            .unwrap_or(0);
        // The rings the VM keeps while QEMU is away: the link's, unless
        // QEMU has replaced them (a driver reset). A link that exists while
        // QEMU has its rings stopped is one made while QEMU was away (a
        // stop ends the link otherwise): QEMU may be back, replaying its
        // setup (no rings yet), and goes away again.
        let parked = self.link.as_ref().and_then(|l| {
            let follow = self.args.reconnect && self.args.carrier == Carrier::Follow;
            let live =
                self.away.is_none() && (self.vrings.is_empty() || l.same_rings(&self.vrings));
            (follow && live).then(|| {
                let used = l.queue_state(RX).1;
                Parked {
                    tx: l.vm_tx_info,
                    rx: l.vm_rx_info,
                    rx_state: (used, used),
                }
            })
        });
        // A peer that wrote an impossible used entry into the exchange ring
        // may have left our driver side of it inconsistent: the next peer
        // gets a fresh area (what was in this one is lost with the link).
        if matches!(e, LinkError::Pump(PumpError::Exchange(_))) {
            match Exchange::create() {
                Ok(x) => self.exchange = Some(x),
                Err(err) => eprintln!("warning: cannot renew the exchange area: {err}"),
            }
        }
        match e {
            LinkError::Transport(e) if e.is_peer_gone() => self.link_down(e.to_string(), false),
            e => self.link_down(format!("peer {pid}: {e}"), true),
        }
        if let Some(p) = parked {
            self.carrier_down(p);
        }
    }

    /// The link is down but our VM lives on: say so, and leave the VM's
    /// rings where a next link resumes them. With `--reconnect` the link
    /// thread waits for the next peer; without, we linger ([`LINGER`]) so a
    /// VM that is shutting down too can stop its rings through us, and
    /// exit 1.
    pub(super) fn link_down(&mut self, why: String, error: bool) {
        let Some(mut link) = self.link.take() else {
            return;
        };
        // Rings that run on (the peer left; the memory table changed): the
        // next link starts where this one stopped, so the library's queues
        // — what `establish` reads and `GET_VRING_BASE` answers — take our
        // position. Not after QEMU stopped them (`stop_vring` wrote it
        // then) or replaced them (QEMU's `SET_VRING_BASE` is the truth).
        if !self.stopped && link.same_rings(&self.vrings) {
            for i in [RX, TX] {
                let (avail, used) = link.queue_state(i);
                self.vrings[i].set_queue_next_avail(avail);
                self.vrings[i].set_queue_next_used(used);
            }
        }
        let carry = link.carry();
        // The transport fd closes with the link: epoll forgets it, and the
        // peer sees us gone.
        drop(link);
        let generation = self.generation;
        let line = if self.args.reconnect {
            format!(
                "link down (generation {generation}): {why}; waiting for the next peer on {}",
                self.args.sharenet
            )
        } else {
            format!("{why}; link down")
        };
        if error {
            eprintln!("error: {line}");
        } else {
            eprintln!("{line}");
        }
        if !self.args.reconnect {
            let (args, s) = (self.args.clone(), carry.stats.clone());
            let s = Carry { stats: s, ..carry }.finish(format!("{why}; link down"));
            std::thread::spawn(move || {
                std::thread::sleep(LINGER);
                exit_with(&args, &s, "", 1);
            });
        }
        self.ended = Some(Ended {
            carry,
            at: Instant::now(),
        });
    }

    /// Stats as they stand, for a launcher that must exit now.
    pub(super) fn stats_so_far(&mut self, result: String) -> Stats {
        let mut s = match (self.link.as_mut(), self.ended.take()) {
            (Some(link), _) => link.final_stats(String::new()),
            (None, Some(e)) => e.carry.finish(String::new()),
            (None, None) => Stats {
                transport: self.args.sharenet.kind.name().into(),
                workload: "vhost-user".into(),
                share: self.args.share.name().into(),
                notify: self.args.notify.name().into(),
                writes: self.args.writes.name().into(),
                wait: "sleep".into(),
                ..Stats::default()
            },
        };
        s.result = result;
        s
    }

    /// QEMU closed the vhost-user socket: write the stats and say how the
    /// run ended. A VM that shut down (QEMU stopped the rings first, as it
    /// does on poweroff and on SIGTERM) is success; a QEMU that vanished
    /// with the rings running (killed) is not, nor is a link that was
    /// already down.
    pub(super) fn vm_gone(&mut self) -> ExitCode {
        let args = self.args.clone();
        // The peer may have left just before (a killed pair): say so rather
        // than report a clean end we did not have.
        if let Some(e) = self.link.as_ref().and_then(|l| l.peer_gone()) {
            self.link_failed(LinkError::Transport(e));
        }
        if let Some(e) = self.ended.take() {
            let generation = self.generation;
            // With --reconnect a link that is down is a normal state (the
            // peer's VM shut down first): a VM that shut down is success.
            let (line, code) = match (self.args.reconnect, self.stopped) {
                (true, true) => (
                    format!("the VM shut down (its link was down after generation {generation})"),
                    0,
                ),
                (true, false) => (
                    "QEMU closed the vhost-user socket with the rings running (the VM was killed?); its link was down".to_string(),
                    1,
                ),
                (false, _) => ("the VM shut down (its link was already down)".to_string(), 1),
            };
            let s = e.carry.finish(line.clone());
            let line = if code == 0 {
                line
            } else {
                format!("error: {line}")
            };
            exit_with(&args, &s, &line, code);
        }
        let (result, code) = if self.link.is_none() {
            ("the VM shut down before the link came up", 0)
        } else if self.stopped {
            ("the VM shut down", 0)
        } else {
            (
                "QEMU closed the vhost-user socket with the rings running (the VM was killed?)",
                1,
            )
        };
        let s = self.stats_so_far(result.into());
        let line = if code == 0 {
            result.to_string()
        } else {
            format!("error: {result}")
        };
        exit_with(&args, &s, &line, code);
    }
}
