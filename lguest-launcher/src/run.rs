//! One launcher run: memory, rendezvous, then the wait loop.
//!
//! The synthetic guest and the copier run to completion in one thread, as
//! DPDK's virtio-user polls its own device: each turn (`Synthetic`'s
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
        // No deadline for a reconnecting launcher without `--timeout`.
        let deadline = cfg
            .run_limit()
            .map(|t| Instant::now() + t + Duration::from_secs(2));
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
            if deadline.is_some_and(|d| Instant::now() >= d) {
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
///
/// # Link generations (`--reconnect`)
/// A run is a loop over links. The guest, its memory and its rings belong
/// to the run; a link — the transport, the peer's mapping and the
/// [`Copier`] that owns both — belongs to one *generation*. When the peer
/// leaves, the copier is dropped with its link, the guest stays, and the
/// next `connect` on the same path builds a new copier:
///
/// 1. **Generation number.** Each side proposes 1 + the links it had before
///    in its [`Handshake::generation`] and both take the larger, so a
///    restarted peer (proposing 1) and its survivor (proposing N + 1) agree
///    on N + 1 and print the same number.
/// 2. **Where the peer's TX ring resumes.** Not from anything a thread
///    remembers: the new copier reads the peer's TX *used* index from
///    shared memory ([`Copier::resume_peer_tx`]). For a fresh peer that is
///    0; for a survivor it is what the dead copier completed, so chains the
///    dead peer had taken but not completed are delivered by the next one,
///    and none twice. The survivor's own TX ring (its guest's
///    [`DriverQueue`](crate::virtq::DriverQueue)) keeps its chains in
///    flight until the new peer completes them.
/// 3. **Where our RX ring resumes.** Our copier is the only device side of
///    our RX ring, so the new copier starts where the old one stopped
///    ([`Copier::rx_state`] → [`Copier::with_rx_state`]), and the guest is
///    told from which RX used index on frames come from the new peer
///    ([`Guest::link_up`]), for its per-sender records.
/// 4. **What a returning peer must match.** The guest was set up for the
///    first link: its notification mode (which suppression fields it
///    maintains), and the queue and memory size of its peer. A peer that
///    offers less or differs is refused with both values named
///    (`LinkTerms::check`), and we keep waiting.
pub fn run<T: Transport>(cfg: &RunConfig, shared: &SharedStats) -> Result<Stats, RunError> {
    let start = Instant::now();
    let stats = Stats {
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
    if !cfg.quiet {
        eprintln!("[{}] waiting for peer on {} ...", cfg.name, cfg.spec);
    }
    let mut stats = stats;
    stats.set_wakeups(&probe.hist);
    let mut session = Session {
        cfg,
        shared,
        wake: probe.median(),
        stats,
        guest: None,
        generation: 0,
        terms: None,
        rx_state: (0, 0),
        down_since: None,
        started: None,
        deadline: cfg.run_limit().map(|t| start + t),
    };
    let result = session.generations::<T>(&mem, layout);
    session.finish(result)
}

/// What the first link set our guest up with; a returning peer must offer
/// the same (see [`run`], step 4).
#[derive(Clone, Copy, Debug)]
struct LinkTerms {
    tx_size: u32,
    rx_size: u32,
    mem_size: u64,
    mode: NotifyMode,
}

impl LinkTerms {
    fn of(hs: &Handshake, mode: NotifyMode) -> Self {
        LinkTerms {
            tx_size: hs.tx.size,
            rx_size: hs.rx.size,
            mem_size: hs.mem_size,
            mode,
        }
    }

    /// Why the returning peer's handshake `hs` does not fit, naming its
    /// value and the one the link was set up with.
    fn check(&self, hs: &Handshake) -> Result<(), String> {
        for (ring, got, want) in [
            ("TX", hs.tx.size, self.tx_size),
            ("RX", hs.rx.size, self.rx_size),
        ] {
            if got != want {
                return Err(format!(
                    "its {ring} queue size is {got}, but this link was set up with queue size {want}"
                ));
            }
        }
        if hs.mem_size != self.mem_size {
            return Err(format!(
                "its memory size is {} bytes ({} MiB), but this link was set up with {} bytes ({} MiB)",
                hs.mem_size,
                hs.mem_size >> 20,
                self.mem_size,
                self.mem_size >> 20
            ));
        }
        let offered = NotifyMode::from_features(hs.features);
        if offered < self.mode {
            return Err(format!(
                "its features {:#x} offer notify {}, but this link's guest runs notify {} (features {:#x})",
                hs.features,
                offered.name(),
                self.mode.name(),
                self.mode.features()
            ));
        }
        Ok(())
    }
}

/// How long a refused peer has to leave before we wait for the next one (a
/// refused receiver may still drain our TX ring while it notices).
const REFUSED_GRACE: Duration = Duration::from_secs(2);

/// Wait until process `pid` is gone (or a zombie), at most `limit`.
fn wait_gone(pid: u32, limit: Duration) {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()));
        if matches!(state, None | Some('Z' | 'X')) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Rendezvous on the configured path, offering `local`.
fn connect<T: Transport>(
    cfg: &RunConfig,
    mem: &GuestMemory,
    local: &Handshake,
    deadline: Option<Instant>,
    first: bool,
) -> Result<(T, transport::PeerInfo), RunError> {
    let opts = ConnectOptions {
        nonblocking_writes: cfg.writes == Writes::Nonblocking,
        timeout: deadline.map(|d| d.saturating_duration_since(Instant::now())),
    };
    let connecting = Arc::new(std::sync::atomic::AtomicBool::new(true));
    if !cfg.quiet {
        spawn_helpers(|| RefusalNote::watch(&cfg.spec.path, &cfg.name, connecting.clone()));
    }
    let connected = T::connect(&cfg.spec.path, local, mem.fd(), &opts);
    connecting.store(false, std::sync::atomic::Ordering::Relaxed);
    if let Err(transport::Error::RefusedPath { reason, .. }) = &connected {
        if !(reason.contains("FIFO") || reason.contains("socket")) {
            // A symlink or a foreign owner: nobody of ours waits there.
        } else {
            // Someone else's rendezvous of another kind: tell its owner why.
            RefusalNote::leave(&cfg.spec.path, cfg.spec.kind);
        }
    }
    connected.map_err(|e| {
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
                // Waiting for the next peer ran into `--timeout`.
                (transport::Error::ConnectTimeout { .. }, None) if !first => {
                    RunError::Timeout(cfg.timeout.as_secs_f64())
                }
                _ => RunError::Transport(e),
            },
        }
    })
}

/// One launcher run across its link generations: what outlives a link.
struct Session<'a> {
    cfg: &'a RunConfig,
    /// One-way wake-up cost measured at start (calibrates `adaptive`).
    wake: Duration,
    shared: &'a SharedStats,
    stats: Stats,
    /// Built at the first link (it needs the negotiated notify mode).
    guest: Option<Guest>,
    /// The generation of the last link (0 before the first).
    generation: u32,
    terms: Option<LinkTerms>,
    /// Our RX ring's device position, handed from copier to copier.
    rx_state: (u16, u16),
    /// The link went down at (while waiting for the next peer).
    down_since: Option<Instant>,
    /// The first link came up at.
    started: Option<Instant>,
    deadline: Option<Instant>,
}

impl Session<'_> {
    /// Run links until the workload is done, or a link ends in a way
    /// `--reconnect` does not cover.
    fn generations<T: Transport>(
        &mut self,
        mem: &GuestMemory,
        layout: Layout,
    ) -> Result<(), RunError> {
        let cfg = self.cfg;
        let own_map = GuestMap::identity(mem.region().clone());
        loop {
            // After the first link, offer the mode the guest runs, so the
            // new peer cannot settle on a higher one than ours.
            let offer = self.terms.map_or(cfg.notify, |t| t.mode);
            let local = Handshake::new(
                std::process::id(),
                offer.features(),
                mem.region().len(),
                mem.raw_fd(),
                layout.tx,
                layout.rx,
            )
            .with_generation(self.generation + 1);
            let (t, peer) = connect::<T>(cfg, mem, &local, self.deadline, self.guest.is_none())?;
            let up_at = Instant::now();
            let hs = peer.handshake;
            let peer_pid = hs.pid;
            if let Some(terms) = self.terms {
                if let Err(why) = terms.check(&hs) {
                    eprintln!(
                        "[{}] refused peer {peer_pid}: {why}; still waiting on {}",
                        cfg.name, cfg.spec
                    );
                    self.stats.refused += 1;
                    drop((t, peer));
                    wait_gone(peer_pid, REFUSED_GRACE);
                    if let Some(g) = self.guest.as_mut() {
                        g.reap()
                            .map_err(|err| RunError::Ring { pid: peer_pid, err })?;
                    }
                    continue;
                }
            }
            let generation = (self.generation + 1).max(hs.generation);
            let _mark = PairMark::claim(&cfg.spec.path, std::process::id(), peer_pid);
            // Each side maintains the suppression fields of its own mode;
            // the pair uses the lower of the two so neither waits on a
            // field nobody writes.
            let mode = match self.terms {
                Some(t) => t.mode,
                None => cfg.notify.min(NotifyMode::from_features(hs.features)),
            };
            let peer_mem = GuestMap::new(map_peer(peer.memory, hs.mem_size)?, hs.regions());
            self.stats.peer_pid = peer_pid;
            self.stats.notify_effective = mode.name().into();
            self.stats.generation = generation;
            if !cfg.quiet {
                if let Some(down) = self.down_since {
                    eprintln!(
                        "[{}] link up (generation {generation}) after {:.1} ms: peer pid {peer_pid}",
                        cfg.name,
                        ms(up_at - down)
                    );
                } else {
                    eprintln!(
                        "[{}] connected to peer pid {peer_pid} over {}: peer memory {} MiB, queue {}; notify {} (asked {}), writes {}, wait {}; link generation {generation}",
                        cfg.name,
                        cfg.spec.kind.name(),
                        peer_mem.region().len() >> 20,
                        hs.tx.size,
                        mode.name(),
                        cfg.notify.name(),
                        cfg.writes.name(),
                        cfg.wait.name()
                    );
                }
            }
            let ring_err = |err| RunError::Ring { pid: peer_pid, err };
            let mut guest = match self.guest.take() {
                Some(g) => g,
                None => Guest::new(
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
                .map_err(ring_err)?
                .with_reconnect(cfg.reconnect),
            };
            guest.link_up(peer_pid, self.rx_state.1);
            self.terms.get_or_insert(LinkTerms::of(&hs, mode));
            let started = *self.started.get_or_insert(up_at);
            let consumed_at_up = guest.consumed();
            let copier = Copier::new(t, &peer_mem, &hs.tx, &own_map, &layout.rx, mode)
                .and_then(Copier::resume_peer_tx)
                .map(|c| c.with_rx_state(self.rx_state.0, self.rx_state.1));
            let copier = match copier {
                Ok(c) => c,
                Err(e) => {
                    self.guest = Some(guest);
                    return Err(ring_err(e));
                }
            };
            let mut dev = Synthetic {
                guest,
                copier,
                stats: std::mem::take(&mut self.stats),
                mode,
                peer_pid,
                deadline: self.deadline,
                timeout: cfg.timeout,
                shared: self.shared,
                started,
                name: &cfg.name,
                quiet: cfg.quiet,
                outage: self
                    .down_since
                    .take()
                    .map(|down| Outage { down, up: up_at }),
                consumed_at_up,
            };
            let result = dev.drive(cfg.wait, self.wake);
            let (guest, copier, stats, result) = dev.end(result);
            self.rx_state = copier.rx_state();
            // The link ends here: the transport and the peer's mapping go
            // with the copier that owns them.
            drop(copier);
            self.stats = stats;
            self.generation = generation;
            let mut guest = guest;
            let recoverable = match &result {
                Err(RunError::Transport(e)) => e.is_peer_gone(),
                Err(RunError::Copy { .. }) => true,
                _ => false,
            };
            // The peer is gone: what it completed of our TX ring is final.
            if recoverable {
                guest.reap().map_err(ring_err)?;
            }
            if cfg.workload == Workload::Stream {
                self.stats
                    .consumed_per_generation
                    .push(guest.consumed() - consumed_at_up);
            }
            let done = guest.done();
            self.guest = Some(guest);
            match result {
                Err(e) if cfg.reconnect && recoverable && !done => {
                    if !cfg.quiet {
                        eprintln!(
                            "[{}] link down (generation {generation}): {e}; waiting for the next peer on {}",
                            cfg.name, cfg.spec
                        );
                    }
                    self.down_since = Some(Instant::now());
                }
                r => return r,
            }
        }
    }

    /// The final stats and result, from whatever link ended the run.
    fn finish(mut self, result: Result<(), RunError>) -> Result<Stats, RunError> {
        let cfg = self.cfg;
        // Nobody ever came (or the first peer was refused): nothing to add.
        let Some(mut guest) = self.guest.take() else {
            return result.map(|_| self.stats);
        };
        let result = match (result, guest.shortfall()) {
            (Ok(()), Some(short)) => Err(RunError::Short(short)),
            (Err(RunError::Transport(e)), Some(short)) if e.is_peer_gone() => {
                Err(RunError::Short(short))
            }
            (r, _) => r,
        };
        let stats = &mut self.stats;
        guest.report(stats);
        stats.finish(self.started.map_or(0.0, |s| s.elapsed().as_secs_f64()));
        if cfg.workload == Workload::Stream && result.is_ok() {
            stats.lost = 0;
        }
        stats.result = match &result {
            Ok(()) => "ok".into(),
            Err(e) => e.to_string(),
        };
        *lock(self.shared) = stats.clone();
        result.map(|_| self.stats)
    }
}

/// Milliseconds of `d`, as stats and messages give them.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One outage of the link, from noticing the peer gone (`down`) through
/// the next handshake (`up`) to the first packet moved after it.
#[derive(Clone, Copy, Debug)]
struct Outage {
    down: Instant,
    up: Instant,
}

impl Outage {
    /// The link carries packets again at `at` (or the generation ended
    /// before any moved: then `at` is `up`).
    fn close(self, at: Instant, stats: &mut Stats) {
        let down = ms(at.saturating_duration_since(self.down));
        stats.reconnects += 1;
        stats.link_down_ms += down;
        stats.link_down_ms_each.push(down);
        stats
            .resume_ms_each
            .push(ms(at.saturating_duration_since(self.up)));
    }
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

/// A synthetic guest and its copier for one link generation, as the wait
/// loop drives them.
struct Synthetic<'a, T: Transport> {
    guest: Guest,
    copier: Copier<T>,
    stats: Stats,
    mode: NotifyMode,
    peer_pid: u32,
    deadline: Option<Instant>,
    timeout: Duration,
    shared: &'a SharedStats,
    started: Instant,
    name: &'a str,
    quiet: bool,
    /// The outage this link ended, until its first packet moves.
    outage: Option<Outage>,
    /// TX chains completed when this link came up.
    consumed_at_up: u64,
}

impl<'a, T: Transport> Synthetic<'a, T> {
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

    /// Print what the guest noted (a sender's first frame, a frame out of
    /// sequence).
    fn print_notes(&mut self) {
        for note in self.guest.take_notes() {
            if !self.quiet {
                eprintln!("[{}] {note}", self.name);
            }
        }
    }

    /// Run this link until the workload is done or the link fails.
    fn drive(&mut self, wait: Wait, wake: Duration) -> Result<(), RunError> {
        // Start "awake" (the peer kicks us until we first go idle), except
        // when spinning: then we never want a kick.
        self.copier
            .set_notifications(wait != Wait::Spin)
            .map_err(|e| self.copy_err(e))?;
        let mut waiter = WaitLoop::calibrated(wait, wake);
        let result = waiter.run(self).map(|_| ());
        // Counters add up across link generations.
        let counters = waiter.counters();
        self.stats.spin_hits += counters.spin_hits;
        self.stats.sleeps += counters.sleeps;
        if wait == Wait::Adaptive {
            self.stats.spin_budget_us = Some(waiter.spin_budget().get().as_secs_f64() * 1e6);
        }
        result
    }

    /// Wind the link down after [`Synthetic::drive`]: announce our end
    /// when we leave cleanly (or are interrupted), take what a departed
    /// peer left in its ring,
    /// and hand back the parts.
    fn end(
        mut self,
        result: Result<(), RunError>,
    ) -> (Guest, Copier<T>, Stats, Result<(), RunError>) {
        // A signal may surface as a transport error (an interrupted poll).
        let result = match (result, transport::interrupted()) {
            (Err(_), Some(sig)) => Err(RunError::Interrupted(sig)),
            (r, _) => r,
        };
        // `idle` runs for its duration (`--timeout`): reaching it is success.
        let result = match result {
            Err(RunError::Timeout(_)) if self.guest.workload() == Workload::Idle => Ok(()),
            r => r,
        };
        if matches!(result, Ok(()) | Err(RunError::Interrupted(_))) {
            // Leaving cleanly: tell the peer how many we sent (lost vs
            // never sent; a clean leave, not a crash), giving it a moment
            // to free a TX slot.
            let until = Instant::now() + END_GRACE;
            while self.guest.end_pending() && Instant::now() < until {
                match self.guest.announce_end() {
                    Ok(Some(_)) => {
                        // Always kick: the peer may be asleep on a full ring.
                        let _ = notify(self.copier.link(), &mut self.stats);
                    }
                    Ok(None) => std::thread::sleep(Duration::from_micros(200)),
                    Err(_) => break,
                }
            }
        }
        let result = match result {
            // The peer may leave right after finishing its part (a stream
            // that saw its last packet consumed). Its memory stays mapped,
            // so take a last look before calling this a failure.
            Err(RunError::Transport(e)) if e.is_peer_gone() => {
                self.drain();
                let idle_left =
                    self.guest.workload() == Workload::Idle && self.guest.peer_finished();
                if self.guest.done() || idle_left {
                    // An idle side whose peer left cleanly is done too.
                    Ok(())
                } else {
                    Err(RunError::Transport(e))
                }
            }
            r => r,
        };
        self.print_notes();
        if let Some(o) = self.outage.take() {
            // No packet moved on this link: it was up from `o.up` on.
            o.close(o.up, &mut self.stats);
        }
        let Synthetic {
            guest,
            copier,
            stats,
            ..
        } = self;
        (guest, copier, stats, result)
    }

    /// The peer is gone: take what it already published (a slow sink may be
    /// far behind), notifying nobody.
    fn drain(&mut self) {
        while !self.guest.done() {
            let step = self
                .guest
                .step(&mut self.stats)
                .map(|s| s.progress)
                .unwrap_or(false);
            let moved = match self.copier.poll() {
                Ok(out) => {
                    // The peer is gone: count, but notify nobody.
                    let _ = account(
                        &self.copier,
                        &Outcome {
                            peer_wants_kick: false,
                            ..out
                        },
                        &mut self.stats,
                    );
                    out.finished() > 0
                }
                Err(_) => false,
            };
            if !step && !moved {
                break;
            }
        }
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
        if let Some(o) = self.outage {
            // The first packet after a reconnect, either way.
            if out.finished() > 0 || self.guest.consumed() != self.consumed_at_up {
                o.close(Instant::now(), &mut self.stats);
                self.outage = None;
            }
        }
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
        if self.deadline.is_some_and(|d| now >= d) {
            return Err(self.timeout());
        }
        self.print_notes();
        // Non-blocking look: drains kicks and notices a dead peer.
        self.copier.link().wait(Some(Duration::ZERO))?;
        publish(self.shared, &self.stats, self.started);
        Ok(())
    }

    fn sleep(&mut self, max: Duration) -> Result<Slept, RunError> {
        let left = match self.deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => max,
        };
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
