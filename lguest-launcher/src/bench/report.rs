//! The results: rows, ratios to the baselines, targets, Markdown and JSON.
//!
//! One [`Row`] per cell or baseline, the same shape for both so a script
//! can filter on `transport` (`fifo`, `unix`, `eventfd`, or
//! `baseline-seqpacket`, `baseline-spsc`, `baseline-memcpy`,
//! `baseline-rtt-pipe|fifo|eventfd|unix`) and `workload`. Figures that do
//! not apply to a row are `null`. Ratios are taken against baselines of the
//! same run only: a stream cell against SOCK_SEQPACKET (`ratio`) and the
//! SPSC ring (`ratio_spsc`) at the same frame size, a ping cell against the
//! raw round trip of its own transport kind.

use super::summary::{combine, spread, Measurement, Spread};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// One line of the results.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// What the row is about (transport, modes, size, workload).
    #[serde(flatten)]
    pub key: RowKey,
    /// The figures: medians over the runs that succeeded.
    #[serde(flatten)]
    pub metrics: Measurement,
    /// Runs that succeeded (the medians are over these).
    pub runs: u32,
    /// Runs that failed.
    pub failed_runs: u32,
    /// Min–max of the headline metric over the runs.
    pub spread: Option<Spread>,
    /// Ratio to the relevant baseline: stream Mpps ÷ seqpacket Mpps, ping
    /// p50 ÷ raw round-trip p50.
    pub ratio: Option<f64>,
    /// Which baseline `ratio` is against.
    pub ratio_to: Option<String>,
    /// Stream Mpps ÷ SPSC-ring Mpps at the same size.
    pub ratio_spsc: Option<f64>,
    /// `ok` (at least one run succeeded) or `failed`.
    pub status: String,
    /// The first failure seen, if any run failed.
    pub error: Option<String>,
}

/// What identifies a row, before any figures.
#[derive(Clone, Debug, Serialize)]
pub struct RowKey {
    /// `fifo`, `unix`, `eventfd`, or `baseline-...`.
    pub transport: String,
    /// Notify mode (sharenet cells only).
    pub notify: Option<String>,
    /// Writes mode (sharenet cells only).
    pub writes: Option<String>,
    /// Wait mode (sharenet cells only).
    pub wait: Option<String>,
    /// Frame (or copy) size in bytes.
    pub size: u32,
    /// `stream`, `ping` or `memcpy`.
    pub workload: String,
}

impl Row {
    /// Run `once` for runs `0..runs` (calling `tick` after each, for the
    /// progress bar) and fold the results into a row: the loop every
    /// sharenet cell and every baseline shares.
    pub fn measure(
        key: RowKey,
        runs: u32,
        headline: &str,
        mut once: impl FnMut(u32) -> Result<Measurement, String>,
        mut tick: impl FnMut(),
    ) -> Row {
        let mut ok = Vec::new();
        let mut failures = Vec::new();
        for run in 0..runs {
            match once(run) {
                Ok(m) => ok.push(m),
                Err(e) => failures.push(e),
            }
            tick();
        }
        Row::from_runs(key, &ok, &failures, headline)
    }

    /// Fold the runs of one cell into a row; `headline` names the metric
    /// whose spread is reported.
    pub fn from_runs(
        key: RowKey,
        runs: &[Measurement],
        failures: &[String],
        headline: &str,
    ) -> Row {
        let m = combine(runs);
        let spread = match headline {
            "p50_us" => spread(headline, runs.iter().map(|r| r.p50_us)),
            "gbytes_per_s" => spread(headline, runs.iter().map(|r| r.gbytes_per_s)),
            _ => spread(headline, runs.iter().map(|r| r.mpps)),
        };
        Row {
            key,
            metrics: m,
            runs: runs.len() as u32,
            failed_runs: failures.len() as u32,
            spread,
            ratio: None,
            ratio_to: None,
            ratio_spsc: None,
            status: if runs.is_empty() { "failed" } else { "ok" }.into(),
            error: failures.first().cloned(),
        }
    }

    fn is_cell(&self) -> bool {
        !self.key.transport.starts_with("baseline-")
    }

    fn ok(&self) -> bool {
        self.status == "ok"
    }
}

/// The machine the numbers come from.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// CPUs this process may use.
    pub cpus: usize,
    /// `model name` from /proc/cpuinfo.
    pub model: String,
    /// Kernel release.
    pub kernel: String,
    /// Total memory in GiB.
    pub memory_gib: f64,
    /// When the run finished, UTC, ISO 8601.
    pub date: String,
}

impl Machine {
    /// Read what /proc tells about this machine.
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map(|kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0)
            .unwrap_or(0.0);
        Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            model,
            kernel,
            memory_gib,
            date: utc_now(),
        }
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`, without a date crate.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Days to a civil date (H. Hinnant's algorithm, proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// One performance target of issue 7, checked against this run.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is asked.
    pub target: String,
    /// What this run measured (with the cell it came from).
    pub measured: String,
    /// `true` met, `false` missed, `None` when the run has no data for it.
    pub met: Option<bool>,
}

/// Everything one run produced; written as the `--json` object.
#[derive(Clone, Debug, Serialize)]
pub struct Document {
    /// The machine.
    pub machine: Machine,
    /// `quick` or `full`.
    pub mode: String,
    /// Runs per cell asked for.
    pub runs: u32,
    /// Wall time of the whole benchmark.
    pub elapsed_s: f64,
    /// What the plan left out, and why.
    pub pruning: Vec<String>,
    /// Packets, pings and copies per run, by kind of measurement.
    pub counts: Vec<(String, u64)>,
    /// The performance targets, checked.
    pub targets: Vec<Target>,
    /// One row per cell and baseline.
    pub results: Vec<Row>,
}

fn find<'a>(rows: &'a [Row], transport: &str, size: u32) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.key.transport == transport && r.key.size == size && r.ok())
}

/// Fill in `ratio`, `ratio_to` and `ratio_spsc` of every sharenet row.
pub fn add_ratios(rows: &mut [Row]) {
    let base: Vec<Row> = rows.iter().filter(|r| !r.is_cell()).cloned().collect();
    for r in rows.iter_mut().filter(|r| r.is_cell() && r.ok()) {
        match r.key.workload.as_str() {
            "stream" => {
                if let (Some(m), Some(b)) = (
                    r.metrics.mpps,
                    find(&base, "baseline-seqpacket", r.key.size).and_then(|b| b.metrics.mpps),
                ) {
                    r.ratio = Some(m / b);
                    r.ratio_to = Some("baseline-seqpacket".into());
                }
                if let (Some(m), Some(b)) = (
                    r.metrics.mpps,
                    find(&base, "baseline-spsc", r.key.size).and_then(|b| b.metrics.mpps),
                ) {
                    r.ratio_spsc = Some(m / b);
                }
            }
            "ping" => {
                let to = format!("baseline-rtt-{}", r.key.transport);
                if let (Some(p), Some(b)) = (
                    r.metrics.p50_us,
                    base.iter()
                        .find(|b| b.key.transport == to && b.ok())
                        .and_then(|b| b.metrics.p50_us),
                ) {
                    r.ratio = Some(p / b);
                    r.ratio_to = Some(to);
                }
            }
            _ => {}
        }
    }
}

fn config_name(r: &Row) -> String {
    format!(
        "{} {}/{}/{}",
        r.key.transport,
        r.key.notify.as_deref().unwrap_or("-"),
        r.key.writes.as_deref().unwrap_or("-"),
        r.key.wait.as_deref().unwrap_or("-")
    )
}

/// Check the targets against the rows.
pub fn targets(rows: &[Row]) -> Vec<Target> {
    let cells = || rows.iter().filter(|r| r.is_cell() && r.ok());
    let best_by = |pred: &dyn Fn(&Row) -> bool| {
        cells()
            .filter(|r| r.key.workload == "stream" && r.key.size == 1500 && pred(r))
            .filter(|r| r.metrics.mpps.is_some())
            .max_by(|a, b| {
                a.metrics
                    .mpps
                    .unwrap_or(0.0)
                    .total_cmp(&b.metrics.mpps.unwrap_or(0.0))
            })
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
                    config_name(r)
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
                        config_name(r)
                    ),
                    met: Some(2.0 * m >= s),
                }
            }
            _ => no_data("spin mode at 1500 B within 2× of the SPSC ring"),
        },
    );

    let worst = cells()
        .filter(|r| r.key.workload == "stream" && r.key.notify.as_deref() == Some("event-idx"))
        .filter(|r| r.metrics.notifications_per_packet.is_some())
        .max_by(|a, b| {
            a.metrics
                .notifications_per_packet
                .unwrap_or(0.0)
                .total_cmp(&b.metrics.notifications_per_packet.unwrap_or(0.0))
        });
    out.push(match worst {
        Some(r) => {
            let n = r.metrics.notifications_per_packet.unwrap_or(0.0);
            Target {
                target: "event-idx ≤ 0.1 notifications per packet while streaming".into(),
                measured: format!("worst cell {n:.4} ({} at {} B)", config_name(r), r.key.size),
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
        cells()
            .filter(|r| r.key.workload == "ping" && r.key.transport == "eventfd")
            .filter(|r| wait.is_none() || r.key.wait.as_deref() == wait)
            .filter(|r| r.metrics.p50_us.is_some())
            .min_by(|a, b| {
                a.metrics
                    .p50_us
                    .unwrap_or(0.0)
                    .total_cmp(&b.metrics.p50_us.unwrap_or(0.0))
            })
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
                        config_name(r)
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

/// Write the document as pretty JSON.
pub fn write_json(doc: &Document, path: &Path) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(doc).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

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
                config_name(r),
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
