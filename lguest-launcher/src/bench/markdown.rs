//! The report as Markdown: the table on stdout and `--markdown`.
//!
//! Sections: baselines, one-way stream, ping-pong latency, the performance
//! targets, failures, and what the plan leaves out. A failed row keeps its
//! line, marked **failed**, so a table never silently loses a cell.

use super::json::Document;
use super::row::Row;
use std::fmt::Write as _;

fn f(v: Option<f64>, prec: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.prec$}"),
        _ => "–".into(),
    }
}

/// Figures with a sensible number of digits whatever their magnitude.
fn g(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => {
            let a = x.abs();
            if a >= 100.0 {
                format!("{x:.0}")
            } else if a >= 10.0 {
                format!("{x:.1}")
            } else if a >= 1.0 {
                format!("{x:.2}")
            } else if a >= 0.01 {
                format!("{x:.3}")
            } else if a == 0.0 {
                "0".into()
            } else {
                format!("{x:.1e}")
            }
        }
        _ => "–".into(),
    }
}

fn spread_text(r: &Row) -> String {
    match &r.spread {
        Some(s) if r.runs > 1 => format!("{}–{}", g(Some(s.min)), g(Some(s.max))),
        _ => "–".into(),
    }
}

fn runs_text(r: &Row) -> String {
    if r.failed_runs > 0 {
        format!("{} (+{} failed)", r.runs, r.failed_runs)
    } else {
        r.runs.to_string()
    }
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("–")
}

/// The report as Markdown.
pub fn markdown(doc: &Document) -> String {
    let mut s = String::new();
    let m = &doc.machine;
    let _ = writeln!(s, "# sharenet bench ({} mode)\n", doc.mode);
    let _ = writeln!(
        s,
        "Machine: {} CPUs, {}, {} GiB, Linux {}; {}; {} runs per cell (median, spread = min–max); {:.0} s.\n",
        m.cpus, m.model, m.memory_gib, m.kernel, m.date, doc.runs, doc.elapsed_s
    );
    let counts: Vec<String> = doc.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(s, "Counts per run: {}.\n", counts.join(", "));

    let _ = writeln!(s, "## Baselines\n");
    let _ = writeln!(
        s,
        "| baseline | size B | Mpps | spread | Gbit/s | GB/s | p50 µs | p99 µs | p99.9 µs | CPU s/Mpkt | runs |"
    );
    let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for r in doc.results.iter().filter(|r| !r.is_cell()) {
        if !r.ok() {
            let _ = writeln!(
                s,
                "| {} | {} | **failed** | | | | | | | | {} |",
                r.key.transport,
                r.key.size,
                runs_text(r)
            );
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.key.transport,
            r.key.size,
            g(r.metrics.mpps),
            spread_text(r),
            g(r.metrics.gbps),
            g(r.metrics.gbytes_per_s),
            g(r.metrics.p50_us),
            g(r.metrics.p99_us),
            g(r.metrics.p999_us),
            g(r.metrics.cpu_s_per_mpkt),
            runs_text(r)
        );
    }

    if let Some(r) = doc
        .results
        .iter()
        .find(|r| r.key.workload == "devq" && r.ratio.is_some())
    {
        let _ = writeln!(
            s,
            "\ndevq (device side of a split queue alone, Mpps = Mchains/s): {} ÷ {} = {}.",
            r.key.transport,
            opt(&r.ratio_to),
            f(r.ratio, 2)
        );
    }

    let _ = writeln!(s, "\n## One-way stream\n");
    let _ = writeln!(
        s,
        "Notifications and wake-ups are both sides' counts per packet; CPU is both processes' user+system time. \
         × seqpacket and × SPSC are Mpps ratios to the baselines at the same size.\n"
    );
    let _ = writeln!(
        s,
        "| transport | notify | writes | wait | size B | Mpps | spread | Gbit/s | notif/pkt | wake/pkt | CPU s/Mpkt | × seqpacket | × SPSC | runs |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    for r in doc
        .results
        .iter()
        .filter(|r| r.is_cell() && r.key.workload == "stream")
    {
        let lead = format!(
            "| {} | {} | {} | {} | {} ",
            r.key.transport,
            opt(&r.key.notify),
            opt(&r.key.writes),
            opt(&r.key.wait),
            r.key.size
        );
        if !r.ok() {
            let _ = writeln!(s, "{lead}| **failed** | | | | | | | | {} |", runs_text(r));
            continue;
        }
        let _ = writeln!(
            s,
            "{lead}| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            g(r.metrics.mpps),
            spread_text(r),
            g(r.metrics.gbps),
            g(r.metrics.notifications_per_packet),
            g(r.metrics.wakeups_per_packet),
            g(r.metrics.cpu_s_per_mpkt),
            f(r.ratio, 2),
            f(r.ratio_spsc, 3),
            runs_text(r)
        );
    }

    let _ = writeln!(s, "\n## Ping-pong latency (64 B)\n");
    let _ = writeln!(
        s,
        "Round trips timed by the ping side. × raw is p50 over the raw round trip of the same kind of channel.\n"
    );
    let _ = writeln!(
        s,
        "| transport | notify | writes | wait | p50 µs | spread | p99 µs | p99.9 µs | CPU s/Mpkt | × raw | runs |"
    );
    let _ = writeln!(s, "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|");
    for r in doc
        .results
        .iter()
        .filter(|r| r.is_cell() && r.key.workload == "ping")
    {
        let lead = format!(
            "| {} | {} | {} | {} ",
            r.key.transport,
            opt(&r.key.notify),
            opt(&r.key.writes),
            opt(&r.key.wait)
        );
        if !r.ok() {
            let _ = writeln!(s, "{lead}| **failed** | | | | | | {} |", runs_text(r));
            continue;
        }
        let _ = writeln!(
            s,
            "{lead}| {} | {} | {} | {} | {} | {} | {} |",
            g(r.metrics.p50_us),
            spread_text(r),
            g(r.metrics.p99_us),
            g(r.metrics.p999_us),
            g(r.metrics.cpu_s_per_mpkt),
            f(r.ratio, 2),
            runs_text(r)
        );
    }

    let _ = writeln!(s, "\n## Targets\n");
    let _ = writeln!(s, "| target | measured | met |");
    let _ = writeln!(s, "|---|---|---|");
    for t in &doc.targets {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "no data",
        };
        let _ = writeln!(s, "| {} | {} | {met} |", t.target, t.measured);
    }

    let failures: Vec<&Row> = doc.results.iter().filter(|r| r.error.is_some()).collect();
    if !failures.is_empty() {
        let _ = writeln!(s, "\n## Failures\n");
        for r in failures {
            let _ = writeln!(
                s,
                "- {} {} {} B ({} of {} runs failed): {}",
                r.config_name(),
                r.key.workload,
                r.key.size,
                r.failed_runs,
                r.runs + r.failed_runs,
                opt(&r.error).replace('|', "/")
            );
        }
    }

    let _ = writeln!(s, "\n## What the plan leaves out\n");
    for p in &doc.pruning {
        let _ = writeln!(s, "- {p}");
    }
    s
}
