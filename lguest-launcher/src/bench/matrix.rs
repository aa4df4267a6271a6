//! The matrix: which sharenet cells run (how one is measured: `cell.rs`).
//!
//! The axes are transport (fifo, unix, eventfd) × notify (always, flags,
//! event-idx) × writes (blocking, nonblocking) × wait (sleep, spin,
//! adaptive), for two workloads: a one-way stream at 64, 1500 and 9000 B,
//! and a 64 B ping-pong. The full cross product is 3·3·2·3 = 54
//! configurations per workload and size; the plan prunes where an axis
//! cannot change the outcome (see [`plan`] and the notes it returns), yet
//! every value of every axis appears somewhere.
//!
//! A cell is two launcher processes — this very binary, spawned twice with
//! the same `--sharenet KIND:PATH` on a fresh path — each with its own
//! `--timeout` and `--stats-json`. The measuring side is the receiver
//! (`sink`) for a stream and the `ping` side for latency; its peer runs
//! `stream` or `echo`. Both stats objects are read: throughput is the
//! packets received over the longer of the two elapsed times (the
//! conservative reading), notifications and wake-ups are the sum of both
//! sides, and CPU time is the sum of both processes' `getrusage`.

use super::baselines::{Baseline, BaselineKind};
use super::row::RowKey;
use super::BenchArgs;
use crate::cli::config::{Kind, Wait, Writes};
use crate::virtq::NotifyMode;

mod cell;

pub use cell::{measure, pair_cpus, run_cell};

/// What a cell's pair does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellWorkload {
    /// `sink` ← `stream`, one way.
    Stream,
    /// `sink` ← `stream` with `--payload stamp`: the link's own cost,
    /// compared with `baseline-spsc-batched`.
    StampStream,
    /// [`CellWorkload::StampStream`] with `--share exchange` on both sides:
    /// what exposing only an exchange area to the peer costs a synthetic
    /// guest, against the stamped stream of the same configuration.
    ExchangeStream,
    /// `sink` ← `stream --rate` [`PACED_RATE`], `--payload stamp`: CPU per
    /// packet of a wait mode on a lightly loaded link.
    Paced,
    /// `ping` ↔ `echo`, 64 B.
    Ping,
    /// `sink --offloads on|off` ← `stream --gso`: 64 KiB TCP GSO frames
    /// delivered whole or segmented in software (see [`super::gso`]).
    Gso {
        /// The sink's `--offloads on`.
        offloads: bool,
    },
}

impl CellWorkload {
    /// The row's `workload`.
    pub fn name(self) -> &'static str {
        match self {
            CellWorkload::Stream => "stream",
            CellWorkload::StampStream => "stream-stamp",
            CellWorkload::ExchangeStream => "stream-stamp-exchange",
            CellWorkload::Paced => "stream-10kpps",
            CellWorkload::Ping => "ping",
            CellWorkload::Gso { offloads: true } => super::gso::ON,
            CellWorkload::Gso { offloads: false } => super::gso::OFF,
        }
    }
}

/// Packets per second of the paced cells (`stream-10kpps`).
pub const PACED_RATE: u64 = 10_000;
/// Packets per paced run (quick, full): one and two seconds.
const PACED_PACKETS: (u64, u64) = (10_000, 20_000);

/// One configuration of the matrix.
#[derive(Clone, Debug)]
pub struct Cell {
    /// Transport.
    pub kind: Kind,
    /// Notification suppression.
    pub notify: NotifyMode,
    /// Notification writes.
    pub writes: Writes,
    /// Idle behaviour.
    pub wait: Wait,
    /// Frame size in bytes.
    pub size: u32,
    /// Stream or ping.
    pub workload: CellWorkload,
    /// Packets (stream) or round trips (ping) per run.
    pub count: u64,
}

/// Runs of a stamped spin cell (`stream-stamp`, `--wait spin`) whenever
/// the bench repeats cells at all (`--runs` above 1): the check that the
/// slowest of 5 back-to-back runs is at least 0.7× the fastest (no slow
/// mode, issue 13) needs 5 of them.
pub const STABILITY_RUNS: u32 = 5;

/// `runs`, raised to [`STABILITY_RUNS`] unless a single run was asked for
/// (the CI smoke test): for the cells whose median needs more than three.
pub fn at_least_stability_runs(runs: u32) -> u32 {
    if runs > 1 {
        runs.max(STABILITY_RUNS)
    } else {
        runs
    }
}

impl Cell {
    /// How many times to run this cell when the bench asks for `runs`:
    /// [`STABILITY_RUNS`] at least for a stamped spin cell, unless a single
    /// run was asked for (the CI smoke test).
    pub fn runs(&self, runs: u32) -> u32 {
        if self.workload == CellWorkload::StampStream && self.wait == Wait::Spin {
            at_least_stability_runs(runs)
        } else {
            runs
        }
    }

    /// `--payload` for both sides: stamps for the link-cost and paced
    /// cells, full verification for the matrix.
    fn payload(&self) -> &'static str {
        match self.workload {
            CellWorkload::StampStream | CellWorkload::ExchangeStream | CellWorkload::Paced => {
                "stamp"
            }
            CellWorkload::Stream | CellWorkload::Ping | CellWorkload::Gso { .. } => "verify",
        }
    }

    /// A short label for the progress bar.
    pub fn label(&self) -> String {
        format!(
            "{} {} {}/{}/{} {} B",
            self.kind.name(),
            self.workload.name(),
            self.notify.name(),
            self.writes.name(),
            self.wait.name(),
            self.size
        )
    }

    fn key(&self) -> RowKey {
        RowKey {
            transport: self.kind.name().into(),
            notify: Some(self.notify.name().into()),
            writes: Some(self.writes.name().into()),
            wait: Some(self.wait.name().into()),
            size: self.size,
            workload: self.workload.name().into(),
        }
    }
}

/// Everything one benchmark run will do.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The sharenet cells, in report order.
    pub cells: Vec<Cell>,
    /// The baselines, in report order.
    pub baselines: Vec<Baseline>,
    /// Runs per cell and per baseline.
    pub runs: u32,
    /// Counts per run, for the report.
    pub counts: Vec<(String, u64)>,
    /// What was left out of the full cross product, and why.
    pub pruning: Vec<String>,
    /// Packets per run of the capture-cost pairs ([`super::capture`]).
    pub capture_packets: u64,
}

/// Stream packets per run (before `--count-scale`): (quick, full).
const STREAM_PACKETS: (u64, u64) = (500_000, 1_000_000);
/// Jumbo frames take longer per packet: fewer of them.
const STREAM_PACKETS_9000: u64 = 300_000;
/// Round trips per ping run: (quick, full).
const PINGS: (u64, u64) = (2_000, 5_000);
/// Runs per cell, quick and full alike: three is the fewest whose median
/// is a real run and whose min–max can show one run straying (`--help`
/// and BENCHMARKS.md say the same).
pub const RUNS: u32 = 3;

fn scaled(n: u64, scale: f64, min: u64) -> u64 {
    ((n as f64 * scale).round() as u64).max(min)
}

/// The (notify, writes, wait) configurations of a full run.
///
/// `writes` only decides anything when a notification write can find the
/// channel full, which takes many un-suppressed notifications: with
/// `always` and `flags` both values run; with `event-idx` (a notification
/// every ring's worth of packets or less) only `nonblocking`, the default.
fn full_configs() -> Vec<(NotifyMode, Writes, Wait)> {
    let mut v = Vec::new();
    for notify in [NotifyMode::Always, NotifyMode::Flags, NotifyMode::EventIdx] {
        let writes: &[Writes] = if notify == NotifyMode::EventIdx {
            &[Writes::Nonblocking]
        } else {
            &[Writes::Blocking, Writes::Nonblocking]
        };
        for &w in writes {
            for wait in [Wait::Sleep, Wait::Spin, Wait::Adaptive] {
                v.push((notify, w, wait));
            }
        }
    }
    v
}

/// Ping configurations of a full run: every notify × wait with
/// nonblocking writes, plus blocking writes once (always, sleep) — a ping
/// has at most one packet in flight, so a notification channel never fills
/// and `writes` cannot matter beyond that check.
fn full_ping_configs() -> Vec<(NotifyMode, Writes, Wait)> {
    let mut v = Vec::new();
    for notify in [NotifyMode::Always, NotifyMode::Flags, NotifyMode::EventIdx] {
        for wait in [Wait::Sleep, Wait::Spin, Wait::Adaptive] {
            v.push((notify, Writes::Nonblocking, wait));
        }
    }
    v.push((NotifyMode::Always, Writes::Blocking, Wait::Sleep));
    v
}

/// The quick subset: notify always and event-idx, nonblocking writes, and
/// every wait mode — `adaptive` is the default, so a quick run must show it.
fn quick_configs() -> Vec<(NotifyMode, Writes, Wait)> {
    let mut v = Vec::new();
    for notify in [NotifyMode::Always, NotifyMode::EventIdx] {
        for wait in [Wait::Sleep, Wait::Spin, Wait::Adaptive] {
            v.push((notify, Writes::Nonblocking, wait));
        }
    }
    v
}

/// Decide what this run measures.
pub fn plan(args: &BenchArgs) -> Plan {
    let quick = args.quick;
    let pick = |(q, f): (u64, u64)| if quick { q } else { f };
    let scale = args.count_scale;
    let stream_n = scaled(args.packets.unwrap_or(pick(STREAM_PACKETS)), scale, 1);
    let stream_n_9000 = scaled(args.packets.unwrap_or(STREAM_PACKETS_9000), scale, 1);
    let pings = scaled(args.pings.unwrap_or(pick(PINGS)), scale, 10);
    let runs = args.runs.unwrap_or(RUNS);
    let kinds: Vec<Kind> = if args.transports.is_empty() {
        Kind::ALL.to_vec()
    } else {
        Kind::ALL
            .into_iter()
            .filter(|k| args.transports.contains(k))
            .collect()
    };
    let sizes: &[u32] = if quick {
        &[64, 1500]
    } else {
        &[64, 1500, 9000]
    };
    let (stream_cfgs, ping_cfgs) = if quick {
        (quick_configs(), quick_configs())
    } else {
        (full_configs(), full_ping_configs())
    };

    let mut cells = Vec::new();
    for &size in sizes {
        for &kind in &kinds {
            for &(notify, writes, wait) in &stream_cfgs {
                cells.push(Cell {
                    kind,
                    notify,
                    writes,
                    wait,
                    size,
                    workload: CellWorkload::Stream,
                    count: if size > 1500 { stream_n_9000 } else { stream_n },
                });
            }
        }
    }
    for &kind in &kinds {
        for &(notify, writes, wait) in &ping_cfgs {
            cells.push(Cell {
                kind,
                notify,
                writes,
                wait,
                size: 64,
                workload: CellWorkload::Ping,
                count: pings,
            });
        }
    }

    // The link's own cost and the wait modes' CPU, on one transport
    // (eventfd when it runs): stamped streams in the polling modes at 64
    // and 1500 B, against `baseline-spsc-batched`; and a paced 64 B stream
    // sleeping and adaptive.
    let paced_n = scaled(pick(PACED_PACKETS), scale, 10);
    if let Some(&kind) = kinds
        .iter()
        .find(|&&k| k == Kind::Eventfd)
        .or(kinds.first())
    {
        let cell = |workload, wait, size, count| Cell {
            kind,
            notify: NotifyMode::EventIdx,
            writes: Writes::Nonblocking,
            wait,
            size,
            workload,
            count,
        };
        for size in [64, 1500] {
            for wait in [Wait::Spin, Wait::Adaptive] {
                cells.push(cell(CellWorkload::StampStream, wait, size, stream_n));
            }
            cells.push(cell(
                CellWorkload::ExchangeStream,
                Wait::Spin,
                size,
                stream_n,
            ));
        }
        for wait in [Wait::Sleep, Wait::Adaptive] {
            cells.push(cell(CellWorkload::Paced, wait, 64, paced_n));
        }
        let gso_n = scaled(pick(super::gso::FRAMES), scale, 10);
        for offloads in [true, false] {
            let w = CellWorkload::Gso { offloads };
            cells.push(cell(w, Wait::Spin, super::gso::SIZE, gso_n));
        }
    }

    let baselines = super::baselines::plan(quick, scale);
    let mut counts = vec![
        ("stream packets".to_string(), stream_n),
        ("stream packets at 9000 B".to_string(), stream_n_9000),
        ("pings".to_string(), pings),
        (format!("paced packets at {PACED_RATE} pps"), paced_n),
    ];
    if quick {
        counts.remove(1);
    }
    for b in &baselines {
        let name = match b.kind {
            BaselineKind::Seqpacket => "seqpacket packets",
            BaselineKind::Spsc => "SPSC packets",
            BaselineKind::SpscBatched => "batched SPSC packets",
            BaselineKind::Memcpy => "memcpy copies",
            BaselineKind::Devq(_) => "devq chains",
            BaselineKind::Rtt(_) => "raw round trips",
        };
        let name = format!("{name} at {} B", b.size);
        if !counts.iter().any(|(k, _)| *k == name) {
            counts.push((name, b.count));
        }
    }

    let mut pruning = vec![
        "writes=blocking runs only with notify always and flags: with event-idx a notification \
         goes out at most once per ring's worth of packets, so the channel never fills and the \
         write mode cannot matter."
            .to_string(),
        "Ping runs every notify × wait with nonblocking writes, plus always/blocking/sleep once: \
         one packet in flight never fills a notification channel."
            .to_string(),
    ];
    if quick {
        pruning = vec![
            "--quick: notify always and event-idx only (no flags), writes nonblocking only, every \
             wait mode (sleep, spin, adaptive), sizes 64 and 1500 B only (no 9000); every baseline \
             runs, with smaller counts."
                .to_string(),
        ];
    }
    pruning.insert(
        0,
        match pair_cpus() {
            (Some(a), Some(b)) => format!(
                "Each pair's two launchers are pinned to different CPUs (the measuring side \
                 --cpu {a}, its peer --cpu {b})."
            ),
            _ => "Pairs are not pinned: fewer than two CPUs are available to this process."
                .to_string(),
        },
    );
    if kinds.len() < Kind::ALL.len() {
        pruning.push(format!(
            "--transports: only {}.",
            kinds
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Plan {
        cells,
        baselines,
        runs,
        counts,
        pruning,
        capture_packets: stream_n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn plan_of(args: &[&str]) -> Plan {
        let w = Wrap::parse_from(std::iter::once("bench").chain(args.iter().copied()));
        plan(&w.bench)
    }

    #[test]
    fn quick_and_full_both_run_three_times_by_default() {
        assert_eq!(plan_of(&["--quick"]).runs, 3);
        assert_eq!(plan_of(&[]).runs, 3);
        assert_eq!(plan_of(&["--quick", "--runs", "1"]).runs, 1);
    }

    #[test]
    fn quick_includes_the_default_wait_mode_for_stream_and_ping() {
        let p = plan_of(&["--quick"]);
        for w in [CellWorkload::Stream, CellWorkload::Ping] {
            assert!(
                p.cells
                    .iter()
                    .any(|c| c.workload == w && c.wait == Wait::Adaptive),
                "no adaptive {w:?} cell in --quick"
            );
        }
    }
}
