//! The report as Markdown: the table on stdout and `--markdown`.
//!
//! Sections: baselines, one-way stream, ping-pong latency, the performance
//! targets, what to use, failures, and what the plan leaves out. A failed
//! row keeps its line, marked **failed**, so a table never silently loses a
//! cell.
//!
//! Every spread is printed in the unit of the figure it belongs to
//! (`0.40–0.50 Mpps`, `35.4–36.0 GB/s`, `14.2–15.1 µs`), and a figure whose
//! runs disagree by more than 2× either way carries [`WIDE_MARK`], explained
//! in a footnote under its table.

use super::advice::{Advice, Pick};
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

/// The marker on a figure whose runs disagree (see [`Spread::wide`]).
///
/// [`Spread::wide`]: super::summary::Spread::wide
pub const WIDE_MARK: &str = "†";

/// The footnote under a table that has a [`WIDE_MARK`].
pub const WIDE_NOTE: &str = "† The runs of this cell disagree: one was below half its median \
(or above twice it, for a latency), so the cell is bimodal on this machine; read its median \
with care and its spread for the range.";

/// The headline figure's spread, in its own unit; empty when the row has a
/// single run or no headline figure.
fn spread_text(r: &Row) -> String {
    match &r.spread {
        Some(s) if r.runs > 1 => format!("{}–{} {}", g(Some(s.min)), g(Some(s.max)), s.unit),
        _ => "–".into(),
    }
}

/// `value` formatted, with [`WIDE_MARK`] when it is the row's headline
/// metric (`metric`) and its spread is wide.
fn figure(r: &Row, metric: &str, value: Option<f64>) -> String {
    let v = g(value);
    match &r.spread {
        Some(s) if s.wide && s.metric == metric && r.runs > 1 => format!("{v} {WIDE_MARK}"),
        _ => v,
    }
}

fn any_wide<'a>(rows: impl IntoIterator<Item = &'a Row>) -> bool {
    rows.into_iter()
        .any(|r| r.runs > 1 && r.spread.as_ref().is_some_and(|s| s.wide))
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
        "| baseline | size B | Mpps | Gbit/s | GB/s | p50 µs | spread of the headline figure | p99 µs | p99.9 µs | CPU s/Mpkt | runs |"
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
            figure(r, "mpps", r.metrics.mpps),
            g(r.metrics.gbps),
            figure(r, "gbytes_per_s", r.metrics.gbytes_per_s),
            figure(r, "p50_us", r.metrics.p50_us),
            spread_text(r),
            g(r.metrics.p99_us),
            g(r.metrics.p999_us),
            g(r.metrics.cpu_s_per_mpkt),
            runs_text(r)
        );
    }

    let _ = writeln!(
        s,
        "\nThe headline figure is Mpps for streams and devq, GB/s for memcpy, p50 for round trips; \
         its spread is min–max over the runs, in that figure's unit."
    );
    if any_wide(doc.results.iter().filter(|r| !r.is_cell())) {
        let _ = writeln!(s, "\n{WIDE_NOTE}");
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
            figure(r, "mpps", r.metrics.mpps),
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

    if any_wide(
        doc.results
            .iter()
            .filter(|r| r.is_cell() && r.key.workload == "stream"),
    ) {
        let _ = writeln!(s, "\n{WIDE_NOTE}");
    }

    link_cost(&mut s, doc);
    super::gso::section(&mut s, doc);

    let _ = writeln!(s, "\n## Ping-pong latency (64 B)\n");
    let _ = writeln!(
        s,
        "Round trips timed by the ping side. × raw blocking compares like with like: for `wait sleep` \
         cells (both sides block in the channel) it is p50 over the raw blocking round trip of the \
         same kind of channel. Polling cells (`spin`, `adaptive`) never block, so they have no such \
         ratio; compare them with each other.\n"
    );
    let _ = writeln!(
        s,
        "| transport | notify | writes | wait | p50 µs | spread | p99 µs | p99.9 µs | CPU s/Mpkt | × raw blocking (sleep only) | runs |"
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
            figure(r, "p50_us", r.metrics.p50_us),
            spread_text(r),
            g(r.metrics.p99_us),
            g(r.metrics.p999_us),
            g(r.metrics.cpu_s_per_mpkt),
            f(r.ratio, 2),
            runs_text(r)
        );
    }

    if any_wide(
        doc.results
            .iter()
            .filter(|r| r.is_cell() && r.key.workload == "ping"),
    ) {
        let _ = writeln!(s, "\n{WIDE_NOTE}");
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

    what_to_use(&mut s, &doc.advice);

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

    let _ = write!(s, "\n{}", doc.capture.markdown());
    let _ = writeln!(s, "\n## What the plan leaves out\n");
    for p in &doc.pruning {
        let _ = writeln!(s, "- {p}");
    }
    s
}

/// The stamped and paced cells: the link's own cost against the batched
/// SPSC ring, and what each wait mode costs in CPU on a light load.
fn link_cost(s: &mut String, doc: &Document) {
    let rows: Vec<&Row> = doc
        .results
        .iter()
        .filter(|r| {
            r.is_cell()
                && matches!(
                    r.key.workload.as_str(),
                    "stream-stamp" | "stream-stamp-exchange" | "stream-10kpps"
                )
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n## Link cost (`--payload stamp`) and wait modes under light load\n"
    );
    let _ = writeln!(
        s,
        "`stream-stamp`: frames carry a 16-byte stamp, so what is left is the link's own work; \
         × batched SPSC is Mpps over `baseline-spsc-batched` at the same size. `stream-10kpps`: \
         the stream is paced (`--rate`); its headline is CPU of both processes per million \
         packets. Spin hits and sleeps are both sides' idle periods per packet; wake-up p50/p99 \
         is the one-way blocking wake-up `adaptive` measures at connect (an HDR histogram of a \
         few dozen wake-ups over a channel of the transport's kind; its lower quartile \
         calibrates the spin); \
         in-run p50/p99 is the measuring side's wake-up latency from the peer's kick, \
         measured during the run (`wakeup_latency_log2_ns`, the upper bound of a log2 \
         bucket). \
         `stream-stamp-exchange`: the stamped spin stream with `--share exchange` on both sides \
         (the peer maps only a sealed area with the TX ring and buffers); its ratio column is \
         over `stream-stamp` (`--share guest`) of the same configuration: the cost of \
         exchange.\n"
    );
    let _ = writeln!(
        s,
        "| workload | transport | notify | wait | size B | Mpps | CPU s/Mpkt | spread | spin hits/pkt | sleeps/pkt | wake/pkt | wake-up p50/p99 µs | in-run p50/p99 µs | × batched SPSC (exchange: × guest) | runs |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    for r in &rows {
        let lead = format!(
            "| {} | {} | {} | {} | {} ",
            r.key.workload,
            r.key.transport,
            opt(&r.key.notify),
            opt(&r.key.wait),
            r.key.size
        );
        if !r.ok() {
            let _ = writeln!(s, "{lead}| **failed** | | | | | | | | | {} |", runs_text(r));
            continue;
        }
        let wake = match (r.metrics.wakeup_p50_us, r.metrics.wakeup_p99_us) {
            (None, None) => "–".to_string(),
            (p50, p99) => format!("{}/{}", g(p50), g(p99)),
        };
        let in_run = match (
            r.metrics.wakeup_latency_p50_us,
            r.metrics.wakeup_latency_p99_us,
        ) {
            (None, None) => "–".to_string(),
            (p50, p99) => format!("{}/{}", g(p50), g(p99)),
        };
        let _ = writeln!(
            s,
            "{lead}| {} | {} | {} | {} | {} | {} | {wake} | {in_run} | {} | {} |",
            figure(r, "mpps", r.metrics.mpps),
            figure(r, "cpu_s_per_mpkt", r.metrics.cpu_s_per_mpkt),
            spread_text(r),
            g(r.metrics.spin_hits_per_packet),
            g(r.metrics.sleeps_per_packet),
            g(r.metrics.wakeups_per_packet),
            f(r.ratio, 2),
            runs_text(r)
        );
    }
    if any_wide(rows.iter().copied()) {
        let _ = writeln!(s, "\n{WIDE_NOTE}");
    }
}

fn pick_text(p: &Option<Pick>, what: &str) -> String {
    match p {
        Some(p) => format!(
            "{}{} — {what} {} {}",
            p.config,
            if p.wide {
                format!(" {WIDE_MARK}")
            } else {
                String::new()
            },
            g(Some(p.value)),
            p.unit
        ),
        None => "no successful cell to judge by".into(),
    }
}

/// The "What to use" section: [`Advice`] in words.
fn what_to_use(s: &mut String, a: &Advice) {
    let _ = writeln!(s, "\n## What to use\n");
    let _ = writeln!(
        s,
        "Picked from this run's medians. Single cells on a shared machine are noisy: a pick within \
         about 10% of the runner-up is a tie, and a pick marked {WIDE_MARK} had runs that disagree \
         by more than 2×. Lowest latency and highest throughput usually come from `wait spin`, \
         which keeps a core busy even on an idle link.\n"
    );
    let _ = writeln!(
        s,
        "- **Lowest latency**: {}.",
        pick_text(&a.lowest_latency, "ping p50 (64 B)")
    );
    let _ = writeln!(
        s,
        "- **Highest throughput**: {}.",
        pick_text(&a.highest_throughput, "stream at 1500 B,")
    );
    let _ = writeln!(
        s,
        "- **Lowest CPU per packet**: {}.",
        pick_text(&a.lowest_cpu, "stream at 1500 B,")
    );
    match &a.best_default {
        Some(d) => {
            let _ = writeln!(
                s,
                "- **Best default**: `--notify {} --writes {} --wait {}` — medians over {} transport(s): \
                 {} Mpps and {} CPU s/Mpkt at 1500 B, ping p50 {} µs.",
                d.notify,
                d.writes,
                d.wait,
                d.transports,
                g(Some(d.mpps)),
                g(Some(d.cpu_s_per_mpkt)),
                g(Some(d.p50_us))
            );
        }
        None => {
            let _ = writeln!(s, "- **Best default**: no mode met the rule in this run.");
        }
    }
    let _ = writeln!(s, "\nHow the default is chosen: {}", a.rule);
}
