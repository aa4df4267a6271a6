//! The forwarding thread: its state, members joining and leaving, and the
//! wait loop around the forwarding turns ([`super::forward`]).
//!
//! The switch is a [`crate::wait::Device`] ([`super::turn`]) of the
//! launcher's one [`WaitLoop`]: a turn reaps every port's TX ring, forwards what every member (and the TAP)
//! sent, publishing both rings of every port (and kicking the members
//! that asked) after each source's burst and once more at its end. When a
//! turn moved nothing the loop spins (`--wait spin`,
//! `adaptive` within its budget) or re-arms every member's notifications,
//! fences, re-checks and sleeps (`sleep`, `adaptive` after its budget) in
//! one epoll set over every link, the TAP and the acceptors' wake-up
//! socket (`sleep.rs`).
//!
//! Housekeeping that costs a system call is kept off the per-turn path:
//! joins, signals, the deadline and the stats file are looked at in
//! [`crate::wait::Device::tick`] (every millisecond while busy) and after
//! each sleep; a link is asked whether its member is still there only
//! when the epoll set said its fd is readable, and every 20 ms while busy.

use super::accept::{Acceptor, Event, Joined};
use super::port::Port;
use super::stats::SwitchStats;
use super::table::{Departed, Table};
use super::{SwitchConfig, SwitchError};
use crate::cli::config::{Kind, Wait};
use crate::guest::plan::Layout;
use crate::virtq::Seg;
use crate::wait::WaitLoop;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use transport::Transport;

/// The most a measured wake-up counts for when `--wait adaptive`
/// calibrates the switch's spin budget (which starts at one wake-up and
/// may grow to eight; `--spin-us` is taken as given). A wake-up measured
/// on a loaded machine is mostly time spent waiting for a CPU — 90 to
/// 120 µs on two shared vCPUs — and a switch spinning eight of those,
/// 750–940 µs per idle period, takes the CPU its members need to send
/// what it waits for: every bench run whose budget had grown past 100 µs
/// was slow (26 of 140 runs: median 0.56 µs of CPU per frame against
/// 0.46, the switch's own 0.36 against 0.28), the outliers among them at
/// 0.18–0.46 Mpps aggregate, as the committed bench's 5.84x cell was.
/// Capped here, the budget starts at most at this and stays under eight
/// times it ([`super::spin_wakeup`], which push members use too).
pub(super) const MAX_WAKEUP: Duration = Duration::from_micros(8);

/// The forwarding thread's state.
pub(super) struct Switch<'a, T: Transport> {
    pub(super) cfg: &'a SwitchConfig,
    pub(super) layout: Layout,
    pub(super) ports: Vec<Option<Port<T>>>,
    /// Shared with the acceptors: which ports are taken.
    pub(super) busy: Arc<Vec<AtomicBool>>,
    pub(super) table: Table,
    /// Per port (the TAP's last): the table's last answers for it.
    pub(super) caches: Vec<super::table::Burst>,
    /// Where members that left were (unix/eventfd: see the module docs).
    pub(super) departed: Departed,
    pub(super) stats: SwitchStats,
    pub(super) events: mpsc::Receiver<Event<T>>,
    pub(super) wake: std::os::unix::net::UnixDatagram,
    stop: Arc<AtomicBool>,
    _served: Option<transport::Served>,
    pub(super) segs: Vec<Seg>,
    pub(super) targets: Vec<usize>,
    pub(super) started: Instant,
    /// The clock as of the last tick or wake-up: good to a millisecond,
    /// which is all aging and holds need.
    pub(super) now: Instant,
    pub(super) last_check: Instant,
    pub(super) last_write: Instant,
    /// Why the switch stops, once it must.
    pub(super) done: Option<String>,
    /// `--tap NAME`: the port to the host's own stack.
    pub(super) tap: Option<transport::tap::Tap>,
    /// The offloads the TAP device was last set to.
    tap_offloads: Option<u32>,
    pub(super) tap_buf: Vec<u8>,
    pub(super) scratch: Vec<u8>,
    /// The control socket (`status`).
    status: super::status::Status,
    /// Where the switch sleeps ([`super::sleep`]).
    pub(super) sleeper: super::sleep::Sleeper,
    /// Joins so far: the next port's [`Port::serial`] is one more.
    joined: u64,
    /// The ports the last sleep found readable (kept for its capacity).
    pub(super) ready: Vec<usize>,
}

impl<'a, T: Transport + 'static> Switch<'a, T> {
    pub(super) fn start(cfg: &'a SwitchConfig) -> Result<Self, SwitchError> {
        let layout = Layout::plan(cfg.queue_size);
        let mem_size = layout.needed_mib() << 20;
        let busy: Arc<Vec<AtomicBool>> =
            Arc::new((0..cfg.ports).map(|_| AtomicBool::new(false)).collect());
        let (events_tx, events) = mpsc::channel();
        let (wake, wake_tx) = std::os::unix::net::UnixDatagram::pair()?;
        wake.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let tap = match &cfg.tap {
            Some(name) => Some(transport::tap::Tap::open(name)?),
            None => None,
        };
        let served = match cfg.spec.kind {
            Kind::Fifo => None,
            _ => Some(transport::serve_many(&cfg.spec.path)?),
        };
        let acceptor = Acceptor {
            features: cfg.notify.features()
                | transport::F_SWITCH
                | if cfg.push { transport::F_RX_PUSH } else { 0 },
            layout,
            mem_size,
            busy: busy.clone(),
            events: events_tx,
            wake: Arc::new(wake_tx),
            stop: stop.clone(),
        };
        crate::run::spawn_helpers(|| match cfg.spec.kind {
            Kind::Fifo => {
                for k in 0..cfg.ports {
                    let mut p = cfg.spec.path.as_os_str().to_owned();
                    p.push(format!(".{k}"));
                    let a = acceptor.clone();
                    std::thread::spawn(move || a.accept(PathBuf::from(p), Some(k)));
                }
            }
            _ => {
                let a = acceptor.clone();
                let path = cfg.spec.path.clone();
                std::thread::spawn(move || a.accept(path, None));
            }
        });
        if !cfg.quiet {
            let how = match cfg.spec.kind {
                Kind::Fifo => format!(
                    "fifo:{}.0 .. fifo:{}.{}",
                    cfg.spec.path.display(),
                    cfg.spec.path.display(),
                    cfg.ports - 1
                ),
                _ => cfg.spec.to_string(),
            };
            eprintln!("[switch] {} ports; members join on {how}", cfg.ports);
            if let Some(t) = &tap {
                eprintln!(
                    "[switch] port {}: TAP device {} (bring it up: ip link set {} up)",
                    cfg.ports,
                    t.name(),
                    t.name()
                );
            }
        }
        let mut stats = SwitchStats {
            transport: cfg.spec.kind.name().into(),
            ports_max: cfg.ports,
            result: "running".into(),
            wait: cfg.wait.name().into(),
            ..SwitchStats::default()
        };
        if tap.is_some() {
            stats.port(cfg.ports).state = "tap".into();
        }
        let now = Instant::now();
        let mut sw = Switch {
            cfg,
            layout,
            ports: (0..cfg.ports).map(|_| None).collect(),
            busy,
            table: Table::new(cfg.mac_table, cfg.aging),
            caches: vec![Default::default(); cfg.ports + 1],
            departed: Departed::new(cfg.mac_table, cfg.aging),
            stats,
            events,
            wake,
            stop,
            _served: served,
            segs: Vec::with_capacity(8),
            targets: Vec::with_capacity(cfg.ports + 1),
            started: now,
            now,
            last_check: now,
            last_write: now,
            done: None,
            tap,
            tap_offloads: None,
            tap_buf: Vec::new(),
            scratch: Vec::new(),
            status: super::status::serve(cfg),
            sleeper: Default::default(),
            joined: 0,
            ready: Vec::with_capacity(cfg.ports),
        };
        sw.set_tap_offloads();
        Ok(sw)
    }

    /// Forward until SIGINT/SIGTERM/SIGHUP or `--timeout`.
    pub(super) fn serve(mut self) -> Result<SwitchStats, SwitchError> {
        if let Some(cpu) = self.cfg.cpu {
            // This thread forwards; the acceptors and the status server,
            // started before, keep the whole machine.
            crate::run::pin_this_thread(cpu)
                .map_err(|e| SwitchError::Io(std::io::Error::other(e.to_string())))?;
        }
        let mut wait = match (self.cfg.wait, self.cfg.spin) {
            (Wait::Adaptive, Some(spin)) => WaitLoop::calibrated(Wait::Adaptive, spin),
            (Wait::Adaptive, None) => WaitLoop::calibrated(
                Wait::Adaptive,
                super::spin_wakeup(
                    crate::wakeup::probe(self.cfg.spec.kind, self.cfg.cpu).calibration(),
                ),
            ),
            (policy, _) => WaitLoop::new(policy),
        };
        // The loop ends only by a turn that says Done (our errors are
        // handled port by port, never returned).
        let _ = wait.run(&mut self);
        let c = wait.counters();
        self.stats.spin_hits = c.spin_hits;
        self.stats.sleeps = c.sleeps;
        if self.cfg.wait == Wait::Adaptive {
            self.stats.spin_budget_us = Some(wait.spin_budget().get().as_secs_f64() * 1e6);
        }
        self.stop.store(true, Ordering::Relaxed);
        let result = self.done.take().unwrap_or_else(|| "ok".into());
        self.write_stats(&result);
        super::capture::finish(&self.stats);
        Ok(self.stats)
    }

    pub(super) fn write_stats(&mut self, result: &str) {
        self.stats.result = result.into();
        self.stats.elapsed_s = self.started.elapsed().as_secs_f64();
        self.stats.cpu_s = crate::stats::cpu_seconds();
        self.stats.learned = self.table.learned;
        self.stats.aged_out = self.table.aged_out;
        self.stats.table_full = self.table.full;
        self.stats.table_entries = self.table.len();
        self.status.publish(&self.stats);
        if let Some(p) = &self.cfg.stats_json {
            if let Err(e) = self.stats.write_json(p) {
                eprintln!(
                    "warning: [switch] cannot write stats to {}: {e}",
                    p.display()
                );
            }
        }
    }

    /// Signals and the deadline: set `done` when the switch must stop.
    pub(super) fn check_stop(&mut self) {
        if self.done.is_some() {
            return;
        }
        if let Some(sig) = transport::interrupted() {
            self.done = Some(format!("stopped by {}", crate::run::signal_name(sig)));
        } else if self
            .cfg
            .timeout
            .is_some_and(|t| self.now.saturating_duration_since(self.started) >= t)
        {
            self.done = Some("ok".into());
        }
    }

    /// Install members the acceptors handed over.
    pub(super) fn take_events(&mut self) {
        while let Ok(ev) = self.events.try_recv() {
            match ev {
                Event::Refused(why) => {
                    self.stats.refused += 1;
                    eprintln!("[switch] refused a member: {why}");
                }
                Event::Joined(j) => self.join(*j),
            }
        }
    }

    /// The port a member that met us on the shared path gets: the lowest
    /// free one no departed member is remembered on, else the lowest free.
    fn free_port(&self) -> Option<usize> {
        let free = |n: &usize| self.ports[*n].is_none();
        (0..self.ports.len())
            .filter(free)
            .find(|&n| !self.departed.holds(n, self.now))
            .or_else(|| (0..self.ports.len()).find(free))
    }

    fn join(&mut self, j: Joined<T>) {
        let slot = j.slot.or_else(|| self.free_port());
        let Some(n) = slot.filter(|&n| n < self.ports.len() && self.ports[n].is_none()) else {
            self.stats.refused += 1;
            eprintln!(
                "[switch] refused member pid {}: all {} ports are taken",
                j.peer.handshake.pid,
                self.ports.len()
            );
            return;
        };
        let pid = j.peer.handshake.pid;
        match Port::new(
            j.link,
            j.peer,
            j.mem,
            self.layout,
            self.cfg.notify,
            self.cfg.push,
        ) {
            Ok(mut port) => {
                if !self.cfg.quiet {
                    eprintln!(
                        "[switch] port {n}: member pid {pid} joined (notify {}, {})",
                        port.mode.name(),
                        if port.is_push() { "push" } else { "pull" }
                    );
                }
                // A fifo member's path names its port: nothing to move.
                port.settled = j.slot.is_some();
                let push = port.is_push();
                self.joined += 1;
                port.serial = self.joined;
                self.busy[n].store(true, Ordering::Relaxed);
                self.ports[n] = Some(port);
                self.stats.joins += 1;
                super::capture::note(n, format!("member pid {pid} joined port {n}"));
                let s = self.stats.port(n);
                s.joins += 1;
                s.pid = pid;
                s.state = "up".into();
                s.rx_push = push;
                self.set_tap_offloads();
            }
            Err(e) => {
                self.busy[n].store(false, Ordering::Relaxed);
                self.stats.refused += 1;
                eprintln!("[switch] refused member pid {pid}: {e}");
            }
        }
    }

    /// The member that just joined port `from` sent its first frame, from
    /// `mac`: if a member that left port `to` had that address and `to`
    /// is free, move it there (see the module docs). Returns its port.
    pub(super) fn settle(&mut self, from: usize, mac: &crate::guest::frame::Mac) -> usize {
        let back = self.departed.take(mac, self.now);
        if let Some(p) = self.ports[from].as_mut() {
            p.settled = true;
        }
        let Some(to) =
            back.filter(|&to| to != from && self.ports.get(to).is_some_and(|p| p.is_none()))
        else {
            return from;
        };
        self.ports.swap(from, to);
        self.busy[to].store(true, Ordering::Relaxed);
        self.busy[from].store(false, Ordering::Relaxed);
        self.table.forget_port(from);
        self.departed.forget_port(to);
        let pid = self.stats.port(from).pid;
        let push = self.ports[to].as_ref().is_some_and(|p| p.is_push());
        {
            let s = self.stats.port(from);
            s.joins -= 1;
            s.state = "down".into();
        }
        let s = self.stats.port(to);
        s.joins += 1;
        s.pid = pid;
        s.state = "up".into();
        s.rx_push = push;
        if !self.cfg.quiet {
            eprintln!("[switch] port {to}: member pid {pid} came back (moved from port {from})");
        }
        to
    }

    /// Free port `n`: its member left, died or broke its rings. The other
    /// ports are not touched.
    pub(super) fn leave(&mut self, n: usize, why: &str) {
        if Some(n) == self.tap_ix() {
            eprintln!("[switch] tap port {n} closed: {why}");
            self.tap = None;
            self.table.forget_port(n);
            self.stats.port(n).state = "down".into();
            return;
        }
        let Some(port) = self.ports.get_mut(n).and_then(Option::take) else {
            return;
        };
        if !self.cfg.quiet {
            eprintln!("[switch] port {n}: member pid {} left: {why}", port.pid);
        }
        super::capture::note(n, format!("member pid {} left port {n}: {why}", port.pid));
        drop(port);
        if self.cfg.spec.kind != Kind::Fifo {
            let macs = self.table.macs_on(n);
            self.departed.remember(&macs, n, self.now);
        }
        self.table.forget_port(n);
        self.busy[n].store(false, Ordering::Relaxed);
        self.stats.leaves += 1;
        self.stats.port(n).state = "down".into();
        self.set_tap_offloads();
    }

    /// Ask link `n` (without blocking) whether its member is still there;
    /// drains its kicks.
    pub(super) fn check_link(&mut self, n: usize) {
        let gone = match self.ports[n].as_ref() {
            Some(p) => p
                .link
                .wait(Some(Duration::ZERO))
                .err()
                .map(|e| e.to_string()),
            None => None,
        };
        if let Some(why) = gone {
            self.leave(n, &why);
        }
    }

    /// The end of a turn: the capture records to the writer, and
    /// whatever the TAP's frames added published.
    pub(super) fn flush(&mut self) {
        super::capture::turn_done(&mut self.stats);
        self.publish();
    }

    /// The live counters for `status`, if their time has come (called
    /// from [`crate::wait::Device::tick`], which has the clock: not per
    /// turn).
    pub(super) fn status_tick(&mut self, now: Instant) {
        self.status.tick(&self.stats, now);
    }

    /// Publish what was added to both rings of every port (a flag per
    /// ring: nothing is touched on a port that got nothing) and kick the
    /// members that asked. Called after every source's burst
    /// ([`crate::wait::Device::turn`] in `turn.rs`), so a member gets its
    /// TX buffers back, and a destination its frames, while the switch
    /// goes on with the next source; a member asleep is kicked once, when
    /// its event index is passed.
    pub(super) fn publish(&mut self) {
        for n in 0..self.ports.len() {
            let Some(p) = self.ports[n].as_mut() else {
                continue;
            };
            let failed = match p.flush() {
                Ok(true) => match p.link.notify() {
                    Ok(_) => {
                        self.stats.port(n).notifications_sent += 1;
                        None
                    }
                    Err(e) => Some(e.to_string()),
                },
                Ok(false) => None,
                Err(e) => Some(format!("broke a ring: {e}")),
            };
            if let Some(why) = failed {
                self.leave(n, &why);
            }
        }
    }

    /// Tell the TAP device which offloads it may hand us: those every
    /// member accepts on receive (a frame from the host may go to any of
    /// them). With no member, all of them.
    fn set_tap_offloads(&mut self) {
        let Some(tap) = self.tap.as_ref() else {
            return;
        };
        let accepted = self
            .ports
            .iter()
            .flatten()
            .fold(u32::MAX, |acc, p| acc & p.offloads);
        let flags = transport::tap::offloads_from_virtio(accepted);
        if self.tap_offloads == Some(flags) {
            return;
        }
        match tap.set_offloads(flags) {
            Ok(()) => self.tap_offloads = Some(flags),
            Err(e) => eprintln!("warning: [switch] tap: {e}"),
        }
    }
}
