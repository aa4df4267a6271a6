//! `lguest-launcher switch`: more than two guests on one link.
//!
//! A switch is a process that members join exactly as they would join a
//! peer: an unchanged launcher (synthetic or `vhost-user`) given
//! `--sharenet KIND:PATH` naming the switch. For `unix:` and `eventfd:`
//! every member uses the switch's one path: the switch holds one listener
//! open there ([`transport::serve_many`]), so members arriving together all
//! reach the switch, never each other. For `fifo:`, whose rendezvous is a
//! pair of named pipes, port N has its own path `PATH.N` (`fifo:/tmp/sw.3`
//! joins port 3). The handshake is the ordinary one, with the
//! [`transport::F_SWITCH`] feature bit set so a synthetic guest knows to
//! announce its MAC address.
//!
//! # The data path (see [`port`])
//! Each port is the peer side of an ordinary link. One thread forwards:
//! for each port it takes the member's TX chains (checked, as any peer's),
//! reads the Ethernet header, learns the source address on that port
//! ([`table`]), looks the destination up, and copies the frame straight
//! into the destination port's TX ring, or into every other port's for
//! broadcast, multicast and unknown unicast (flooding); never back out of
//! the port it came in on. Then it completes the member's chain and kicks
//! whoever asked to be kicked. The destination member's copier pulls the
//! frame as it would from any peer.
//!
//! # Flow control: a slow member stalls only itself
//! A destination whose ring is full gets [`SwitchConfig::hold`] (default
//! 250 ms) to make room. Meanwhile the source's chain waits at the head of
//! *its own* ring — the frames of every other port keep moving — and the
//! switch sleeps until the destination's copier frees a slot (it asked
//! for that interrupt) or the hold ends. A destination still full after
//! the hold is *congested*: frames for it are dropped at once and counted
//! (`no_room`) until it has room again, so one member that stopped reading
//! costs each sender at most one hold, never a stall. `--hold-ms 0` drops
//! at once.
//!
//! # Members come and go
//! A member that leaves or dies is noticed on its transport (hang-up); its
//! port is freed and the addresses learned there forgotten, without
//! touching the other ports. Its memory stays mapped until then, so a
//! member dying mid-frame cannot make the switch fault. A member that
//! joins later gets the lowest free port at once; one that comes back
//! with `--reconnect` keeps its MAC address and resumes its own rings, so
//! it is the same member to everyone (for `fifo:` also the same port: its
//! path names it).

mod accept;
mod capture;
pub mod port;
pub mod profile;
pub mod stats;
mod status;
pub mod table;

use crate::cli::config::{Kind, Spec};
use crate::guest::frame::{is_group, Mac, ETH_HDR};
use crate::guest::plan::{Layout, BUF_SIZE, NET_HDR_LEN};
use crate::link::{dispatch, WithTransport};
use crate::virtq::{ChainError, NotifyMode, Seg};
use accept::{Acceptor, Event, Joined};
use port::{read_prefix, Port};
use stats::SwitchStats;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use table::Table;
use transport::Transport;

/// `switch --help` examples.
pub const HELP: &str = "\
Examples:
  # a switch and three synthetic guests over eventfds:
  lguest-launcher switch --sharenet eventfd:/tmp/sw --ports 4 --stats-json sw.json
  lguest-launcher --sharenet eventfd:/tmp/sw --name a --mac 02:00:00:00:00:0a --workload sink --count 0
  lguest-launcher --sharenet eventfd:/tmp/sw --name b --mac 02:00:00:00:00:0b --dst 02:00:00:00:00:0a --workload stream
  lguest-launcher --sharenet eventfd:/tmp/sw --name c --workload echo --count 1000

  # FIFO ports have a path each: port 3 is PATH.3
  lguest-launcher switch --sharenet fifo:/tmp/sw --ports 4
  lguest-launcher --sharenet fifo:/tmp/sw.3 --workload sink --count 0

Stops on SIGINT/SIGTERM (exit 0, stats written) or after --timeout.";

/// Most ports a switch serves.
pub const MAX_PORTS: usize = 64;
/// Chains taken from one member per turn, so one busy member cannot keep
/// the others waiting for a whole ring.
const BATCH: u16 = 64;

/// `switch` flags.
#[derive(Debug, clap::Args, Clone)]
pub struct SwitchArgs {
    /// Where members meet the switch: unix:PATH or eventfd:PATH (every
    /// member uses PATH), or fifo:PATH (port N's member uses PATH.N).
    #[arg(long, value_name = "KIND:PATH")]
    pub sharenet: Option<Spec>,
    /// Read defaults from the `[switch]` section of this TOML file (flags
    /// override it).
    #[arg(long, value_name = "FILE.toml")]
    pub profile: Option<PathBuf>,
    /// Ports, 1..=64 (for fifo: the paths PATH.0 .. PATH.N-1) [default: 8].
    #[arg(long, value_name = "N", value_parser = parse_ports)]
    pub ports: Option<usize>,
    /// Write the switch's stats JSON here (every half second and at exit).
    #[arg(long, value_name = "PATH")]
    pub stats_json: Option<PathBuf>,
    /// Notification suppression the switch asks for (each port uses the
    /// lower of this and its member's) [default: event-idx].
    #[arg(long, value_enum)]
    pub notify: Option<NotifyMode>,
    /// Entries per port ring: a power of two up to 32768 [default: 256].
    #[arg(long, value_name = "N", value_parser = crate::cli::parse_queue_size)]
    pub queue_size: Option<u32>,
    /// How long a frame waits for room at a full destination before it
    /// is dropped there (0: drop at once) [default: 250].
    #[arg(long, value_name = "MS")]
    pub hold_ms: Option<u64>,
    /// Largest number of MAC addresses learned [default: 4096].
    #[arg(long, value_name = "N")]
    pub mac_table: Option<usize>,
    /// Seconds a learned address is kept without being seen again
    /// [default: 300].
    #[arg(long, value_name = "SECS")]
    pub aging: Option<u64>,
    /// Stop after this many seconds (exit 0) [default: run until SIGINT/SIGTERM].
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// No join/leave lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Also bridge a Linux TAP device NAME (created if missing) as one
    /// more port, so the host's own stack reaches the members. Needs
    /// CAP_NET_ADMIN; bring it up with `ip link set NAME up`.
    #[arg(long, value_name = "NAME")]
    pub tap: Option<String>,
    /// Microseconds to keep polling the members before sleeping when
    /// nothing moves (0: sleep at once) [default: 0].
    #[arg(long, value_name = "US")]
    pub spin_us: Option<u64>,
    /// `--capture FILE.pcapng [--snaplen BYTES]`: one interface per port
    /// (`port-N`), frames in and out, drops with their reason (see
    /// `switch/capture.rs`).
    #[command(flatten)]
    pub capture: crate::capture::CaptureArgs,
}

fn parse_ports(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number; expected 1..={MAX_PORTS}"))?;
    if !(1..=MAX_PORTS).contains(&n) {
        return Err(format!("{n} is out of range; expected 1..={MAX_PORTS}"));
    }
    Ok(n)
}

/// What the switch runs with.
#[derive(Clone, Debug)]
pub struct SwitchConfig {
    /// Transport and path.
    pub spec: Spec,
    /// Ports.
    pub ports: usize,
    /// Stats JSON path.
    pub stats_json: Option<PathBuf>,
    /// Suppression asked for.
    pub notify: NotifyMode,
    /// Port ring size.
    pub queue_size: u32,
    /// Room wait at a full destination.
    pub hold: Duration,
    /// MAC table bound.
    pub mac_table: usize,
    /// MAC aging.
    pub aging: Duration,
    /// Run limit.
    pub timeout: Option<Duration>,
    /// No join/leave lines.
    pub quiet: bool,
    /// `--tap NAME`.
    pub tap: Option<String>,
    /// How long to poll before sleeping when nothing moves.
    pub spin: Duration,
}

/// Why the switch stopped (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// Port memory could not be created.
    #[error("port memory: {0}")]
    Memory(#[from] crate::memory::MemoryError),
    /// The rendezvous path could not be held.
    #[error("{0}")]
    Transport(#[from] transport::Error),
    /// A wake-up pipe could not be made.
    #[error("wake-up pipe: {0}")]
    Io(#[from] std::io::Error),
}

/// `lguest-launcher switch`: check the flags (exit 2 naming the flag),
/// then serve until stopped.
pub fn run(args: &SwitchArgs) -> ExitCode {
    let prof = match &args.profile {
        Some(f) => match profile::read(f) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        None => profile::SwitchProfile::default(),
    };
    let Some(sharenet) = args.sharenet.clone().or(prof.sharenet.clone()) else {
        eprintln!("error: --sharenet KIND:PATH is required (or `sharenet` in the profile's [switch]): where members meet the switch");
        return ExitCode::from(2);
    };
    if let Err(e) = crate::cli::check_rendezvous(&sharenet) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let mac_table = args.mac_table.or(prof.mac_table).unwrap_or(4096);
    if mac_table == 0 {
        eprintln!(
            "error: --mac-table 0: the switch must learn at least one address; give 1 or more"
        );
        return ExitCode::from(2);
    }
    let cfg = SwitchConfig {
        spec: sharenet,
        ports: args.ports.or(prof.ports).unwrap_or(8),
        stats_json: args.stats_json.clone().or(prof.stats_json),
        notify: args.notify.or(prof.notify).unwrap_or(NotifyMode::EventIdx),
        queue_size: args.queue_size.or(prof.queue_size).unwrap_or(256),
        hold: Duration::from_millis(args.hold_ms.or(prof.hold_ms).unwrap_or(250)),
        mac_table,
        aging: Duration::from_secs(args.aging.or(prof.aging).unwrap_or(300)),
        timeout: args.timeout.map(Duration::from_secs_f64),
        quiet: args.quiet,
        tap: args.tap.clone().or(prof.tap),
        spin: Duration::from_micros(args.spin_us.or(prof.spin_us).unwrap_or(0)),
    };
    if let Some(c) = args.capture.config() {
        if let Err(e) = capture::start(&c, &cfg) {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    crate::run::install_signal_handlers();
    match dispatch(cfg.spec.kind, Serve { cfg: &cfg }) {
        Ok(stats) => {
            if !cfg.quiet {
                let (rx, tx): (u64, u64) = stats
                    .ports
                    .iter()
                    .fold((0, 0), |a, p| (a.0 + p.rx_packets, a.1 + p.tx_packets));
                eprintln!(
                    "[switch] stopped: {} members joined, {rx} frames in, {tx} frames out, {} flooded",
                    stats.joins, stats.flooded
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: [switch] {e}");
            ExitCode::from(1)
        }
    }
}

struct Serve<'a> {
    cfg: &'a SwitchConfig,
}

impl WithTransport for Serve<'_> {
    type Output = Result<SwitchStats, SwitchError>;
    fn with<T: Transport + 'static>(self) -> Self::Output {
        Switch::<T>::start(self.cfg)?.serve()
    }
}

/// The forwarding thread's state.
struct Switch<'a, T: Transport> {
    cfg: &'a SwitchConfig,
    layout: Layout,
    ports: Vec<Option<Port<T>>>,
    /// Shared with the acceptors: which ports are taken.
    busy: Arc<Vec<AtomicBool>>,
    table: Table,
    stats: SwitchStats,
    events: mpsc::Receiver<Event<T>>,
    wake: std::os::unix::net::UnixDatagram,
    stop: Arc<AtomicBool>,
    _served: Option<transport::Served>,
    segs: Vec<Seg>,
    targets: Vec<usize>,
    started: Instant,
    /// `--tap NAME`: the port to the host's own stack.
    tap: Option<transport::tap::Tap>,
    tap_buf: Vec<u8>,
    scratch: Vec<u8>,
    /// The control socket (`status`).
    status: status::Status,
}

impl<'a, T: Transport + 'static> Switch<'a, T> {
    fn start(cfg: &'a SwitchConfig) -> Result<Self, SwitchError> {
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
            features: cfg.notify.features() | transport::F_SWITCH,
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
            ..SwitchStats::default()
        };
        if tap.is_some() {
            stats.port(cfg.ports).state = "tap".into();
        }
        Ok(Switch {
            cfg,
            layout,
            ports: (0..cfg.ports).map(|_| None).collect(),
            busy,
            table: Table::new(cfg.mac_table, cfg.aging),
            stats,
            events,
            wake,
            stop,
            _served: served,
            segs: Vec::with_capacity(8),
            targets: Vec::with_capacity(cfg.ports + 1),
            started: Instant::now(),
            tap,
            tap_buf: Vec::new(),
            scratch: Vec::new(),
            status: status::serve(cfg),
        })
    }

    /// Forward until SIGINT/SIGTERM/SIGHUP or `--timeout`.
    fn serve(mut self) -> Result<SwitchStats, SwitchError> {
        let deadline = self.cfg.timeout.map(|t| self.started + t);
        let mut last_write = Instant::now();
        let mut last_check = Instant::now();
        let mut idle_since: Option<Instant> = None;
        let result = loop {
            if let Some(sig) = transport::interrupted() {
                break format!("stopped by {}", crate::run::signal_name(sig));
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break "ok".to_string();
            }
            self.take_events();
            let mut moved = 0usize;
            for j in 0..self.ports.len() {
                if let Some(p) = self.ports[j].as_mut() {
                    if let Err(e) = p.reap() {
                        self.leave(j, &format!("broke the port's TX ring: {e}"));
                    }
                }
            }
            for i in 0..self.ports.len() {
                moved += self.forward_from(i, now);
            }
            moved += self.forward_from_tap(now);
            self.flush();
            if moved > 0 {
                idle_since = None;
            }
            if moved == 0 {
                // Poll a little before sleeping: a member's next batch is
                // usually microseconds away, a wake-up costs tens of them.
                let since = *idle_since.get_or_insert(now);
                if now.duration_since(since) < self.cfg.spin {
                    std::thread::yield_now();
                    continue;
                }
                idle_since = None;
                self.idle(now);
                last_check = Instant::now();
            } else if now.duration_since(last_check) > Duration::from_millis(20) {
                self.check_links();
                last_check = now;
            }
            if now.duration_since(last_write) > Duration::from_millis(500) {
                self.write_stats("running");
                last_write = now;
            }
        };
        self.stop.store(true, Ordering::Relaxed);
        self.write_stats(&result);
        capture::finish(&self.stats);
        Ok(self.stats)
    }

    fn write_stats(&mut self, result: &str) {
        self.stats.result = result.into();
        self.stats.elapsed_s = self.started.elapsed().as_secs_f64();
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

    /// Install members the acceptors handed over.
    fn take_events(&mut self) {
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

    fn join(&mut self, j: Joined<T>) {
        let slot = j
            .slot
            .or_else(|| self.ports.iter().position(|p| p.is_none()));
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
        match Port::new(j.link, j.peer, j.mem, self.layout, self.cfg.notify) {
            Ok(port) => {
                if !self.cfg.quiet {
                    eprintln!(
                        "[switch] port {n}: member pid {pid} joined (notify {})",
                        port.mode.name()
                    );
                }
                self.busy[n].store(true, Ordering::Relaxed);
                self.ports[n] = Some(port);
                self.stats.joins += 1;
                capture::note(n, format!("member pid {pid} joined port {n}"));
                let s = self.stats.port(n);
                s.joins += 1;
                s.pid = pid;
                s.state = "up".into();
            }
            Err(e) => {
                self.busy[n].store(false, Ordering::Relaxed);
                self.stats.refused += 1;
                eprintln!("[switch] refused member pid {pid}: {e}");
            }
        }
    }

    /// Free port `n`: its member left, died or broke its rings. The other
    /// ports are not touched.
    fn leave(&mut self, n: usize, why: &str) {
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
        capture::note(n, format!("member pid {} left port {n}: {why}", port.pid));
        drop(port);
        self.table.forget_port(n);
        self.busy[n].store(false, Ordering::Relaxed);
        self.stats.leaves += 1;
        self.stats.port(n).state = "down".into();
    }

    /// Look at every link without blocking: drains kicks, notices members
    /// that are gone.
    fn check_links(&mut self) {
        for n in 0..self.ports.len() {
            let gone = match self.ports[n].as_ref() {
                Some(p) => match p.link.wait(Some(Duration::ZERO)) {
                    Ok(_) => None,
                    Err(e) => Some(e.to_string()),
                },
                None => None,
            };
            if let Some(why) = gone {
                self.leave(n, &why);
            }
        }
    }

    /// Publish both rings of every port and kick the members that asked.
    fn flush(&mut self) {
        capture::turn_done(&mut self.stats);
        self.status.tick(&self.stats);
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

    /// Nothing moved: ask every member for kicks, re-check, sleep until a
    /// kick, a join or the end of a hold.
    fn idle(&mut self, now: Instant) {
        let mut work = false;
        for n in 0..self.ports.len() {
            if let Some(p) = self.ports[n].as_ref() {
                if let Err(e) = p.arm(true) {
                    self.leave(n, &format!("broke a ring: {e}"));
                }
            }
        }
        // Full fence: our suppression writes above must be visible before
        // we re-read the rings below; otherwise a member could publish
        // just before seeing them, skip its kick, and we would sleep on a
        // frame it already sent.
        std::sync::atomic::fence(Ordering::SeqCst);
        for p in self.ports.iter().flatten() {
            work |= p.has_work().unwrap_or(true);
        }
        if !work {
            // Sleep at most until the earliest hold ends.
            let mut max = Duration::from_millis(100);
            for p in self.ports.iter().flatten() {
                if let Some(since) = p.full_since {
                    let end = since + self.cfg.hold;
                    max = max.min(end.saturating_duration_since(now));
                }
            }
            self.sleep(max.max(Duration::from_millis(1)));
        }
        for p in self.ports.iter().flatten() {
            let _ = p.arm(false);
        }
        self.check_links();
    }

    /// Wait on every member's link and the acceptors' wake-up socket.
    fn sleep(&self, max: Duration) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds: Vec<PollFd> = self
            .ports
            .iter()
            .flatten()
            .map(|p| PollFd::new(p.link.as_fd(), PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(self.wake.as_fd(), PollFlags::POLLIN));
        if let Some(t) = &self.tap {
            fds.push(PollFd::new(t.as_fd(), PollFlags::POLLIN));
        }
        let ms = u16::try_from(max.as_millis()).unwrap_or(u16::MAX);
        let _ = poll(&mut fds, PollTimeout::from(ms));
        // The acceptors' wake-ups: drained here only, never per turn (a
        // system call per turn costs more than the frames it would move).
        let mut buf = [0u8; 16];
        while self.wake.recv(&mut buf).is_ok() {}
    }

    /// Forward what member `i` has sent; how many chains were finished.
    fn forward_from(&mut self, i: usize, now: Instant) -> usize {
        let (pending, member) = match self.ports[i].as_ref() {
            Some(p) => match p.pending() {
                Ok(n) => (n, p.member().clone()),
                Err(e) => {
                    self.leave(i, &format!("impossible TX ring: {e}"));
                    return 0;
                }
            },
            None => return 0,
        };
        let mut done = 0;
        for _ in 0..pending.min(BATCH) {
            let Some(p) = self.ports[i].as_mut() else {
                break;
            };
            let (head, chain) = match p.peek(&mut self.segs) {
                Ok(c) => c,
                Err(e) => {
                    self.leave(i, &format!("impossible TX ring: {e}"));
                    break;
                }
            };
            match self.route(i, Src::Member(&member), chain, now) {
                Route::Hold => break,
                Route::Done => {}
            }
            let Some(p) = self.ports[i].as_mut() else {
                break;
            };
            if let Err(e) = p.complete(head) {
                self.leave(i, &format!("impossible TX ring: {e}"));
                break;
            }
            done += 1;
        }
        done
    }

    /// Decide where one frame from port `i` goes and copy it there.
    fn route(
        &mut self,
        i: usize,
        src: Src<'_>,
        chain: Result<u32, ChainError>,
        now: Instant,
    ) -> Route {
        let before = NET_HDR_LEN as usize + ETH_HDR;
        let mut hdr = [0u8; NET_HDR_LEN as usize + ETH_HDR];
        let len = match chain {
            Ok(len)
                if len as usize >= before
                    && u64::from(len) <= BUF_SIZE
                    && src.read_prefix(&self.segs, &mut hdr) =>
            {
                len
            }
            _ => {
                self.stats.port(i).drops.malformed += 1;
                capture::malformed(i, chain);
                return Route::Done;
            }
        };
        let eth = &hdr[NET_HDR_LEN as usize..];
        let dst: Mac = eth[0..6].try_into().unwrap_or_default();
        let srcmac: Mac = eth[6..12].try_into().unwrap_or_default();
        let bytes = u64::from(len) - NET_HDR_LEN;
        let tap_ix = self.tap_ix();
        let up = |ports: &Vec<Option<Port<T>>>, j: usize| {
            ports.get(j).is_some_and(|p| p.is_some()) || Some(j) == tap_ix
        };
        self.targets.clear();
        let flood = if is_group(&dst) {
            true
        } else {
            match self.table.lookup(&dst, now) {
                Some(j) if j == i => {
                    let s = self.stats.port(i);
                    s.rx_packets += 1;
                    s.rx_bytes += bytes;
                    s.drops.same_port += 1;
                    capture::inbound(i, src, &self.segs, len, Some("same_port"));
                    self.table.learn(srcmac, i, now);
                    return Route::Done;
                }
                Some(j) if up(&self.ports, j) => {
                    self.targets.push(j);
                    false
                }
                _ => true,
            }
        };
        if flood {
            let n = self.ports.len();
            self.targets
                .extend((0..n).filter(|&j| j != i && self.ports[j].is_some()));
            if let Some(t) = tap_ix.filter(|&t| t != i) {
                self.targets.push(t);
            }
        }
        // Room everywhere it goes, or a hold while a full destination
        // may still make room (see the module docs). A frame from the
        // TAP cannot wait: the host's queue is not ours to hold.
        if src.can_hold() {
            for &j in &self.targets {
                if let Some(Some(q)) = self.ports.get_mut(j) {
                    if !q.has_room() {
                        let since = *q.full_since.get_or_insert(now);
                        if now.saturating_duration_since(since) < self.cfg.hold {
                            return Route::Hold;
                        }
                    }
                }
            }
        }
        self.table.learn(srcmac, i, now);
        {
            let s = self.stats.port(i);
            s.rx_packets += 1;
            s.rx_bytes += bytes;
        }
        if self.targets.is_empty() {
            self.stats.port(i).drops.unknown_port += 1;
            capture::inbound(i, src, &self.segs, len, Some("unknown_port"));
            return Route::Done;
        }
        capture::inbound(i, src, &self.segs, len, None);
        self.stats.copies += self.targets.len() as u64;
        if flood {
            self.stats.flooded += 1;
        } else {
            self.stats.unicast += 1;
        }
        for t in 0..self.targets.len() {
            let j = self.targets[t];
            let put = if Some(j) == tap_ix {
                self.put_tap(src, len)
            } else if let Some(Some(q)) = self.ports.get_mut(j) {
                match src {
                    Src::Member(mem) => q.put(mem, &self.segs, len),
                    Src::Bytes(b) => q.put_bytes(&b[..len as usize]),
                }
            } else {
                continue;
            };
            match put {
                Ok(true) => {
                    let s = self.stats.port(j);
                    s.tx_packets += 1;
                    s.tx_bytes += bytes;
                    capture::outbound(j, src, &self.segs, len, false);
                }
                Ok(false) => {
                    self.stats.port(j).drops.no_room += 1;
                    capture::outbound(j, src, &self.segs, len, true);
                }
                Err(port::PutError::Memory(_) | port::PutError::TooLong(_)) => {
                    // The frame, not the destination, is at fault.
                    self.stats.port(j).drops.no_room += 1;
                    capture::outbound(j, src, &self.segs, len, true);
                    self.stats.port(i).drops.malformed += 1;
                    capture::malformed(i, Ok(len));
                }
                Err(e) => {
                    // Our own ring or the TAP failed: that port goes.
                    self.stats.port(j).drops.no_room += 1;
                    capture::outbound(j, src, &self.segs, len, true);
                    self.leave(j, &format!("cannot forward to it: {e}"));
                }
            }
        }
        Route::Done
    }

    /// The TAP port's number, if there is one (after the member ports).
    fn tap_ix(&self) -> Option<usize> {
        self.tap.as_ref().map(|_| self.ports.len())
    }

    /// Hand a frame (`len` bytes with its `virtio_net_hdr`) to the host.
    fn put_tap(&mut self, src: Src<'_>, len: u32) -> Result<bool, port::PutError> {
        let Some(tap) = self.tap.as_ref() else {
            return Ok(false);
        };
        let frame: &[u8] = match src {
            Src::Bytes(b) => &b[NET_HDR_LEN as usize..len as usize],
            Src::Member(mem) => {
                self.scratch.resize(len as usize, 0);
                if !read_prefix(mem, &self.segs, &mut self.scratch) {
                    return Ok(false);
                }
                &self.scratch[NET_HDR_LEN as usize..]
            }
        };
        tap.send(frame).map_err(port::PutError::Tap)
    }

    /// Forward what the host sent on the TAP; how many frames.
    fn forward_from_tap(&mut self, now: Instant) -> usize {
        let Some(ix) = self.tap_ix() else {
            return 0;
        };
        let mut buf = std::mem::take(&mut self.tap_buf);
        buf.resize(BUF_SIZE as usize, 0);
        let mut done = 0;
        for _ in 0..BATCH {
            let got = match self
                .tap
                .as_ref()
                .map(|t| t.recv(&mut buf[NET_HDR_LEN as usize..]))
            {
                Some(Ok(Some(n))) => n,
                Some(Ok(None)) | None => break,
                Some(Err(e)) => {
                    eprintln!("[switch] tap: {e}; closing the TAP port");
                    self.tap = None;
                    break;
                }
            };
            buf[..NET_HDR_LEN as usize].fill(0);
            let len = (got + NET_HDR_LEN as usize) as u32;
            self.segs.clear();
            let _ = self.route(ix, Src::Bytes(&buf), Ok(len), now);
            done += 1;
        }
        self.tap_buf = buf;
        done
    }
}

/// Where a frame being forwarded is.
#[derive(Clone, Copy)]
enum Src<'a> {
    /// In a member's memory, as the chain pieces in `Switch::segs`.
    Member(&'a crate::memory::Region),
    /// In a buffer of ours (read from the TAP), `virtio_net_hdr` first.
    Bytes(&'a [u8]),
}

impl Src<'_> {
    fn read_prefix(&self, segs: &[Seg], out: &mut [u8]) -> bool {
        match self {
            Src::Member(mem) => read_prefix(mem, segs, out),
            Src::Bytes(b) => match b.get(..out.len()) {
                Some(h) => {
                    out.copy_from_slice(h);
                    true
                }
                None => false,
            },
        }
    }

    fn can_hold(&self) -> bool {
        matches!(self, Src::Member(_))
    }
}

/// What became of the frame at the head of a member's ring.
enum Route {
    /// Forwarded or dropped: complete the chain.
    Done,
    /// A destination is full and may still make room: leave it there.
    Hold,
}
