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
//!   both sides blocking and with the best wait mode.
//!
//! A target without a successful cell to judge by is reported as "no
//! data", never as met.

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
    out
}

fn no_data(target: &str) -> Target {
    Target {
        target: target.into(),
        measured: "no successful cell to judge by".into(),
        met: None,
    }
}
