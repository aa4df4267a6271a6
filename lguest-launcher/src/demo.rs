//! `demo`: per transport, a stream pair and two ping/echo pairs, as a table.
//!
//! Each pair is two real launcher processes (this binary, spawned twice)
//! meeting on a fresh path in a temporary directory; the measuring side's
//! `--stats-json` is read back as [`Stats`]. The stream runs in the default
//! modes; the pings run twice, in the default `--wait adaptive` (the
//! polling answer) and in `--wait sleep` (both sides block in the
//! transport: a cross-core wake-up per packet), so the table shows what
//! the default costs and what sleeping would. Progress lines go to stderr
//! as each pair finishes; the table goes to stdout once, at the end, so it
//! is never interleaved with them.
//!
//! The two sides of each pair are pinned to CPUs 1 and 0 when this process
//! may use both, as `bench` pins its pairs: unpinned, the scheduler now
//! and then puts both on one CPU, and a polling side then holds the CPU
//! its peer needs (an adaptive ping p50 moved between 1 and 15 µs from run
//! to run that way, against 1.6 µs every run pinned, at load 6).

use crate::bench::matrix::pair_cpus;
use crate::cli::config::Kind;
use crate::cli::DemoArgs;
use crate::stats::Stats;
use anyhow::{bail, Context};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

/// Start `a` and `b` on the same `--sharenet` and wait for both; returns
/// the stats of side `a` (the measuring side).
fn run_pair(
    dir: &Path,
    tag: &str,
    spec: &str,
    a: &[String],
    b: &[String],
) -> anyhow::Result<Stats> {
    let exe = std::env::current_exe().context("cannot find own binary")?;
    let json_a = dir.join(format!("{tag}-a.json"));
    let (cpu_a, cpu_b) = pair_cpus();
    let spawn = |args: &[String], json: Option<&Path>, cpu: Option<usize>| {
        let mut c = Command::new(&exe);
        c.arg("--sharenet").arg(spec).arg("--quiet").args(args);
        if let Some(cpu) = cpu {
            c.arg("--cpu").arg(cpu.to_string());
        }
        if let Some(j) = json {
            c.arg("--stats-json").arg(j);
        }
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c.spawn()
            .with_context(|| format!("cannot start {}", exe.display()))
    };
    let pa = spawn(a, Some(&json_a), cpu_a)?;
    let pb = spawn(b, None, cpu_b)?;
    let oa = pa
        .wait_with_output()
        .with_context(|| format!("{tag} side a"))?;
    let ob = pb
        .wait_with_output()
        .with_context(|| format!("{tag} side b"))?;
    for (o, side) in [(&oa, "a"), (&ob, "b")] {
        if !o.status.success() {
            bail!(
                "{tag} side {side} failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
    }
    let text = std::fs::read_to_string(&json_a).with_context(|| json_a.display().to_string())?;
    serde_json::from_str(&text).with_context(|| json_a.display().to_string())
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// What `demo --help` and the README say about the table: one line per
/// column, and the modes each figure is measured in.
pub const HELP: &str = "\
The table (stdout, printed once every pair has finished; progress goes to stderr):
  transport           fifo, unix or eventfd
  packets             frames the sink received intact, of --count streamed
  Mpps                million frames per second, sink side (stream)
  Gbit/s              frame bits per second, --size B frames (stream)
  lost                frames sent but never received (stream; should be 0)
  notif/packet        notifications the sink's side wrote per frame received
                      (event-idx suppression keeps it far below 1)
  ping p50 adaptive   median round trip in µs of --pings 64 B pings, both sides
                      --wait adaptive (the default: poll for a budget
                      calibrated from a measured wake-up, then sleep)
  ping p50 sleep      the same with both sides --wait sleep: each round trip
                      pays two cross-core wake-ups (tens of µs here)

Modes: the stream and both pings run the defaults, --notify event-idx
--writes nonblocking --wait adaptive; only the last column changes --wait
(to sleep). The two sides of each pair run on CPUs 1 and 0 when both
are allowed (as `lguest-launcher bench` pins its pairs; the first
progress line says so). `lguest-launcher bench` measures every mode.

Example:
  lguest-launcher demo --count 20000 --pings 200 --transports fifo,eventfd";

/// One finished line of the table.
struct Line {
    name: &'static str,
    result: anyhow::Result<(Stats, Stats, Stats)>,
}

const HEADER: [&str; 8] = [
    "transport",
    "packets",
    "Mpps",
    "Gbit/s",
    "lost",
    "notif/packet",
    "ping p50 adaptive",
    "ping p50 sleep",
];

fn print_table(lines: &[Line]) {
    let h = HEADER;
    println!(
        "{:<9} {:>10} {:>8} {:>7} {:>5} {:>12} {:>17} {:>14}",
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]
    );
    let us = |p: Option<f64>| match p {
        Some(v) => format!("{v:.1} µs"),
        None => "–".into(),
    };
    for l in lines {
        match &l.result {
            Ok((st, adaptive, sleep)) => {
                let pk = st.packets_received;
                println!(
                    "{:<9} {:>10} {:>8.3} {:>7.2} {:>5} {:>12.4} {:>17} {:>14}",
                    l.name,
                    pk,
                    st.mpps,
                    st.gbps,
                    st.lost,
                    st.notifications_sent as f64 / pk.max(1) as f64,
                    us(adaptive.rtt_p50_us),
                    us(sleep.rtt_p50_us)
                );
            }
            Err(e) => println!("{:<9} failed: {e:#}", l.name),
        }
    }
}

/// Run the demo: progress on stderr, then the table on stdout.
pub fn run(args: &DemoArgs) -> ExitCode {
    let kinds: Vec<Kind> = if args.transports.is_empty() {
        Kind::ALL.to_vec()
    } else {
        args.transports.clone()
    };
    let dir = std::env::temp_dir().join(format!("sharenet-demo-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: cannot create {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    let (count, size, pings) = (
        args.count.to_string(),
        args.size.to_string(),
        args.pings.to_string(),
    );
    match pair_cpus() {
        (Some(a), Some(b)) => {
            eprintln!("demo: each pair's two sides run pinned, on CPUs {a} and {b}")
        }
        _ => eprintln!("demo: pairs run unpinned (this process may not use CPUs 0 and 1)"),
    }
    let mut lines = Vec::new();
    for kind in kinds {
        let name = kind.name();
        let spec = |t: &str| format!("{name}:{}", dir.join(format!("{name}-{t}")).display());
        eprintln!(
            "demo: {name}: streaming {count} x {size} B, then {pings} pings with --wait adaptive and with --wait sleep ..."
        );
        let stream = || {
            run_pair(
                &dir,
                &format!("{name}-stream"),
                &spec("stream"),
                &s(&["--workload", "sink", "--count", &count, "--timeout", "60"]),
                &s(&[
                    "--workload",
                    "stream",
                    "--count",
                    &count,
                    "--size",
                    &size,
                    "--timeout",
                    "60",
                ]),
            )
        };
        let ping = |wait: &str| {
            let common = ["--count", &pings, "--wait", wait, "--timeout", "60"];
            let mut a = s(&["--workload", "ping", "--size", "64"]);
            a.extend(s(&common));
            let mut b = s(&["--workload", "echo"]);
            b.extend(s(&common));
            run_pair(
                &dir,
                &format!("{name}-ping-{wait}"),
                &spec(&format!("ping-{wait}")),
                &a,
                &b,
            )
        };
        let result = (|| Ok((stream()?, ping("adaptive")?, ping("sleep")?)))();
        match &result {
            Ok(_) => eprintln!("demo: {name}: done"),
            Err(e) => eprintln!("demo: {name}: failed: {e:#}"),
        }
        lines.push(Line { name, result });
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&dir);
    print_table(&lines);
    if lines.iter().any(|l| l.result.is_err()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
