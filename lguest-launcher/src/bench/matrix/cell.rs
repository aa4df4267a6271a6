//! How one cell is measured: its pair of launchers (pinned apart), their
//! stats read back and folded into a [`Measurement`], `runs` times into a
//! row.

use super::{Cell, CellWorkload, PACED_RATE};
use crate::bench::error::BenchError;
use crate::bench::json::read_stats;
use crate::bench::measure::measure as measure_runs;
use crate::bench::pair::{launcher_command, run_pair};
use crate::bench::row::Row;
use crate::bench::summary::Measurement;
use crate::stats::Stats;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Run one cell `runs` times and fold the runs into a row. `tick` is
/// called after each run (the progress bar).
pub fn measure(
    cell: &Cell,
    index: usize,
    runs: u32,
    dir: &Path,
    timeout: Duration,
    tick: impl FnMut(),
) -> Row {
    let headline = match cell.workload {
        CellWorkload::Stream
        | CellWorkload::StampStream
        | CellWorkload::ExchangeStream
        | CellWorkload::Gso { .. } => "mpps",
        CellWorkload::Paced => "cpu_s_per_mpkt",
        CellWorkload::Ping => "p50_us",
    };
    let once = |run: u32| {
        let path = dir.join(format!("c{index}-r{run}"));
        let result = run_cell(cell, &path, timeout);
        // A killed pair may leave its rendezvous path behind; each run
        // has a fresh one anyway, and the scratch directory goes at the end.
        let _ = std::fs::remove_file(&path);
        result
    };
    measure_runs(cell.key(), runs, headline, once, tick)
}

/// CPUs for the two sides of a pair: 1 and 0 when this process may use
/// both, else unpinned.
pub fn pair_cpus() -> (Option<usize>, Option<usize>) {
    if crate::cli::online_cpus() >= 2 && crate::cli::cpu_allowed(0) && crate::cli::cpu_allowed(1) {
        (Some(1), Some(0))
    } else {
        (None, None)
    }
}

fn launcher(
    cell: &Cell,
    spec: &str,
    workload: &str,
    json: &Path,
    timeout: Duration,
    cpu: Option<usize>,
) -> Command {
    let mut c = launcher_command(spec, workload, cell.count, cpu);
    c.args(["--size", &cell.size.to_string()])
        .args(["--notify", cell.notify.name()])
        .args(["--writes", cell.writes.name()])
        .args(["--wait", cell.wait.name()])
        .args(["--payload", cell.payload()])
        .args([
            "--share",
            if cell.workload == CellWorkload::ExchangeStream {
                "exchange"
            } else {
                "guest"
            },
        ])
        .args(["--timeout", &format!("{:.1}", timeout.as_secs_f64())])
        .arg("--quiet")
        .arg("--stats-json")
        .arg(json);
    c
}

/// Run one pair of launchers for `cell`, meeting at `path`.
pub fn run_cell(cell: &Cell, path: &Path, timeout: Duration) -> Result<Measurement, BenchError> {
    let spec = format!("{}:{}", cell.kind.name(), path.display());
    let json_a = path.with_extension("a.json");
    let json_b = path.with_extension("b.json");
    let (wa, wb) = match cell.workload {
        CellWorkload::Stream
        | CellWorkload::StampStream
        | CellWorkload::ExchangeStream
        | CellWorkload::Paced
        | CellWorkload::Gso { .. } => ("sink", "stream"),
        CellWorkload::Ping => ("ping", "echo"),
    };
    // The two sides on different CPUs when there are two: a spinning pair
    // then never shares a core, and runs compare like with like.
    let (cpu_a, cpu_b) = pair_cpus();
    let mut a = launcher(cell, &spec, wa, &json_a, timeout, cpu_a);
    let mut b = launcher(cell, &spec, wb, &json_b, timeout, cpu_b);
    if cell.workload == CellWorkload::Paced {
        b.args(["--rate", &PACED_RATE.to_string()]);
    }
    if let CellWorkload::Gso { offloads } = cell.workload {
        a.args(["--offloads", if offloads { "on" } else { "off" }]);
        b.arg("--gso");
    }
    // The launchers' own --timeout ends them; the pair deadline is the
    // backstop (their watchdog allows two more seconds).
    let (fa, fb) = run_pair(a, b, timeout + Duration::from_secs(5))?;
    let result = (|| {
        if let Some(e) = fa.failure(wa).or_else(|| fb.failure(wb)) {
            return Err(e);
        }
        let sa = read_stats(&json_a)?;
        let sb = read_stats(&json_b)?;
        measurement(cell, &sa, &sb)
    })();
    let _ = std::fs::remove_file(&json_a);
    let _ = std::fs::remove_file(&json_b);
    result
}

/// Figures from the measuring side's stats `a` and its peer's `b`.
fn measurement(cell: &Cell, a: &Stats, b: &Stats) -> Result<Measurement, BenchError> {
    for (v, side) in [(a, "a"), (b, "b")] {
        let lost = v.lost + v.corrupted;
        if lost > 0 {
            return Err(BenchError::Lost {
                side,
                count: lost,
                result: if v.result.is_empty() { "?" } else { &v.result }.into(),
            });
        }
    }
    let received = a.packets_received;
    if received < cell.count {
        return Err(BenchError::Short {
            received,
            expected: cell.count,
        });
    }
    let n = received as f64;
    let per = |k: fn(&Stats) -> u64| Some((k(a) + k(b)) as f64 / n);
    let cpu = Some((a.cpu_s + b.cpu_s) / (n / 1e6));
    let mut m = Measurement {
        packets: received,
        notifications_per_packet: per(|s| s.notifications_sent),
        wakeups_per_packet: per(|s| s.wakeups),
        cpu_s_per_mpkt: cpu,
        spin_hits_per_packet: per(|s| s.spin_hits),
        sleeps_per_packet: per(|s| s.sleeps),
        wakeup_p50_us: a.wakeup_p50_us,
        wakeup_p99_us: a.wakeup_p99_us,
        wakeup_latency_p50_us: a.wakeup_latency_p50_us,
        wakeup_latency_p99_us: a.wakeup_latency_p99_us,
        ..Default::default()
    };
    match cell.workload {
        CellWorkload::Stream
        | CellWorkload::StampStream
        | CellWorkload::ExchangeStream
        | CellWorkload::Paced
        | CellWorkload::Gso { .. } => {
            let elapsed = a.elapsed_s.max(b.elapsed_s);
            if elapsed <= 0.0 {
                return Err(BenchError::NoElapsed);
            }
            let mpps = n / elapsed / 1e6;
            m.mpps = Some(mpps);
            m.gbps = Some(mpps * 1e6 * cell.size as f64 * 8.0 / 1e9);
        }
        CellWorkload::Ping => {
            m.p50_us = a.rtt_p50_us;
            m.p99_us = a.rtt_p99_us;
            m.p999_us = a.rtt_p999_us;
            if m.p50_us.is_none() {
                return Err(BenchError::NoRoundTrips);
            }
        }
    }
    Ok(m)
}
