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
//! announce its MAC address, and [`transport::F_RX_PUSH`] unless
//! `--push off`.
//!
//! # The data path (see [`port`] and [`push`])
//! Each port is the peer side of an ordinary link. One thread forwards:
//! for each port it takes the member's TX chains (checked, as any peer's),
//! reads the Ethernet header, learns the source address on that port
//! ([`table`]), looks the destination up, and copies the frame to the
//! destination, or to every other port for broadcast, multicast and
//! unknown unicast (flooding); never back out of the port it came in on.
//! Then it completes the member's chain and kicks whoever asked to be
//! kicked. Where the one copy lands depends on the destination port:
//!
//! * a **push** port (a synthetic member with `--share guest` offered
//!   `F_RX_PUSH`, and we did): straight into an RX buffer the member
//!   posted; the switch is the device of its RX ring ([`push`]) and the
//!   member's copier idles. One copy per hop, as on a direct link.
//! * a **pull** port (a `vhost-user` or `--share exchange` member, one
//!   that captures, an older build, `--push off`): into the port's own TX
//!   ring, from which the member's copier pulls it as from any peer: one
//!   extra copy per hop.
//!
//! # Flow control: a slow member stalls only itself
//! A destination whose ring is full (pull: the port's TX ring; push: no
//! RX buffer posted) gets [`SwitchConfig::hold`] (default
//! 250 ms) to make room. Meanwhile the source's chain waits at the head of
//! *its own* ring — the frames of every other port keep moving — and the
//! switch sleeps until the destination frees a slot or posts a buffer (it
//! asked for that kick) or the hold ends: a held frame is not work to the
//! re-check before sleeping ([`port::Port::held`]; until round 2 session
//! 6 it was, and a switch spun through every hold at full speed, on the
//! CPU the destination's member needed to make room). A destination still full after
//! the hold is *congested*: frames for it are dropped at once and counted
//! (`no_room`) until it has room again, so one member that stopped reading
//! costs each sender at most one hold, never a stall. `--hold-ms 0` drops
//! at once.
//!
//! # Waiting: the launcher's one wait loop
//! The forwarding thread is a [`crate::wait::Device`] driven by the same
//! [`crate::wait::WaitLoop`] as every launcher (`--wait`, default
//! `adaptive`): a turn reaps, forwards and flushes every port; an idle
//! switch re-arms every member's notifications, fences, re-checks and only
//! then sleeps in `poll(2)` on all their links. `adaptive` spins first for
//! a budget calibrated from a measured wake-up (counted as at most 8 µs
//! by `spin_wakeup`: a long spin takes the CPU the members need; a push
//! member's own spin is counted the same way), so under load the members
//! rarely need to kick the switch (event-idx suppression) and the
//! switch rarely sleeps. A turn publishes each source's completions and
//! its destinations' frames as soon as that source's burst is done, not
//! after every other source's: its stream refills and its sink drains
//! while the switch serves the next one (`serve.rs`).
//!
//! # Per-frame work, per burst
//! A turn takes up to 256 chains (`BATCH`) from one member. Within that burst
//! the source address is learned once per distinct MAC and the last
//! destination lookup is reused ([`table::Burst`]); the source port's
//! counters are added once per burst; the rings are published after each
//! source's burst, and a member is kicked only when its suppression state
//! asks ([`port::Port::flush`]: with event-idx, once per index it sets).
//! Into a push port, a run of plain frames with the same two addresses
//! goes the copier's way (`burst.rs`): each chain of both rings read and
//! checked once, the run routed once, the copies made span to span.
//!
//! # Members come and go
//! A member that leaves or dies is noticed on its transport (hang-up); its
//! port is freed and the addresses learned there forgotten, without
//! touching the other ports. Its memory stays mapped until then, so a
//! member dying mid-frame cannot make the switch fault. A member that
//! joins later gets a free port at once.
//!
//! # A member that comes back keeps its port
//! On `fifo:` the path names the port (`PATH.N`), so a member that comes
//! back is on its old port by construction. On `unix:`/`eventfd:` every
//! member uses one path, so the switch recognises a returning member by
//! its MAC address, the first thing it sends (a synthetic guest's hello; a
//! VM's first ARP or neighbour solicitation): when a member leaves, the
//! addresses learned on its port are remembered with the port for the
//! `--aging` time ([`table::Departed`]). A new member is given the lowest
//! free port that no departed member is remembered on (a remembered port
//! only when no other is free), and if the first frame it sends comes
//! from a remembered address whose port is free, it moves to that port
//! before the frame is forwarded. So a member restarted with the same
//! `--mac`/`--name` (or a VM whose launcher restarted with `--reconnect`)
//! is the same port number in the stats and to `status`.

mod accept;
mod burst;
mod capture;
mod counts;
mod forward;
pub mod port;
pub mod profile;
pub mod push;
mod serve;
mod sleep;
pub mod stats;
mod status;
pub mod table;
mod turn;

use crate::cli::config::{Spec, Wait};
use crate::link::{dispatch, WithTransport};
use crate::virtq::NotifyMode;
use serve::Switch;
use stats::SwitchStats;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use transport::Transport;

/// The wake-up cost `--wait adaptive` calibrates its spin from, for the
/// switch and for a member whose RX ring the switch serves (push): a
/// measured wake-up counts for at most [`serve::MAX_WAKEUP`]. On two
/// shared vCPUs a measured wake-up is mostly a wait for a CPU (40–120 µs),
/// and a budget of up to eight of them spins through every gap between
/// the switch's bursts on the CPU the switch and the other members need
/// (round 2, session 8: push members at 190–360 µs of budget spent 3–5x
/// the CPU of the others; BENCHMARKS.md).
pub(crate) fn spin_wakeup(measured: Duration) -> Duration {
    measured.min(serve::MAX_WAKEUP)
}

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
/// Chains taken from one member per turn: a default ring's worth. A turn
/// ends with one publish and at most one kick per destination, so the
/// larger the burst the fewer wake-ups each member pays per frame
/// (measured: 64 gave a kick per ~70 frames, 256 one per ~200); every
/// other member still gets its turn after at most one such burst.
/// Publishing after every burst instead (so a member gets its TX buffers
/// back while the switch serves the others) was measured too: 2.4x the
/// kicks and sleeps per frame in bursts of 64, and no consistent gain in
/// bursts of 256 (same-run A/B, medians of 5–6 rounds: 2 pairs 2.17x the
/// direct CPU against 2.05x, 4 pairs 2.19x against 2.95x).
const BATCH: u16 = 256;

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
    /// Pin the forwarding thread to this CPU, 0..N-1 [default: not
    /// pinned]. On a small machine, members pinned to the same CPU cost
    /// less per frame than members the scheduler spreads (BENCHMARKS.md,
    /// "After round 2, session 9").
    #[arg(long, value_name = "N", value_parser = crate::cli::parse_cpu)]
    pub cpu: Option<usize>,
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
    /// What the switch does when nothing moves: `sleep` (re-arm every
    /// member's notifications, re-check, sleep in poll), `spin` (poll the
    /// rings; a busy core), `adaptive` (spin for a budget calibrated from a
    /// measured wake-up, counted as at most 8 µs, and adjusted as `--wait
    /// adaptive` of a launcher does, then sleep) [default: adaptive].
    #[arg(long, value_enum)]
    pub wait: Option<Wait>,
    /// With `--wait adaptive`: start the spin budget at this many
    /// microseconds instead of the measured wake-up cost. Given without
    /// `--wait`: 0 means `--wait sleep`, more means `adaptive` starting
    /// there.
    #[arg(long, value_name = "US")]
    pub spin_us: Option<u64>,
    /// Serve the RX ring of every member that offers it (a synthetic
    /// guest with `--share guest`): each frame is copied once, straight
    /// into the destination member's RX buffer (`on`), instead of onto the
    /// port's ring for the member's copier to copy again (`off`: every
    /// port pulls) [default: on].
    #[arg(long, value_enum, value_name = "on|off")]
    pub push: Option<Push>,
    /// `--capture FILE.pcapng [--snaplen BYTES]`: one interface per port
    /// (`port-N`), frames in and out, drops with their reason (see
    /// `switch/capture.rs`).
    #[command(flatten)]
    pub capture: crate::capture::CaptureArgs,
}

/// `switch --push`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Push {
    /// Push into the RX rings of members that offer it.
    On,
    /// Every port pulls (one more copy per hop).
    Off,
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
    /// What to do when nothing moves.
    pub wait: Wait,
    /// Where `adaptive`'s spin budget starts (`None`: the measured
    /// wake-up cost of this transport).
    pub spin: Option<Duration>,
    /// `--push on`: offer [`transport::F_RX_PUSH`] (see [`push`]).
    pub push: bool,
    /// `--cpu N`: the CPU the forwarding thread is pinned to.
    pub cpu: Option<usize>,
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
    let cpu = args.cpu.or(prof.cpu);
    if let Some(cpu) = cpu.filter(|&c| !crate::cli::cpu_allowed(c)) {
        let e = crate::cli::UsageError::NoSuchCpu {
            cpu,
            online: crate::cli::online_cpus(),
            section: "switch",
        };
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let spin_us = args.spin_us.or(prof.spin_us);
    let wait = match (args.wait.or(prof.wait), spin_us) {
        (Some(w), _) => w,
        (None, Some(0)) => Wait::Sleep,
        (None, _) => Wait::Adaptive,
    };
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
        wait,
        spin: spin_us.filter(|&us| us > 0).map(Duration::from_micros),
        push: match args.push {
            Some(p) => p == Push::On,
            None => prof.push.unwrap_or(true),
        },
        cpu,
    };
    // `--capture`/`--snaplen` win over the profile's `capture`/`snaplen`.
    let capture = crate::capture::CaptureArgs {
        capture: args.capture.capture.clone().or(prof.capture.clone()),
        snaplen: args.capture.snaplen.or(prof.snaplen),
    };
    if capture.capture.is_none() && capture.snaplen.is_some() {
        eprintln!(
            "error: [switch] snaplen needs a capture: add `capture = \"FILE.pcapng\"` to [switch] or give --capture"
        );
        return ExitCode::from(2);
    }
    if let Some(c) = capture.config() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_measured_wakeup_counts_for_at_most_eight_microseconds() {
        let us = Duration::from_micros;
        assert_eq!(spin_wakeup(us(3)), us(3), "a quick wake-up is taken as is");
        assert_eq!(spin_wakeup(us(40)), us(8), "a loaded machine's is capped");
        // The budget it calibrates stays under eight of the cap.
        let b = crate::wait::SpinBudget::calibrated(spin_wakeup(us(120)));
        assert_eq!(b.bounds().1, us(64));
    }
}
