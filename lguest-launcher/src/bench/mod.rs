//! `lguest-launcher bench`: every transport and mode side by side, against
//! the limits of the machine, in one run.
//!
//! Absolute numbers on a shared 2-vCPU machine drift from minute to minute,
//! so the benchmark measures its own yardsticks in the same run and reports
//! every sharenet figure also as a ratio to them. The story of one run:
//!
//! 1. **Plan** ([`matrix::plan`]): the cells of the matrix — transport ×
//!    notify × writes × wait, for a one-way stream at 64/1500/9000 B and a
//!    64 B ping-pong — pruned where an axis cannot matter (the pruning is
//!    written down in [`matrix`] and in the report), and the baselines.
//! 2. **Baselines** ([`baselines`]): AF_UNIX `SOCK_SEQPACKET` one-way,
//!    raw blocking round trips over a pipe, FIFOs, eventfds and a unix
//!    socket, single-thread memcpy, a minimal shared-memory SPSC ring
//!    that busy-polls, and the device side of a split queue alone, ours
//!    against rust-vmm's `virtio-queue` ([`devq`]). Every two-process baseline runs as two children of
//!    this binary (`bench-child`, a hidden subcommand, see [`child`]) that
//!    meet on a path in a temporary directory — no `fork`.
//! 3. **Matrix** ([`matrix::run_cell`], repeated by [`measure`]): every cell is two real launcher
//!    processes (this binary spawned twice on the same `--sharenet` path,
//!    like `demo`), each with `--timeout` and `--stats-json`; the two stats
//!    objects give throughput, notifications and wake-ups of *both* sides
//!    and `getrusage` CPU time of both processes. Each cell is repeated and
//!    reported as the median with the min–max spread.
//! 4. **Report**: every row ([`row`]) gets its ratios to the baselines of
//!    the same run ([`ratios`]) and the performance targets are checked
//!    against them ([`targets`]), and the run's own "What to use" picks
//!    are derived from them ([`advice`]); then a Markdown table ([`markdown`]:
//!    stdout, `--markdown`), one JSON object ([`json`], `--json`) with the
//!    machine ([`machine`]) and a `results` row per cell, and an SVG with
//!    two charts ([`plot`], `--svg`).
//!
//! A cell that fails (a launcher exits non-zero, loses packets, or passes
//! its deadline and is killed: a [`BenchError`]) is reported as failed in
//! the table; the run carries on.

pub mod advice;
pub mod baselines;
pub mod capture;
pub mod child;
pub mod devq;
mod error;
pub mod gso;
pub mod json;
pub mod machine;
pub mod markdown;
pub mod matrix;
pub mod measure;
pub mod pair;
pub mod plot;
pub mod ratios;
pub mod row;
pub mod spsc;
pub mod summary;
pub mod switch;
pub mod targets;

pub use child::ChildArgs;
pub use error::BenchError;

use crate::cli::config::Kind;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `bench` flags.
#[derive(Debug, Args, Clone)]
#[command(after_help = "Examples:
  lguest-launcher bench --quick
  lguest-launcher bench --json bench.json --markdown bench.md --svg bench.svg
  # a CI smoke test: every cell and baseline, tiny counts, one run each
  lguest-launcher bench --quick --count-scale 0.01 --runs 1")]
pub struct BenchArgs {
    /// A reduced matrix, about 1 minute on a quiet 2-vCPU machine (3 under
    /// load; the full matrix takes about 3 minutes quiet): all three
    /// transports, notify always and event-idx,
    /// nonblocking writes, wait sleep, spin and adaptive (the default),
    /// 64 and 1500 B, and every baseline.
    #[arg(long)]
    pub quick: bool,
    /// Write the results as one JSON object here.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write the Markdown report here too (it always goes to stdout).
    #[arg(long, value_name = "PATH")]
    pub markdown: Option<PathBuf>,
    /// Write the charts (throughput by size, latency per transport) here.
    #[arg(long, value_name = "PATH")]
    pub svg: Option<PathBuf>,
    /// Repeats per cell, with or without --quick [default: 3]; the stamped
    /// spin cells run at least 5 times unless N is 1 (their slowest run is
    /// checked against their fastest), and so do the switch rows.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: Option<u32>,
    /// Multiply every packet, ping and copy count by this (0.01 for a
    /// smoke test that takes seconds).
    #[arg(long, value_name = "FACTOR", default_value_t = 1.0, value_parser = parse_scale)]
    pub count_scale: f64,
    /// Packets per stream cell, overriding the mode's default (before
    /// --count-scale).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub packets: Option<u64>,
    /// Pings per ping cell, overriding the mode's default (before
    /// --count-scale).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub pings: Option<u64>,
    /// Only these transports (comma-separated); baselines always run.
    #[arg(long, value_delimiter = ',', value_enum)]
    pub transports: Vec<Kind>,
    /// Deadline for one pair of processes, in seconds; a pair still running
    /// then is killed and its cell reported as failed.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = parse_scale)]
    pub cell_timeout: f64,
    /// No progress bar or progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Only the switch rows (N stream/sink pairs through one `switch`
    /// against the same pairs on direct links): no other cell, no baseline.
    #[arg(long)]
    pub switch: bool,
    /// Pair counts of the switch rows, comma-separated (0: none)
    /// [default: 2,4].
    #[arg(long, value_delimiter = ',', value_name = "N,...", value_parser = clap::value_parser!(u32).range(0..=16))]
    pub switch_pairs: Vec<u32>,
}

fn parse_scale(s: &str) -> anyhow::Result<f64> {
    let v: f64 = s
        .parse()
        .map_err(|_| anyhow::anyhow!("`{s}` is not a number"))?;
    if !(v > 0.0 && v <= 1000.0) {
        anyhow::bail!("{v} is out of range; expected (0, 1000]");
    }
    Ok(v)
}

/// Run the benchmark; the report goes to stdout.
pub fn run(args: &BenchArgs) -> ExitCode {
    match run_inner(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// A scratch directory for rendezvous paths, removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("sharenet-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        Ok(ScratchDir(dir))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_inner(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut plan = matrix::plan(args);
    let switch_cells = switch_plan(args, &mut plan);
    let scratch = ScratchDir::new()?;
    let timeout = Duration::from_secs_f64(args.cell_timeout);

    let total = (plan.baselines.len() + 2) as u64 * plan.runs as u64
        + plan
            .cells
            .iter()
            .map(|c| c.runs(plan.runs) as u64)
            .sum::<u64>()
        + switch_cells
            .iter()
            .map(|c| c.runs(plan.runs) as u64)
            .sum::<u64>();
    let progress = progress_bar(total, args.quiet);
    if !args.quiet && progress.is_hidden() {
        eprintln!(
            "bench: {} cells and {} baselines, {} runs each ...",
            plan.cells.len(),
            plan.baselines.len(),
            plan.runs
        );
    }

    let mut rows = Vec::new();
    for b in &plan.baselines {
        progress.set_message(b.label());
        let row = baselines::measure(b, plan.runs, scratch.path(), timeout, || progress.inc(1));
        rows.push(row);
    }
    for (i, cell) in plan.cells.iter().enumerate() {
        progress.set_message(cell.label());
        let runs = cell.runs(plan.runs);
        let row = matrix::measure(cell, i, runs, scratch.path(), timeout, || progress.inc(1));
        rows.push(row);
    }
    for (i, cell) in switch_cells.iter().enumerate() {
        progress.set_message(cell.label());
        rows.push(switch::measure(
            cell,
            i,
            cell.runs(plan.runs),
            scratch.path(),
            timeout,
            || progress.inc(1),
        ));
    }
    progress.set_message("capture cost");
    let seen = capture::measure(
        plan.runs,
        plan.capture_packets,
        scratch.path(),
        timeout,
        || progress.inc(1),
    );
    progress.finish_and_clear();

    ratios::add_ratios(&mut rows);
    switch::add_ratios(&mut rows);
    let mut doc = json::Document {
        machine: machine::Machine::probe(),
        mode: if args.quick { "quick" } else { "full" }.into(),
        runs: plan.runs,
        elapsed_s: started.elapsed().as_secs_f64(),
        pruning: plan.pruning.clone(),
        counts: plan.counts.clone(),
        targets: Vec::new(),
        advice: advice::Advice::default(),
        results: rows,
        capture: seen,
    };
    doc.targets = targets::targets(&doc.results);
    doc.targets.push(doc.capture.target());
    doc.advice = advice::advise(&doc.results);
    let markdown = if args.switch {
        switch::markdown(&doc.results)
    } else {
        markdown::markdown(&doc) + &switch::markdown(&doc.results)
    };
    print!("{markdown}");

    let mut failed_output = false;
    if let Some(p) = &args.json {
        if let Err(e) = json::write_json(&doc, p) {
            eprintln!("error: cannot write {}: {e}", p.display());
            failed_output = true;
        }
    }
    if let Some(p) = &args.markdown {
        if let Err(e) = std::fs::write(p, &markdown) {
            eprintln!("error: cannot write {}: {e}", p.display());
            failed_output = true;
        }
    }
    if let Some(p) = &args.svg {
        if let Err(e) = plot::write_svg(&doc, p) {
            eprintln!("error: cannot draw {}: {e}", p.display());
            failed_output = true;
        }
    }
    if !args.quiet {
        let failed = doc.results.iter().filter(|r| r.status != "ok").count();
        eprintln!(
            "bench: {} rows ({failed} failed) in {:.1} s",
            doc.results.len(),
            doc.elapsed_s
        );
    }
    let all_cells_failed = doc.results.iter().filter(|r| r.is_cell()).all(|r| !r.ok());
    Ok(
        if failed_output || (all_cells_failed && !plan.cells.is_empty()) {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// The switch rows of this run (`--switch`: nothing else runs).
fn switch_plan(args: &BenchArgs, plan: &mut matrix::Plan) -> Vec<switch::SwitchCell> {
    if args.switch {
        plan.cells.clear();
        plan.baselines.clear();
        plan.pruning.push("--switch: only the switch rows.".into());
    }
    let pairs: Vec<u32> = if args.switch_pairs.is_empty() {
        switch::PAIRS.to_vec()
    } else {
        args.switch_pairs
            .iter()
            .copied()
            .filter(|&n| n > 0)
            .collect()
    };
    let kinds: Vec<Kind> = if args.transports.is_empty() {
        Kind::ALL.to_vec()
    } else {
        args.transports.clone()
    };
    switch::plan(&kinds, &pairs, args.quick, args.count_scale)
}

/// A bar on stderr, hidden when stderr is not a terminal or with `--quiet`.
fn progress_bar(total: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} runs  {msg}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}
