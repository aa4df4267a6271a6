//! `demo`: one pair per transport, streaming then ping/echo, as a table.
//!
//! Each pair is two real launcher processes (this binary, spawned twice)
//! meeting on a fresh path in a temporary directory; the measuring side's
//! `--stats-json` is read back as [`Stats`].

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
    let spawn = |args: &[String], json: Option<&Path>| {
        let mut c = Command::new(&exe);
        c.arg("--sharenet").arg(spec).arg("--quiet").args(args);
        if let Some(j) = json {
            c.arg("--stats-json").arg(j);
        }
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c.spawn()
            .with_context(|| format!("cannot start {}", exe.display()))
    };
    let pa = spawn(a, Some(&json_a))?;
    let pb = spawn(b, None)?;
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

/// Run the demo; prints the table on stdout.
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
    println!(
        "{:<9} {:>10} {:>8} {:>9} {:>8} {:>13} {:>12}",
        "transport", "packets", "Mpps", "Gbit/s", "lost", "notif/packet", "ping p50 us"
    );
    let mut failed = false;
    for kind in kinds {
        let name = kind.name();
        let spec = |t: &str| format!("{name}:{}", dir.join(format!("{name}-{t}")).display());
        eprintln!("demo: {name}: streaming {count} x {size} B, then {pings} pings ...");
        let stream = run_pair(
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
        );
        let ping = run_pair(
            &dir,
            &format!("{name}-ping"),
            &spec("ping"),
            &s(&[
                "--workload",
                "ping",
                "--count",
                &pings,
                "--size",
                "64",
                "--wait",
                "sleep",
                "--timeout",
                "60",
            ]),
            &s(&[
                "--workload",
                "echo",
                "--count",
                &pings,
                "--wait",
                "sleep",
                "--timeout",
                "60",
            ]),
        );
        match (stream, ping) {
            (Ok(st), Ok(pg)) => {
                let pk = st.packets_received;
                println!(
                    "{:<9} {:>10} {:>8.3} {:>9.2} {:>8} {:>13.4} {:>12.1}",
                    name,
                    pk,
                    st.mpps,
                    st.gbps,
                    st.lost,
                    st.notifications_sent as f64 / pk.max(1) as f64,
                    pg.rtt_p50_us.unwrap_or(f64::NAN)
                );
            }
            (Err(e), _) | (_, Err(e)) => {
                println!("{name:<9} failed: {e:#}");
                failed = true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&dir);
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
