//! The performance targets, checked against the rows of the same run.
//!
//! Each target is judged by the best (or, for notifications, the worst)
//! successful cell that bears on it, against a baseline of the same run:
//!
//! * the best configuration at 1500 B moves at least 5× the packets per
//!   second of SOCK_SEQPACKET;
//! * the best `--wait spin` configuration at 1500 B is within 2× of the
//!   SPSC ring;
//! * with event-idx, no stream cell writes more than 0.1 notifications per
//!   packet;
//! * the eventfd ping p50 is at most 1.3× the raw eventfd round trip, with
//!   both sides blocking and with the best wait mode;
//! * a polling ping (`--wait spin`, and `--wait adaptive`) has a p50 of at
//!   most 1 µs in its best cell (any transport);
//! * a stamped stream (`--payload stamp`, the link's own cost) spinning
//!   moves at least half the packets of `baseline-spsc-batched`, at 64 and
//!   1500 B;
//! * over [`STABILITY_RUNS`] back-to-back runs of each stamped spin cell,
//!   the slowest is at least 0.7× the fastest (no slow mode);
//! * `adaptive` costs at most 1.2× the CPU per packet of `sleep` on a
//!   stream paced at 10 kpps, and moves at least 0.9× the packets of
//!   `spin` at full rate (stamped, 64 and 1500 B).
//!
//! A target without a successful cell to judge by is reported as "no
//! data", never as met.

use super::matrix::STABILITY_RUNS;
use super::row::{find, highest, lowest, Row};
use serde::Serialize;

/// One performance target, checked against this run.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is asked.
    pub target: String,
    /// What this run measured (with the cell it came from).
    pub measured: String,
    /// `true` met, `false` missed, `None` when the run has no data for it.
    pub met: Option<bool>,
}

/// Check the performance targets against the rows.
pub fn targets(rows: &[Row]) -> Vec<Target> {
    let cells = || rows.iter().filter(|r| r.is_cell() && r.ok());
    let best_by = |pred: &dyn Fn(&Row) -> bool| {
        highest(
            cells().filter(|r| r.key.workload == "stream" && r.key.size == 1500 && pred(r)),
            |r| r.metrics.mpps,
        )
    };
    let mut out = Vec::new();

    let seq = find(rows, "baseline-seqpacket", 1500).and_then(|b| b.metrics.mpps);
    out.push(match (best_by(&|_| true), seq) {
        (Some(r), Some(s)) => {
            let m = r.metrics.mpps.unwrap_or(0.0);
            Target {
                target: "best configuration at 1500 B ≥ 5× SOCK_SEQPACKET pps".into(),
                measured: format!(
                    "{:.2}× ({} at {m:.3} Mpps vs seqpacket {s:.3} Mpps)",
                    m / s,
                    r.config_name()
                ),
                met: Some(m >= 5.0 * s),
            }
        }
        _ => no_data("best configuration at 1500 B ≥ 5× SOCK_SEQPACKET pps"),
    });

    let spsc = find(rows, "baseline-spsc", 1500).and_then(|b| b.metrics.mpps);
    out.push(
        match (best_by(&|r| r.key.wait.as_deref() == Some("spin")), spsc) {
            (Some(r), Some(s)) => {
                let m = r.metrics.mpps.unwrap_or(0.0);
                Target {
                    target: "spin mode at 1500 B within 2× of the SPSC ring".into(),
                    measured: format!(
                        "SPSC is {:.2}× ({} at {m:.3} Mpps vs SPSC {s:.3} Mpps)",
                        s / m.max(1e-9),
                        r.config_name()
                    ),
                    met: Some(2.0 * m >= s),
                }
            }
            _ => no_data("spin mode at 1500 B within 2× of the SPSC ring"),
        },
    );

    let worst = highest(
        cells()
            .filter(|r| r.key.workload == "stream" && r.key.notify.as_deref() == Some("event-idx")),
        |r| r.metrics.notifications_per_packet,
    );
    out.push(match worst {
        Some(r) => {
            let n = r.metrics.notifications_per_packet.unwrap_or(0.0);
            Target {
                target: "event-idx ≤ 0.1 notifications per packet while streaming".into(),
                measured: format!(
                    "worst cell {n:.4} ({} at {} B)",
                    r.config_name(),
                    r.key.size
                ),
                met: Some(n <= 0.1),
            }
        }
        None => no_data("event-idx ≤ 0.1 notifications per packet while streaming"),
    });

    let raw = rows
        .iter()
        .find(|r| r.key.transport == "baseline-rtt-eventfd" && r.ok())
        .and_then(|r| r.metrics.p50_us);
    let ping = |wait: Option<&str>| {
        lowest(
            cells()
                .filter(|r| r.key.workload == "ping" && r.key.transport == "eventfd")
                .filter(|r| wait.is_none() || r.key.wait.as_deref() == wait),
            |r| r.metrics.p50_us,
        )
    };
    for (wait, label) in [
        (
            Some("sleep"),
            "eventfd ping p50 (wait sleep, both sides block) ≤ 1.3× raw eventfd round trip",
        ),
        (
            None,
            "eventfd ping p50 (best of any wait mode) ≤ 1.3× raw eventfd round trip",
        ),
    ] {
        out.push(match (ping(wait), raw) {
            (Some(r), Some(b)) => {
                let p = r.metrics.p50_us.unwrap_or(0.0);
                Target {
                    target: label.into(),
                    measured: format!(
                        "{:.2}× ({} at {p:.1} µs vs raw {b:.1} µs)",
                        p / b,
                        r.config_name()
                    ),
                    met: Some(p <= 1.3 * b),
                }
            }
            _ => no_data(label),
        });
    }
    polling_ping_targets(rows, &mut out);
    link_targets(rows, &mut out);
    out
}

/// The polling pings: the best cell of each polling wait mode, whatever
/// the transport and notify mode, at most 1 µs p50 (an absolute figure:
/// there is no polling baseline to compare it with).
fn polling_ping_targets(rows: &[Row], out: &mut Vec<Target>) {
    for wait in ["spin", "adaptive"] {
        let label = format!("ping p50, wait {wait} (best cell) ≤ 1 µs");
        let best = lowest(
            rows.iter().filter(|r| {
                r.is_cell()
                    && r.ok()
                    && r.key.workload == "ping"
                    && r.key.wait.as_deref() == Some(wait)
            }),
            |r| r.metrics.p50_us,
        );
        out.push(match best.and_then(|r| Some((r, r.metrics.p50_us?))) {
            Some((r, p)) => Target {
                target: label,
                measured: format!("{p:.2} µs ({})", r.config_name()),
                met: Some(p <= 1.0),
            },
            None => no_data(&label),
        });
    }
}

/// The targets of the stamped and paced cells (`stream-stamp`,
/// `stream-10kpps`), judged per size on the same transport and modes.
fn link_targets(rows: &[Row], out: &mut Vec<Target>) {
    let cell = |workload: &str, wait: &str, size: u32| {
        rows.iter().find(|r| {
            r.is_cell()
                && r.ok()
                && r.key.workload == workload
                && r.key.wait.as_deref() == Some(wait)
                && r.key.size == size
        })
    };
    for size in [64, 1500] {
        let label = format!("stream spin, --payload stamp, {size} B ≥ 0.5× baseline-spsc-batched");
        let base = find(rows, "baseline-spsc-batched", size).and_then(|b| b.metrics.mpps);
        out.push(
            match (
                cell("stream-stamp", "spin", size).and_then(|r| r.metrics.mpps),
                base,
            ) {
                (Some(m), Some(b)) => Target {
                    target: label,
                    measured: format!("{:.2}× ({m:.2} vs {b:.2} Mpps)", m / b),
                    met: Some(m >= 0.5 * b),
                },
                _ => no_data(&label),
            },
        );
    }
    for size in [64, 1500] {
        let label = format!(
            "stream spin, --payload stamp, {size} B: slowest of {STABILITY_RUNS} runs ≥ 0.7× the fastest"
        );
        out.push(match cell("stream-stamp", "spin", size) {
            Some(r) => stability(r, label),
            None => no_data(&label),
        });
    }
    let label = "adaptive at 10 kpps (64 B, stamp): CPU per packet ≤ 1.2× sleep".to_string();
    let cpu = |wait| cell("stream-10kpps", wait, 64).and_then(|r| r.metrics.cpu_s_per_mpkt);
    out.push(match (cpu("adaptive"), cpu("sleep")) {
        (Some(a), Some(s)) if s > 0.0 => Target {
            target: label,
            measured: format!("{:.2}× ({a:.1} vs {s:.1} CPU s/Mpkt)", a / s),
            met: Some(a <= 1.2 * s),
        },
        _ => no_data(&label),
    });
    for size in [64, 1500] {
        let label = format!("adaptive at full rate (stamp, {size} B) ≥ 0.9× spin");
        let mpps = |wait| cell("stream-stamp", wait, size).and_then(|r| r.metrics.mpps);
        out.push(match (mpps("adaptive"), mpps("spin")) {
            (Some(a), Some(s)) if s > 0.0 => Target {
                target: label,
                measured: format!("{:.2}× ({a:.2} vs {s:.2} Mpps)", a / s),
                met: Some(a >= 0.9 * s),
            },
            _ => no_data(&label),
        });
    }
}

/// No slow mode: the slowest run of a cell at least 0.7× its fastest,
/// over at least [`STABILITY_RUNS`] runs, none failed.
fn stability(r: &Row, target: String) -> Target {
    let Some(s) = r.spread.as_ref().filter(|s| s.max > 0.0) else {
        return no_data(&target);
    };
    let enough = r.runs + r.failed_runs >= STABILITY_RUNS;
    let ratio = s.min / s.max;
    Target {
        measured: format!(
            "{ratio:.2}× ({:.2}–{:.2} {} over {} runs{})",
            s.min,
            s.max,
            s.unit,
            r.runs,
            match r.failed_runs {
                0 => String::new(),
                n => format!(", {n} failed"),
            }
        ),
        met: enough.then_some(ratio >= 0.7 && r.failed_runs == 0),
        target,
    }
}

fn no_data(target: &str) -> Target {
    Target {
        target: target.into(),
        measured: "no successful cell to judge by".into(),
        met: None,
    }
}
