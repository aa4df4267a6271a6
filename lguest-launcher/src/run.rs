//! One launcher run: memory, rendezvous, then the wait loop.
//!
//! The synthetic guest and the copier run to completion in one thread, as
//! DPDK's virtio-user polls its own device: each turn ([`Synthetic`]'s
//! [`Device::turn`]) the guest does what it can (reap, receive, send) and
//! the copier pulls what the peer offers. When neither made progress the
//! one wait loop ([`crate::wait`]) idles as `--wait` says.
//!
//! Kicks to the peer (our TX avail moved) and interrupts to the peer (its TX
//! used moved) both cross the transport, each only when the peer's
//! suppression state asks for it. Every packet the copier moved or dropped
//! passes through [`account`], the one `match` on its outcome.

use crate::cli::config::{RunConfig, Wait, Workload, Writes};
use crate::copier::{Copier, CopyError, DropReason, Event, Outcome};
use crate::guest::plan::Layout;
use crate::guest::{Guest, Shortfall, Work};
use crate::link::{dispatch, PairMark, RefusalNote, WithTransport};
use crate::memory::{map_peer, GuestMap, GuestMemory};
use crate::stats::Stats;
use crate::virtq::{ChainError, NotifyMode, RingError};
use crate::wait::{Device, Slept, Turn, WaitLoop};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use transport::{ConnectOptions, Handshake, Notify, Transport, Wakeup};

/// Why a run failed (runtime failures: exit 1).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Setting up memory failed.
    #[error("guest memory: {0}")]
    Memory(#[from] crate::memory::MemoryError),
    /// Rendezvous or notification failed (includes "peer gone").
    #[error("{0}")]
    Transport(#[from] transport::Error),
    /// The copier stopped the link.
    #[error("peer {pid}: {err}; disconnecting")]
    Copy {
        /// The peer's pid.
        pid: u32,
        /// What the copier found.
        err: CopyError,
    },
    /// Our own rings are broken, or the peer wrote impossible used entries.
    #[error("peer {pid} broke our TX ring: {err}")]
    Ring {
        /// The peer's pid.
        pid: u32,
        /// What it wrote.
        err: RingError,
    },
    /// `--cpu N`: the kernel refused to pin the busy thread there.
    #[error("--cpu {cpu}: cannot pin the launcher's thread: {source}")]
    Pin {
        /// The CPU asked for.
        cpu: usize,
        /// What `sched_setaffinity` said.
        source: nix::Error,
    },
    /// `--timeout` passed before the workload finished.
    #[error("timed out after {0:.1} s before the workload finished")]
    Timeout(f64),
    /// Nobody came, and the path is held by a live pair.
    #[error("{err}: {path} is in use by the pair {a}/{b}; pick another path")]
    Busy {
        /// The timeout.
        err: transport::Error,
        /// The rendezvous path.
        path: String,
        /// The pair's pids.
        a: u32,
        /// The pair's pids.
        b: u32,
    },
    /// SIGINT, SIGTERM or SIGHUP: stopped cleanly (exit 128 + signal).
    #[error("interrupted by {}", signal_name(*.0))]
    Interrupted(i32),
    /// A sink learned from the sender's end-of-stream frame that fewer
    /// frames will come than it waits for.
    #[error("received {} of {}; the peer finished after {}", .0.received, .0.expected, .0.peer_sent)]
    Short(Shortfall),
}

/// `SIGINT` for 2, and so on.
pub fn signal_name(sig: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str())
        .unwrap_or("a signal")
}

/// The signals that stop a launcher cleanly.
const STOP_SIGNALS: [nix::sys::signal::Signal; 3] = [
    nix::sys::signal::Signal::SIGINT,
    nix::sys::signal::Signal::SIGTERM,
    nix::sys::signal::Signal::SIGHUP,
];

/// Route SIGINT/SIGTERM/SIGHUP to [`transport::interrupt_flag`]: every
/// wait gives up, the run loop stops at its next tick, stats are written
/// and the process exits with 128 + the signal's number. Threads started
/// inside `spawn_helpers` never take these signals, so they interrupt the
/// main thread's `poll`.
fn install_signal_handlers() {
    let flag = transport::interrupt_flag();
    for sig in STOP_SIGNALS {
        if let Err(e) = signal_hook::flag::register_usize(sig as i32, flag.clone(), sig as usize) {
            eprintln!("warning: cannot handle {sig}: {e}");
        }
    }
}

/// Start helper threads with the stop signals blocked (they inherit the
/// mask), so the signals land on the calling thread.
fn spawn_helpers<R>(start: impl FnOnce() -> R) -> R {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
    let mut set = SigSet::empty();
    for sig in STOP_SIGNALS {
        set.add(sig);
    }
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    let r = start();
    let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
    r
}

/// The exit code after `sig`: 128 + its number, as shells report it.
fn signal_exit(sig: i32) -> ExitCode {
    ExitCode::from(128u8.saturating_add(sig.clamp(0, 127) as u8))
}

/// Stats shared with the watchdog, which writes them if the run hangs.
pub type SharedStats = Arc<Mutex<Stats>>;

/// Run one launcher as `cfg` says (transport chosen by its kind), write
/// its stats, print its summary; the process exit code.
pub fn main(cfg: &RunConfig) -> ExitCode {
    let shared: SharedStats = Arc::new(Mutex::new(Stats::default()));
    install_signal_handlers();
    let bar = spawn_helpers(|| {
        start_watchdog(cfg, shared.clone());
        crate::progress::Progress::start(cfg, shared.clone())
    });
    let result = dispatch(
        cfg.spec.kind,
        Run {
            cfg,
            shared: &shared,
        },
    );
    drop(bar);
    let stats = match &result {
        Ok(s) => s.clone(),
        Err(e) => {
            let mut s = lock(&shared).clone();
            if s.result.is_empty() {
                // Failed before the loop (rendezvous, refused peer).
                s.result = e.to_string();
            }
            s
        }
    };
    write_stats(cfg, &stats);
    let name = &cfg.name;
    match result {
        Ok(s) => {
            if !cfg.quiet {
                eprintln!("[{name}] {}", s.summary());
            }
            ExitCode::SUCCESS
        }
        Err(RunError::Interrupted(sig)) => {
            eprintln!("[{name}] {}", stats.summary());
            eprintln!(
                "[{name}] {}: stopped cleanly, stats written",
                RunError::Interrupted(sig)
            );
            signal_exit(sig)
        }
        Err(e) => {
            eprintln!("error: [{name}] {e}");
            ExitCode::from(1)
        }
    }
}

/// [`run`] with the transport of the configured kind.
struct Run<'a> {
    cfg: &'a RunConfig,
    shared: &'a SharedStats,
}

impl WithTransport for Run<'_> {
    type Output = Result<Stats, RunError>;
    fn with<T: Transport + 'static>(self) -> Self::Output {
        run::<T>(self.cfg, self.shared)
    }
}

fn write_stats(cfg: &RunConfig, stats: &Stats) {
    if let Some(p) = &cfg.stats_json {
        if let Err(e) = stats.write_json(p) {
            eprintln!("warning: cannot write stats to {}: {e}", p.display());
        }
    }
}

/// How long an interrupted stream waits for a TX slot for its
/// end-of-stream frame.
const END_GRACE: Duration = Duration::from_millis(300);

/// How long the run loop has to stop after a signal before the watchdog
/// writes the stats and exits for it (a blocking write to a stopped peer).
const SIGNAL_GRACE: Duration = Duration::from_secs(2);

/// The run loop honours `--timeout` and signals itself; this thread is the
/// backstop for a call that blocks (a blocking notification write to a
/// stopped peer).
fn start_watchdog(cfg: &RunConfig, shared: SharedStats) {
    let cfg = cfg.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + cfg.timeout + Duration::from_secs(2);
        let mut signalled: Option<(i32, Instant)> = None;
        let (why, code) = loop {
            std::thread::sleep(Duration::from_millis(50));
            if let (None, Some(sig)) = (signalled, transport::interrupted()) {
                signalled = Some((sig, Instant::now()));
            }
            if let Some((sig, at)) = signalled {
                if at.elapsed() >= SIGNAL_GRACE {
                    break (
                        format!("interrupted by {} (blocked)", signal_name(sig)),
                        128 + sig,
                    );
                }
            }
            if Instant::now() >= deadline {
                break (
                    format!(
                        "timed out after {:.1} s (blocked)",
                        cfg.timeout.as_secs_f64()
                    ),
                    1,
                );
            }
        };
        let mut s = lock(&shared).clone();
        s.result = why;
        write_stats(&cfg, &s);
        eprintln!("error: [{}] {}", cfg.name, s.result);
        std::process::exit(code);
    });
}

/// Send one notification to the peer and count what happened.
pub fn notify<T: Transport>(t: &T, stats: &mut Stats) -> Result<(), transport::Error> {
    match t.notify()? {
        Notify::Sent => stats.notifications_sent += 1,
        Notify::AlreadyPending => stats.notifications_pending += 1,
    }
    Ok(())
}

/// The one place every packet and every drop of a copier poll passes:
/// counters here, and any per-packet hook (capture, live status) beside
/// them. Then the peer is told its TX buffers are free if it asked.
pub fn account<T: Transport>(
    copier: &Copier<T>,
    out: &Outcome,
    stats: &mut Stats,
) -> Result<(), transport::Error> {
    for ev in copier.events() {
        match *ev {
            Event::Delivered { len, .. } => {
                stats.packets_copied += 1;
                stats.bytes_copied += len as u64;
            }
            Event::Dropped { reason, .. } => {
                stats.peer_errors += 1;
                match reason {
                    DropReason::Malformed(ChainError::BadIndex { .. }) => stats.peer_bad_index += 1,
                    DropReason::Malformed(ChainError::OutOfBounds { .. }) => {
                        stats.peer_out_of_bounds += 1
                    }
                    DropReason::Malformed(ChainError::Loop { .. }) => stats.peer_loop += 1,
                    DropReason::Malformed(ChainError::WrongDirection { .. }) => {
                        stats.peer_wrong_direction += 1
                    }
                    DropReason::Malformed(ChainError::Indirect { .. }) => stats.peer_indirect += 1,
                    DropReason::Malformed(ChainError::BadLength { .. })
                    | DropReason::Oversized { .. } => stats.peer_bad_length += 1,
                }
            }
        }
    }
    if out.rx_full {
        stats.rx_ring_full += 1;
    }
    if out.peer_wants_kick {
        notify(copier.link(), stats)?;
    } else if out.peer_kick_suppressed {
        stats.notifications_suppressed += 1;
    }
    Ok(())
}

/// Run one launcher over transport `T`. Returns the final stats; on error,
/// the stats so far are in `shared`.
pub fn run<T: Transport>(cfg: &RunConfig, shared: &SharedStats) -> Result<Stats, RunError> {
    let start = Instant::now();
    let deadline = start + cfg.timeout;
    let mode: NotifyMode = cfg.notify;
    let mut stats = Stats {
        transport: cfg.spec.kind.name().into(),
        workload: cfg.workload.name().into(),
        notify: cfg.notify.name().into(),
        writes: cfg.writes.name().into(),
        wait: cfg.wait.name().into(),
        payload: cfg.payload.name().into(),
        size: cfg.size,
        ..Stats::default()
    };
    *lock(shared) = stats.clone();
    if let Some(cpu) = cfg.cpu {
        pin_this_thread(cpu)?;
    }

    // What a wake-up costs here, over a channel of this kind: the adaptive
    // spin starts from it (see `wait`), the stats report it. Measured
    // before the rendezvous, so the peer never waits on it: a peer that
    // publishes at once finds us polling.
    let probe = crate::wakeup::probe(cfg.spec.kind, cfg.cpu);

    let layout = Layout::plan(cfg.queue_size);
    let mem = GuestMemory::create(&cfg.name, cfg.memory_mib << 20)?;
    let local = Handshake::new(
        std::process::id(),
        mode.features(),
        mem.region().len(),
        mem.raw_fd(),
        layout.tx,
        layout.rx,
    );
    if !cfg.quiet {
        eprintln!("[{}] waiting for peer on {} ...", cfg.name, cfg.spec);
    }
    let opts = ConnectOptions {
        nonblocking_writes: cfg.writes == Writes::Nonblocking,
        timeout: Some(cfg.timeout),
    };
    let connecting = Arc::new(std::sync::atomic::AtomicBool::new(true));
    if !cfg.quiet {
        spawn_helpers(|| RefusalNote::watch(&cfg.spec.path, &cfg.name, connecting.clone()));
    }
    let connected = T::connect(&cfg.spec.path, &local, mem.fd(), &opts);
    connecting.store(false, std::sync::atomic::Ordering::Relaxed);
    if let Err(transport::Error::RefusedPath { reason, .. }) = &connected {
        if !(reason.contains("FIFO") || reason.contains("socket")) {
            // A symlink or a foreign owner: nobody of ours waits there.
        } else {
            // Someone else's rendezvous of another kind: tell its owner why.
            RefusalNote::leave(&cfg.spec.path, cfg.spec.kind);
        }
    }
    let (t, peer) = connected.map_err(|e| {
        // A signal during rendezvous ends the wait (the transport removed
        // the files it created on the way out).
        match transport::interrupted() {
            Some(sig) => RunError::Interrupted(sig),
            None => match (&e, PairMark::busy(&cfg.spec.path)) {
                (transport::Error::ConnectTimeout { .. }, Some((a, b))) => RunError::Busy {
                    err: e,
                    path: cfg.spec.path.display().to_string(),
                    a,
                    b,
                },
                _ => RunError::Transport(e),
            },
        }
    })?;
    let _mark = PairMark::claim(&cfg.spec.path, std::process::id(), peer.handshake.pid);
    let peer_pid = peer.handshake.pid;
    // Each side maintains the suppression fields of its own mode; the pair
    // uses the lower of the two so neither waits on a field nobody writes.
    let mode = mode.min(NotifyMode::from_features(peer.handshake.features));
    let peer_tx = peer.handshake.tx;
    let peer_mem = GuestMap::new(
        map_peer(peer.memory, peer.handshake.mem_size)?,
        peer.handshake.regions(),
    );
    stats.peer_pid = peer_pid;
    stats.notify_effective = mode.name().into();
    if !cfg.quiet {
        eprintln!(
            "[{}] connected to peer pid {peer_pid} over {}: peer memory {} MiB, queue {}; notify {} (asked {}), writes {}, wait {}",
            cfg.name,
            cfg.spec.kind.name(),
            peer_mem.region().len() >> 20,
            peer_tx.size,
            mode.name(),
            cfg.notify.name(),
            cfg.writes.name(),
            cfg.wait.name()
        );
    }

    let ring_err = |err| RunError::Ring { pid: peer_pid, err };
    let guest = Guest::new(
        mem.region().clone(),
        layout,
        mode,
        Work {
            workload: cfg.workload,
            payload: cfg.payload,
            count: cfg.count,
            size: cfg.size,
            rx_delay: cfg.rx_delay,
        },
    )
    .map_err(ring_err)?;
    let own_map = GuestMap::identity(mem.region().clone());
    let copier =
        Copier::new(t, &peer_mem, &peer_tx, &own_map, &layout.rx, mode).map_err(ring_err)?;
    let mut dev = Synthetic {
        guest,
        copier,
        stats,
        mode,
        peer_pid,
        deadline,
        timeout: cfg.timeout,
        shared,
        started: Instant::now(),
    };
    // Start "awake" (the peer kicks us until we first go idle), except when
    // spinning: then we never want a kick.
    dev.copier
        .set_notifications(cfg.wait != Wait::Spin)
        .map_err(|e| dev.copy_err(e))?;

    dev.stats.set_wakeups(&probe.hist);
    let mut waiter = WaitLoop::calibrated(cfg.wait, probe.median());
    let result = waiter.run(&mut dev).map(|_| ());
    let counters = waiter.counters();
    dev.stats.spin_hits = counters.spin_hits;
    dev.stats.sleeps = counters.sleeps;
    if cfg.wait == Wait::Adaptive {
        dev.stats.spin_budget_us = Some(waiter.spin_budget().get().as_secs_f64() * 1e6);
    }
    // A signal may surface as a transport error (an interrupted poll).
    let result = match (result, transport::interrupted()) {
        (Err(_), Some(sig)) => Err(RunError::Interrupted(sig)),
        (r, _) => r,
    };
    if let Err(RunError::Interrupted(_)) = result {
        // Tell the receiver how many we sent (lost vs never sent), giving
        // the peer a moment to free a TX slot.
        let until = Instant::now() + END_GRACE;
        while dev.guest.end_pending() && Instant::now() < until {
            match dev.guest.announce_end() {
                Ok(Some(_)) => {
                    // Always kick: the peer may be asleep on a full ring.
                    let _ = notify(dev.copier.link(), &mut dev.stats);
                }
                Ok(None) => std::thread::sleep(Duration::from_micros(200)),
                Err(_) => break,
            }
        }
    }
    let Synthetic {
        mut guest,
        mut copier,
        mut stats,
        started,
        ..
    } = dev;
    let result = match result {
        // The peer may leave right after finishing its part (a stream that
        // saw its last packet consumed). Its memory stays mapped, so take a
        // last look before calling this a failure.
        Err(RunError::Transport(e)) if e.is_peer_gone() => {
            // Drain what already arrived (a slow sink may be far behind).
            while !guest.done() {
                let step = guest.step(&mut stats).map(|s| s.progress).unwrap_or(false);
                let moved = match copier.poll() {
                    Ok(out) => {
                        // The peer is gone: count, but notify nobody.
                        let _ = account(
                            &copier,
                            &Outcome {
                                peer_wants_kick: false,
                                ..out
                            },
                            &mut stats,
                        );
                        out.finished() > 0
                    }
                    Err(_) => false,
                };
                if !step && !moved {
                    break;
                }
            }
            if guest.done() {
                Ok(())
            } else {
                Err(RunError::Transport(e))
            }
        }
        r => r,
    };
    let result = match (result, guest.shortfall()) {
        (Ok(()), Some(short)) => Err(RunError::Short(short)),
        (Err(RunError::Transport(e)), Some(short)) if e.is_peer_gone() => {
            Err(RunError::Short(short))
        }
        (r, _) => r,
    };
    guest.report(&mut stats);
    stats.finish(started.elapsed().as_secs_f64());
    if cfg.workload == Workload::Stream && result.is_ok() {
        stats.lost = 0;
    }
    stats.result = match &result {
        Ok(()) => "ok".into(),
        Err(e) => e.to_string(),
    };
    *lock(shared) = stats.clone();
    result.map(|_| stats)
}

/// `--cpu N`: pin the calling thread — the one that runs the guest, the
/// copier and the wait loop — to `cpu`. Only this thread: the watchdog and
/// progress threads, started before, keep the whole machine.
pub fn pin_this_thread(cpu: usize) -> Result<(), RunError> {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    set.set(cpu)
        .and_then(|()| sched_setaffinity(nix::unistd::Pid::from_raw(0), &set))
        .map_err(|source| RunError::Pin { cpu, source })
}

/// A synthetic guest and its copier, as the wait loop drives them.
struct Synthetic<'a, T: Transport> {
    guest: Guest,
    copier: Copier<T>,
    stats: Stats,
    mode: NotifyMode,
    peer_pid: u32,
    deadline: Instant,
    timeout: Duration,
    shared: &'a SharedStats,
    started: Instant,
}

impl<T: Transport> Synthetic<'_, T> {
    fn ring_err(&self, err: RingError) -> RunError {
        RunError::Ring {
            pid: self.peer_pid,
            err,
        }
    }
    fn copy_err(&self, err: CopyError) -> RunError {
        match err {
            CopyError::Transport(e) => RunError::Transport(e),
            err => RunError::Copy {
                pid: self.peer_pid,
                err,
            },
        }
    }
    fn timeout(&self) -> RunError {
        RunError::Timeout(self.timeout.as_secs_f64())
    }
}

impl<T: Transport> Device for Synthetic<'_, T> {
    type Error = RunError;

    fn turn(&mut self) -> Result<Turn, RunError> {
        let step = self
            .guest
            .step(&mut self.stats)
            .map_err(|e| self.ring_err(e))?;
        if let Some((old, new)) = step.tx_published {
            if self
                .guest
                .tx
                .kick_needed(self.mode, old, new)
                .map_err(|e| self.ring_err(e))?
            {
                notify(self.copier.link(), &mut self.stats)?;
            } else {
                self.stats.notifications_suppressed += 1;
            }
        }
        let out = self.copier.poll().map_err(|e| self.copy_err(e))?;
        account(&self.copier, &out, &mut self.stats)?;
        if self.guest.done() {
            return Ok(Turn::Done);
        }
        Ok(if step.progress || out.finished() > 0 {
            Turn::Busy
        } else {
            Turn::Idle
        })
    }

    fn arm(&mut self, on: bool) -> Result<(), RunError> {
        self.copier
            .set_notifications(on)
            .map_err(|e| self.copy_err(e))?;
        self.guest.set_interrupts(on).map_err(|e| self.ring_err(e))
    }

    fn has_work(&mut self) -> Result<bool, RunError> {
        Ok(self.copier.has_work().map_err(|e| self.copy_err(e))?
            || self.guest.has_work().map_err(|e| self.ring_err(e))?)
    }

    fn tick(&mut self, now: Instant) -> Result<(), RunError> {
        if let Some(sig) = transport::interrupted() {
            return Err(RunError::Interrupted(sig));
        }
        if now >= self.deadline {
            return Err(self.timeout());
        }
        // Non-blocking look: drains kicks and notices a dead peer.
        self.copier.link().wait(Some(Duration::ZERO))?;
        publish(self.shared, &self.stats, self.started);
        Ok(())
    }

    fn sleep(&mut self, max: Duration) -> Result<Slept, RunError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timeout());
        }
        if self.copier.link().wait(Some(left.min(max)))? == Wakeup::Notified {
            self.stats.wakeups += 1;
        }
        Ok(Slept::Woke)
    }
}

fn lock(s: &SharedStats) -> std::sync::MutexGuard<'_, Stats> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn publish(shared: &SharedStats, stats: &Stats, started: Instant) {
    let mut s = stats.clone();
    s.finish(started.elapsed().as_secs_f64());
    *lock(shared) = s;
}
