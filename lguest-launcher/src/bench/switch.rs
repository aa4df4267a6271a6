//! The switch rows: N stream/sink pairs through one `lguest-launcher
//! switch` against the same N pairs on direct links, in the same run.
//!
//! A row is N sinks and N streams (`--payload stamp`, 1500 B, so what is
//! measured is the links, not the synthetic guests' checksumming), either
//! pair by pair on their own `--sharenet` paths (`pairs-N-direct`) or all
//! 2N joined to one switch (`pairs-N-switch`), each stream sending to its
//! own sink's MAC; and the same 2N on a switch with `--push off`
//! (`pairs-N-switch-pull`), where every port pulls: the frame is copied
//! into the port's ring and the sink's copier copies it again, so the cost
//! of that extra copy (what `vhost-user` and `--share exchange` members
//! still pay) stays visible beside the push row. The sinks join first, and the streams start only once
//! the switch has learned every sink's address (its stats file says so),
//! so no frame is flooded. Figures:
//!
//! * aggregate Mpps: frames every sink received over the longest stream's
//!   elapsed time (from its connect to its last frame consumed);
//! * CPU s/Mpkt: the CPU time of *every* process (all members, and the
//!   switch) per million frames delivered;
//! * for a `switch` row, `ratio`: its CPU per frame over the direct row's
//!   of the same N, and the hop's cost per frame (the difference), in the
//!   report's "Switch" section. The target is a ratio of at most
//!   1.5.
//!
//! The ratios and the report's "Switch" section are `switch/report.rs`.
//!
//! The processes are not pinned: 2N + 1 of them share the machine's CPUs.
//! The `-one-cpu` rows (`pairs-N-direct-one-cpu`, `pairs-N-switch-one-cpu`)
//! pin every member and the switch (`--cpu`) to one CPU: on two vCPUs the
//! scheduler keeps each direct pair on one CPU but spreads a switch's
//! members, so a third of its kicks and most frames cross CPUs; pinned,
//! what remains is the hop's own cost (BENCHMARKS.md, "After round 2,
//! session 9").
//! The switch runs with `--hold-ms 5000`: on a loaded machine a sink may
//! be off the CPU for longer than the default 250 ms hold, and the row
//! measures cost, not flow control.

use super::error::BenchError;
use super::json::read_stats;
use super::matrix::at_least_stability_runs;
use super::measure::measure as measure_runs;
use super::row::{Row, RowKey};
use super::summary::Measurement;
use crate::cli::config::{Kind, Wait};
use crate::stats::Stats;
use crate::switch::stats::SwitchStats;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Frame size of the switch rows.
pub const SIZE: u32 = 1500;
/// Frames per stream per run (before `--count-scale`): (quick, full).
const FRAMES: (u64, u64) = (200_000, 500_000);
/// Pair counts measured by default.
pub const PAIRS: [u32; 2] = [2, 4];

/// How the pairs of a row are linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Each pair on its own link.
    Direct,
    /// Every member joined to one switch (push ports, the default).
    Switch,
    /// Every member joined to one switch with `--push off` (pull ports).
    SwitchPull,
}

/// One switch row to measure.
#[derive(Clone, Debug)]
pub struct SwitchCell {
    /// Transport of every link (and of the switch).
    pub kind: Kind,
    /// Stream/sink pairs.
    pub pairs: u32,
    /// Direct links or one switch.
    pub via: Via,
    /// The members' `--wait`.
    pub wait: Wait,
    /// Frames per stream.
    pub count: u64,
    /// Every member and the switch pinned (`--cpu`) to this one CPU: the
    /// `-one-cpu` rows. `None`: the scheduler places them.
    pub one_cpu: Option<usize>,
}

impl SwitchCell {
    /// The row's `workload`: `pairs-N-direct` or `pairs-N-switch`.
    pub fn workload(&self) -> String {
        let via = match self.via {
            Via::Direct => "direct",
            Via::Switch => "switch",
            Via::SwitchPull => "switch-pull",
        };
        let cpu = if self.one_cpu.is_some() {
            "-one-cpu"
        } else {
            ""
        };
        format!("pairs-{}-{via}{cpu}", self.pairs)
    }

    /// A label for the progress bar.
    pub fn label(&self) -> String {
        format!(
            "{} {} {}",
            self.kind.name(),
            self.workload(),
            self.wait.name()
        )
    }

    /// How many times to run this row when the bench asks for `runs`:
    /// at least [`super::matrix::STABILITY_RUNS`], unless a single run was asked for (the
    /// CI smoke test). One run of a switch row reads anywhere from 1.0x
    /// to 3.6x its direct row on this kind of machine (BENCHMARKS.md,
    /// "After round 2, session 9"): a median of three is one bad run away
    /// from the tail.
    pub fn runs(&self, runs: u32) -> u32 {
        at_least_stability_runs(runs)
    }

    fn key(&self) -> RowKey {
        RowKey {
            transport: self.kind.name().into(),
            notify: Some("event-idx".into()),
            writes: Some("nonblocking".into()),
            wait: Some(self.wait.name().into()),
            size: SIZE,
            workload: self.workload(),
        }
    }
}

/// The switch rows of a run: for each of `pairs`, direct, switch (push)
/// and switch with `--push off`, on
/// eventfd (or the first of `kinds`), members `--wait adaptive` (the
/// default) and `sleep`; then direct and switch again with every process
/// pinned to one CPU (the `-one-cpu` rows, when the machine has more than
/// one): the hop's own cost, without the scheduler spreading a pair's
/// processes over the CPUs.
pub fn plan(kinds: &[Kind], pairs: &[u32], quick: bool, scale: f64) -> Vec<SwitchCell> {
    let Some(&kind) = kinds
        .iter()
        .find(|&&k| k == Kind::Eventfd)
        .or(kinds.first())
    else {
        return Vec::new();
    };
    let count = ((if quick { FRAMES.0 } else { FRAMES.1 }) as f64 * scale)
        .round()
        .max(1.0) as u64;
    let cell = |pairs, via, wait, one_cpu| SwitchCell {
        kind,
        pairs,
        via,
        wait,
        count,
        one_cpu,
    };
    let mut cells = Vec::new();
    for wait in [Wait::Adaptive, Wait::Sleep] {
        for &n in pairs {
            for via in [Via::Direct, Via::Switch, Via::SwitchPull] {
                cells.push(cell(n, via, wait, None));
            }
        }
    }
    if let Some(cpu) = one_cpu() {
        for wait in [Wait::Adaptive, Wait::Sleep] {
            for &n in pairs {
                for via in [Via::Direct, Via::Switch] {
                    cells.push(cell(n, via, wait, Some(cpu)));
                }
            }
        }
    }
    cells
}

/// The CPU the `-one-cpu` rows run on: the first this process may use,
/// on a machine with more than one (on one CPU every row is one-CPU).
fn one_cpu() -> Option<usize> {
    let online = crate::cli::online_cpus();
    if online < 2 {
        return None;
    }
    (0..online).find(|&c| crate::cli::cpu_allowed(c))
}

/// Run one switch row `runs` times into a row (see [`SwitchCell::runs`]).
pub fn measure(
    cell: &SwitchCell,
    index: usize,
    runs: u32,
    dir: &Path,
    timeout: Duration,
    tick: impl FnMut(),
) -> Row {
    let once = |run: u32| {
        let d = dir.join(format!("sw{index}-r{run}"));
        let _ = std::fs::create_dir_all(&d);
        let result = run_once(cell, &d, timeout);
        let _ = std::fs::remove_dir_all(&d);
        result
    };
    measure_runs(cell.key(), runs, "mpps", once, tick)
}

/// A process we started and must not leave behind.
struct Proc {
    who: String,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn(who: String, args: &[String]) -> Result<Proc, BenchError> {
    let exe = std::env::current_exe().unwrap_or_else(|_| "lguest-launcher".into());
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().map_err(|source| BenchError::Start {
        program: who.clone(),
        source,
    })?;
    Ok(Proc { who, child })
}

/// Wait for `p` until `end`; its failure, if it failed.
fn finish(p: &mut Proc, end: Instant) -> Result<(), BenchError> {
    loop {
        if let Ok(Some(status)) = p.child.try_wait() {
            if status.success() {
                return Ok(());
            }
            return Err(BenchError::Exited {
                who: p.who.clone(),
                status,
                last_line: None,
            });
        }
        if Instant::now() >= end {
            let _ = p.child.kill();
            let _ = p.child.wait();
            return Err(BenchError::Killed { who: p.who.clone() });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn member_args(cell: &SwitchCell, spec: &str, json: &Path, timeout: Duration) -> Vec<String> {
    let mut a: Vec<String> = [
        "--sharenet",
        spec,
        "--payload",
        "stamp",
        "--wait",
        cell.wait.name(),
        "--notify",
        "event-idx",
        "--quiet",
        "--timeout",
        &format!("{:.1}", timeout.as_secs_f64()),
        "--stats-json",
        &json.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(pin_args(cell));
    a
}

/// `--cpu N` for a `-one-cpu` row's processes.
fn pin_args(cell: &SwitchCell) -> Vec<String> {
    cell.one_cpu
        .map(|c| vec!["--cpu".to_string(), c.to_string()])
        .unwrap_or_default()
}

/// Run the pairs of `cell` once in `dir`.
fn run_once(cell: &SwitchCell, dir: &Path, timeout: Duration) -> Result<Measurement, BenchError> {
    let kind = cell.kind.name();
    let n = cell.pairs as usize;
    let end = Instant::now() + timeout + Duration::from_secs(5);
    let sw_json = dir.join("switch.json");
    let mut switch = None;
    let via_switch = cell.via != Via::Direct;
    if via_switch {
        let push = if cell.via == Via::SwitchPull {
            "off"
        } else {
            "on"
        };
        let args: Vec<String> = [
            "switch",
            "--sharenet",
            &format!("{kind}:{}", dir.join("sw").display()),
            "--ports",
            &(2 * n).to_string(),
            "--quiet",
            // A member starved of CPU for a moment on a loaded machine must
            // not be taken for a stalled one (frames dropped, run short).
            "--hold-ms",
            "5000",
            "--push",
            push,
            "--stats-json",
            &sw_json.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(pin_args(cell))
        .collect();
        switch = Some(spawn("switch".into(), &args)?);
    }
    // Where member `k` (sinks even, streams odd) joins.
    let spec = |k: usize| match (cell.via, cell.kind) {
        (Via::Direct, _) => format!("{kind}:{}", dir.join(format!("link{}", k / 2)).display()),
        (_, Kind::Fifo) => format!("fifo:{}.{k}", dir.join("sw").display()),
        (_, _) => format!("{kind}:{}", dir.join("sw").display()),
    };
    let mac = |side: u8, i: usize| format!("02:00:00:00:{side:02x}:{i:02x}");
    if via_switch && cell.kind != Kind::Fifo {
        // The members connect to the switch's listener: it must be there.
        let sw = dir.join("sw");
        while !sw.exists() {
            if Instant::now() >= end {
                return Err(BenchError::Killed {
                    who: "switch (never listened)".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let mut sinks = Vec::new();
    for i in 0..n {
        let json = dir.join(format!("sink{i}.json"));
        let mut a = member_args(cell, &spec(2 * i), &json, timeout);
        a.extend(
            ["--workload", "sink", "--count", &cell.count.to_string()]
                .iter()
                .map(|s| s.to_string()),
        );
        a.extend(["--mac".to_string(), mac(1, i)]);
        sinks.push((spawn(format!("sink {i}"), &a)?, json));
    }
    if via_switch {
        // Every sink's hello learned: no stream frame will be flooded.
        loop {
            let learned = read_stats::<SwitchStats>(&sw_json)
                .map(|s| s.learned)
                .unwrap_or(0);
            if learned >= n as u64 {
                break;
            }
            if Instant::now() >= end {
                return Err(BenchError::Killed {
                    who: "switch (sinks never joined)".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut streams = Vec::new();
    for i in 0..n {
        let json = dir.join(format!("stream{i}.json"));
        let mut a = member_args(cell, &spec(2 * i + 1), &json, timeout);
        a.extend(
            [
                "--workload",
                "stream",
                "--count",
                &cell.count.to_string(),
                "--size",
                &SIZE.to_string(),
                "--mac",
                &mac(2, i),
                "--dst",
                &mac(1, i),
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        streams.push((spawn(format!("stream {i}"), &a)?, json));
    }
    for (p, _) in streams.iter_mut().chain(sinks.iter_mut()) {
        finish(p, end)?;
    }
    let mut m = Measurement::default();
    let (mut frames, mut span, mut cpu) = (0u64, 0f64, 0f64);
    let (mut notes, mut wakes, mut hits, mut sleeps) = (0u64, 0u64, 0u64, 0u64);
    for (_, json) in &sinks {
        let s: Stats = read_stats(json)?;
        if s.lost + s.corrupted > 0 || s.packets_received < cell.count {
            return Err(BenchError::Short {
                received: s.packets_received,
                expected: cell.count,
            });
        }
        frames += s.packets_received;
        cpu += s.cpu_s;
        (notes, wakes) = (notes + s.notifications_sent, wakes + s.wakeups);
        (hits, sleeps) = (hits + s.spin_hits, sleeps + s.sleeps);
    }
    for (_, json) in &streams {
        let s: Stats = read_stats(json)?;
        span = span.max(s.elapsed_s);
        cpu += s.cpu_s;
        (notes, wakes) = (notes + s.notifications_sent, wakes + s.wakeups);
        (hits, sleeps) = (hits + s.spin_hits, sleeps + s.sleeps);
    }
    if let Some(mut p) = switch.take() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        finish(&mut p, end)?;
        let s: SwitchStats = read_stats(&sw_json)?;
        cpu += s.cpu_s;
        notes += s.ports.iter().map(|p| p.notifications_sent).sum::<u64>();
        (wakes, hits, sleeps) = (wakes + s.wakeups, hits + s.spin_hits, sleeps + s.sleeps);
    }
    if span <= 0.0 || frames == 0 {
        return Err(BenchError::NoElapsed);
    }
    let per = |v: u64| Some(v as f64 / frames as f64);
    m.packets = frames;
    m.mpps = Some(frames as f64 / span / 1e6);
    m.gbps = Some(frames as f64 / span * SIZE as f64 * 8.0 / 1e9);
    m.cpu_s_per_mpkt = Some(cpu / (frames as f64 / 1e6));
    m.notifications_per_packet = per(notes);
    m.wakeups_per_packet = per(wakes);
    m.spin_hits_per_packet = per(hits);
    m.sleeps_per_packet = per(sleeps);
    Ok(m)
}

mod report;
pub use report::{add_ratios, is_switch_row, markdown};

#[cfg(test)]
mod tests;
