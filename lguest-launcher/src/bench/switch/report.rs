//! The switch rows' report: each switch row's CPU ratio over its direct
//! row (`ratio`), and the report's "Switch" section.

use super::SIZE;
use crate::bench::row::Row;
use std::fmt::Write as _;

/// `pairs-N-direct` for a `pairs-N-…` row (`pairs-N-direct-one-cpu`
/// for a `-one-cpu` one).
fn direct_name(workload: &str) -> String {
    let n = workload.split('-').nth(1).unwrap_or("");
    let cpu = if workload.ends_with("-one-cpu") {
        "-one-cpu"
    } else {
        ""
    };
    format!("pairs-{n}-direct{cpu}")
}

/// A `pairs-N-switch` or `pairs-N-switch-pull` row.
fn is_via_switch(r: &Row) -> bool {
    is_switch_row(r) && r.key.workload.contains("-switch")
}

/// The direct row a switch row is compared with.
fn direct_of<'a>(rows: &'a [Row], r: &Row) -> Option<&'a Row> {
    let want = direct_name(&r.key.workload);
    rows.iter()
        .find(|d| d.key.workload == want && d.key.wait == r.key.wait && d.ok())
}

/// `ratio` of every switch row: its CPU per frame over the direct row's.
pub fn add_ratios(rows: &mut [Row]) {
    let direct: Vec<Row> = rows
        .iter()
        .filter(|r| is_switch_row(r) && r.key.workload.contains("-direct"))
        .cloned()
        .collect();
    for r in rows.iter_mut().filter(|r| is_via_switch(r) && r.ok()) {
        let d = direct_of(&direct, r).and_then(|d| d.metrics.cpu_s_per_mpkt);
        if let (Some(s), Some(d)) = (r.metrics.cpu_s_per_mpkt, d) {
            if d > 0.0 {
                r.ratio = Some(s / d);
                r.ratio_to = Some(direct_name(&r.key.workload) + " (CPU/frame)");
            }
        }
    }
}

/// A `pairs-N-direct|switch` row.
pub fn is_switch_row(r: &Row) -> bool {
    r.key.workload.starts_with("pairs-")
}

/// The report's "Switch" section (empty when no switch row ran).
pub fn markdown(rows: &[Row]) -> String {
    let mine: Vec<&Row> = rows.iter().filter(|r| is_switch_row(r)).collect();
    let mut s = String::new();
    if mine.is_empty() {
        return s;
    }
    let num = |v: Option<f64>, p: usize| v.map_or("–".into(), |v| format!("{v:.p$}"));
    let _ = writeln!(
        s,
        "\n## Switch: N pairs through one switch vs direct links\n"
    );
    let _ = writeln!(
        s,
        "N stream/sink pairs (`--payload stamp`, {SIZE} B) on their own links, then all 2N \
         joined to one `switch` (push ports: one copy per hop), then to a `switch --push off` \
         (`-switch-pull`: every port pulls, one extra copy per hop), same run. Mpps: all \
         sinks' frames over the longest stream's time. CPU: every process (members and \
         switch) per frame. The hop's cost is the difference per frame; the target is a \
         CPU ratio of at most 1.5 (push). The `-one-cpu` rows run the same with every \
         process pinned to one CPU: the hop's own cost, without the scheduler spreading \
         a pair's processes (and their wake-ups and frames) over the CPUs.\n"
    );
    let _ = writeln!(
        s,
        "| workload | transport | members' wait | aggregate Mpps | CPU µs/frame | hop µs/frame | × direct CPU | notif/frame | wake/frame | runs |"
    );
    let _ = writeln!(s, "|---|---|---|--:|--:|--:|--:|--:|--:|--:|");
    for r in &mine {
        let cpu_us = r.metrics.cpu_s_per_mpkt;
        let hop = if is_via_switch(r) {
            match (
                cpu_us,
                direct_of(rows, r).and_then(|d| d.metrics.cpu_s_per_mpkt),
            ) {
                (Some(a), Some(b)) => Some(a - b),
                _ => None,
            }
        } else {
            None
        };
        if !r.ok() {
            let _ = writeln!(
                s,
                "| {} | {} | {} | **failed** | | | | | | {} |",
                r.key.workload,
                r.key.transport,
                r.key.wait.as_deref().unwrap_or("-"),
                r.failed_runs
            );
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.key.workload,
            r.key.transport,
            r.key.wait.as_deref().unwrap_or("-"),
            num(r.metrics.mpps, 2),
            num(cpu_us, 3),
            num(hop, 3),
            num(r.ratio, 2),
            num(r.metrics.notifications_per_packet, 4),
            num(r.metrics.wakeups_per_packet, 4),
            r.runs
        );
    }
    s
}
