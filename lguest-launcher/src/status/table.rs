//! The human table of `status`: one column per side (launcher) or port.

use super::{Port, Reply};
use crate::cli::config::Spec;

/// The human table: one column per side (launcher) and port.
pub fn table(spec: &Spec, replies: &[Reply]) -> String {
    let cols: Vec<(&Reply, &Port)> = replies
        .iter()
        .flat_map(|r| r.ports.iter().map(move |p| (r, p)))
        .collect();
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |label: &str, f: &dyn Fn(&Reply, &Port) -> String| {
        rows.push((
            label.to_string(),
            cols.iter().map(|(r, p)| f(r, p)).collect(),
        ));
    };
    row("side", &|r, p| {
        if r.role == "launcher" {
            format!("{} (pid {})", r.name, r.pid)
        } else {
            format!("{} {} port {}", r.role, r.name, p.port)
        }
    });
    row("link", &|_, p| {
        format!(
            "{} gen {}",
            if p.link_up { "up" } else { "down" },
            p.stats.generation
        )
    });
    row("peer pid", &|_, p| p.stats.peer_pid.to_string());
    row("uptime", &|_, p| format!("{:.1} s", p.uptime_s));
    row("rx packets", &|_, p| p.stats.packets_copied.to_string());
    row("rx bytes", &|_, p| p.stats.bytes_copied.to_string());
    row("rx rate", &|_, p| rate(p.rx_pps, p.rx_bps));
    row("tx packets", &|_, p| p.stats.packets_sent.to_string());
    row("tx consumed", &|_, p| p.stats.packets_consumed.to_string());
    row("tx rate", &|_, p| rate(p.tx_pps, p.tx_bps));
    row("guest received", &|_, p| {
        p.stats.packets_received.to_string()
    });
    row("drops", &|_, p| {
        if p.stats.drops_by_reason.is_empty() {
            "none".into()
        } else {
            p.stats
                .drops_by_reason
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        }
    });
    row("rx_ring_full", &|_, p| p.stats.rx_ring_full.to_string());
    row("notifications", &|_, p| {
        format!(
            "sent {} suppressed {} pending {}",
            p.stats.notifications_sent,
            p.stats.notifications_suppressed,
            p.stats.notifications_pending
        )
    });
    row("wakeups", &|_, p| p.stats.wakeups.to_string());
    row("spin hits / sleeps", &|_, p| {
        format!(
            "{} / {} (this link {} / {})",
            p.stats.spin_hits + p.stats.link_spin_hits,
            p.stats.sleeps + p.stats.link_sleeps,
            p.stats.link_spin_hits,
            p.stats.link_sleeps
        )
    });
    row("wake-up latency", &|_, p| match (
        p.stats.wakeup_latency_p50_us,
        p.stats.wakeup_latency_p99_us,
    ) {
        (Some(a), Some(b)) => format!(
            "p50 <= {a:.1} us, p99 <= {b:.1} us ({} unstamped)",
            p.stats.wakeup_latency_unstamped
        ),
        _ => format!("- ({} unstamped)", p.stats.wakeup_latency_unstamped),
    });
    row("  histogram", &|_, p| {
        histogram(&p.stats.wakeup_latency_log2_ns)
    });
    row(
        "wake-up probe",
        &|_, p| match (p.stats.wakeup_p50_us, p.stats.wakeup_p99_us) {
            (Some(a), Some(b)) => format!("p50 {a:.1} / p99 {b:.1} us (at connect)"),
            _ => "-".into(),
        },
    );
    row("rx ring", &|_, p| {
        format!(
            "{} posted free, {} in use, of {}",
            p.stats.rx_ring_posted, p.stats.rx_ring_in_use, p.stats.rx_ring_size
        )
    });
    row("peer tx ring", &|_, p| {
        format!(
            "{} pending, of {}",
            p.stats.peer_tx_pending, p.stats.peer_tx_size
        )
    });
    row("capture", &|_, p| {
        format!(
            "{} written, {} skipped",
            p.stats.capture_records, p.stats.capture_skipped
        )
    });
    let lw = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let cw: Vec<usize> = (0..cols.len())
        .map(|i| rows.iter().map(|(_, v)| v[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = format!("sharenet status: {spec}\n");
    for (label, vals) in &rows {
        out.push_str(&format!("{label:<lw$}"));
        for (v, w) in vals.iter().zip(&cw) {
            out.push_str(&format!("  {v:<w$}"));
        }
        out = out.trim_end().to_string();
        out.push('\n');
    }
    out
}

fn rate(pps: f64, bps: f64) -> String {
    format!("{:.0} pkt/s {:.1} Mbit/s", pps, bps / 1e6)
}

/// A log2 histogram in one line: `BUCKET:COUNT` for its non-empty buckets,
/// the bucket named by its lower bound (`<1us`, `2us`, `4ms`, ...).
pub fn histogram(h: &[u64]) -> String {
    let parts: Vec<String> = h
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| format!("{}:{n}", bucket_name(i)))
        .collect();
    if parts.is_empty() {
        return "-".into();
    }
    parts.join(" ")
}

fn bucket_name(i: usize) -> String {
    let ns = 1u64 << i;
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{}us", ns / 1_000),
        _ => format!("{}ms", ns / 1_000_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_line_names_nonempty_buckets_by_lower_bound() {
        let mut h = vec![0u64; 40];
        h[14] = 3;
        h[21] = 1;
        assert_eq!(histogram(&h), "16us:3 2ms:1");
        assert_eq!(histogram(&[]), "-");
    }
}
