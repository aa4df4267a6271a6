//! Seeing the link: what `--capture` costs, and what the link's wake-ups
//! and drops looked like, measured in the same run as the matrix.
//!
//! The capture cost is a pair of cells that differ only in the sink's
//! `--capture FILE --snaplen 128`: a one-way stream of 1500 B frames
//! (`--payload verify`, the matrix's `stream` rows) over eventfd,
//! event-idx, `--wait sleep` (so CPU time is work, not spinning), the two
//! sides pinned apart as the matrix pins them. Without and with capture
//! alternate, run after run, so drift on a shared machine hits both
//! alike. The figure is the sink process's CPU per packet (copier, guest
//! and the capture writer thread together, `getrusage`), the median of
//! the runs of each; the target is with ≤ [`TARGET`] × without. The file
//! lives in the run's scratch directory (the machine's temporary
//! directory, a disk file system here). `bench --switch --switch-pairs 0
//! --json FILE` runs this section alone (no matrix cell, baseline or
//! switch row): its figures are the JSON's `capture` object.
//!
//! The same runs report, under the stats JSON's own names: the drops by
//! reason of both sides (`drops_by_reason`; the capture's comments and
//! `status` use the same names), what the capture wrote and skipped
//! (`capture_records`, `capture_skipped`), and the sink's wake-up latency
//! histogram (`wakeup_latency_log2_ns`, summed over the runs without
//! capture) with its `wakeups`, which the histogram's counts plus
//! `wakeup_latency_unstamped` equal.

use super::error::BenchError;
use super::json::read_stats;
use super::matrix::pair_cpus;
use super::pair::{launcher_command, run_pair};
use super::targets::Target;
use crate::stats::Stats;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The capture's CPU per packet may be at most this many times the
/// uncaptured one.
pub const TARGET: f64 = 1.3;
/// `--snaplen` of the captured runs.
pub const SNAPLEN: u32 = 128;
/// Frame size of the cells.
pub const SIZE: u32 = 1500;

/// The section's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CaptureCost {
    /// Packets per run.
    pub packets: u64,
    /// The sink's CPU per packet without capture, ns, each run.
    pub off_ns_per_packet: Vec<f64>,
    /// The same with `--capture --snaplen 128`.
    pub on_ns_per_packet: Vec<f64>,
    /// Medians of the two.
    pub off_median_ns: Option<f64>,
    /// See `off_median_ns`.
    pub on_median_ns: Option<f64>,
    /// `on_median_ns / off_median_ns`.
    pub ratio: Option<f64>,
    /// Records the captured runs wrote, in all.
    pub capture_records: u64,
    /// Records they skipped (writer behind), in all.
    pub capture_skipped: u64,
    /// Drops by reason of both sides over every run (stats names).
    pub drops_by_reason: BTreeMap<String, u64>,
    /// The sink's wake-up latency histogram over the runs without capture.
    pub wakeup_latency_log2_ns: Vec<u64>,
    /// The sink's notified wake-ups in those runs.
    pub wakeups: u64,
    /// Of those, unstamped.
    pub wakeup_latency_unstamped: u64,
    /// Runs that failed, with why.
    pub failures: Vec<String>,
}

fn launcher(
    spec: &str,
    workload: &str,
    count: u64,
    json: &Path,
    cpu: Option<usize>,
    timeout: Duration,
) -> Command {
    let mut c = launcher_command(spec, workload, count, cpu);
    c.args(["--size", &SIZE.to_string()])
        .args(["--notify", "event-idx", "--wait", "sleep"])
        .args(["--payload", "verify", "--quiet"])
        .args(["--timeout", &format!("{:.1}", timeout.as_secs_f64())])
        .arg("--stats-json")
        .arg(json);
    c
}

/// One pair; the sink's and the stream's stats.
fn once(
    dir: &Path,
    tag: &str,
    count: u64,
    capture: bool,
    timeout: Duration,
) -> Result<(Stats, Stats), BenchError> {
    let path = dir.join(format!("capture-{tag}"));
    let spec = format!("eventfd:{}", path.display());
    let (ja, jb) = (path.with_extension("a.json"), path.with_extension("b.json"));
    let pcap = path.with_extension("pcapng");
    let (cpu_a, cpu_b) = pair_cpus();
    let mut a = launcher(&spec, "sink", count, &ja, cpu_a, timeout);
    if capture {
        a.arg("--capture")
            .arg(&pcap)
            .args(["--snaplen", &SNAPLEN.to_string()]);
    }
    let b = launcher(&spec, "stream", count, &jb, cpu_b, timeout);
    let result = run_pair(a, b, timeout + Duration::from_secs(5)).and_then(|(fa, fb)| {
        if let Some(e) = fa.failure("sink").or_else(|| fb.failure("stream")) {
            return Err(e);
        }
        Ok((read_stats(&ja)?, read_stats(&jb)?))
    });
    for p in [&ja, &jb, &pcap, &path] {
        let _ = std::fs::remove_file(p);
    }
    result
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Run `runs` alternating pairs of `count` packets each; `tick` after each
/// run.
pub fn measure(
    runs: u32,
    count: u64,
    dir: &Path,
    timeout: Duration,
    mut tick: impl FnMut(),
) -> CaptureCost {
    let mut c = CaptureCost {
        packets: count,
        ..Default::default()
    };
    for run in 0..runs {
        for capture in [false, true] {
            let tag = format!("{run}-{}", if capture { "on" } else { "off" });
            match once(dir, &tag, count, capture, timeout) {
                Ok((sink, stream)) => {
                    let ns = sink.cpu_s * 1e9 / sink.packets_copied.max(1) as f64;
                    for s in [&sink, &stream] {
                        for (k, v) in &s.drops_by_reason {
                            *c.drops_by_reason.entry(k.clone()).or_default() += v;
                        }
                    }
                    if capture {
                        c.on_ns_per_packet.push(ns);
                        c.capture_records += sink.capture_records;
                        c.capture_skipped += sink.capture_skipped;
                    } else {
                        c.off_ns_per_packet.push(ns);
                        c.wakeups += sink.wakeups;
                        c.wakeup_latency_unstamped += sink.wakeup_latency_unstamped;
                        for (i, n) in sink.wakeup_latency_log2_ns.iter().enumerate() {
                            if c.wakeup_latency_log2_ns.len() <= i {
                                c.wakeup_latency_log2_ns.resize(i + 1, 0);
                            }
                            c.wakeup_latency_log2_ns[i] += n;
                        }
                    }
                }
                Err(e) => c.failures.push(format!("{tag}: {e}")),
            }
            tick();
        }
    }
    c.off_median_ns = median(&c.off_ns_per_packet);
    c.on_median_ns = median(&c.on_ns_per_packet);
    if let (Some(off), Some(on)) = (c.off_median_ns, c.on_median_ns) {
        c.ratio = Some(on / off);
    }
    c
}

impl CaptureCost {
    /// The capture target, checked.
    pub fn target(&self) -> Target {
        let target = format!(
            "--capture --snaplen {SNAPLEN} ≤ {TARGET}× CPU per packet, stream {SIZE} B (sink)"
        );
        match (self.off_median_ns, self.on_median_ns, self.ratio) {
            (Some(off), Some(on), Some(r)) => Target {
                target,
                measured: format!(
                    "{r:.2}× ({on:.0} vs {off:.0} ns per packet, eventfd event-idx sleep, same run)"
                ),
                met: Some(r <= TARGET),
            },
            _ => Target {
                target,
                measured: "no data (the capture cells failed)".into(),
                met: None,
            },
        }
    }

    /// The Markdown section.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## Seeing the link\n");
        let _ = writeln!(
            s,
            "Capture cost: sink CPU per packet (whole process), stream {SIZE} B, eventfd, \
             event-idx, wait sleep, {} packets per run, without and with `--capture FILE \
             --snaplen {SNAPLEN}` alternating.\n",
            self.packets
        );
        let _ = writeln!(
            s,
            "| capture | ns per packet, median | runs | ratio | target |"
        );
        let _ = writeln!(s, "|---|--:|---|--:|---|");
        let runs = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let fmt = |v: Option<f64>| v.map_or("-".into(), |x| format!("{x:.0}"));
        let _ = writeln!(
            s,
            "| off | {} | {} | 1.00 | |",
            fmt(self.off_median_ns),
            runs(&self.off_ns_per_packet)
        );
        let _ = writeln!(
            s,
            "| on | {} | {} | {} | ≤ {TARGET}× {} |",
            fmt(self.on_median_ns),
            runs(&self.on_ns_per_packet),
            self.ratio.map_or("-".into(), |r| format!("{r:.2}")),
            match self.ratio {
                Some(r) if r <= TARGET => "met",
                Some(_) => "missed",
                None => "no data",
            }
        );
        let drops = if self.drops_by_reason.is_empty() {
            "none".to_string()
        } else {
            self.drops_by_reason
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            s,
            "\ncapture_records {}, capture_skipped {}; drops_by_reason (both sides, every run): {drops}.\n",
            self.capture_records, self.capture_skipped
        );
        let hist = crate::status::histogram_line(&self.wakeup_latency_log2_ns);
        let q = |q| crate::wait::latency::quantile_us(&self.wakeup_latency_log2_ns, q);
        let _ = writeln!(
            s,
            "Sink wake-up latency in the run (kick to running, runs without capture): \
             {} wakeups, {} unstamped; p50 ≤ {} µs, p99 ≤ {} µs; log2 buckets {hist}.\n",
            self.wakeups,
            self.wakeup_latency_unstamped,
            q(0.5).map_or("-".into(), |x| format!("{x:.1}")),
            q(0.99).map_or("-".into(), |x| format!("{x:.1}")),
        );
        for f in &self.failures {
            let _ = writeln!(s, "- failed: {f}");
        }
        s
    }
}
