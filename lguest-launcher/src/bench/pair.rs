//! Two child processes that must both finish before a deadline.
//!
//! Every measurement in the benchmark is a pair of processes: two launchers
//! on one `--sharenet` path, or two `bench-child` processes of a baseline.
//! [`run_pair`] starts both, collects their stdout and stderr on helper
//! threads (so a chatty child never blocks on a full pipe), and kills a
//! child that is still running at the deadline — the launchers' own
//! `--timeout` should have ended them first; this is the backstop that
//! keeps one stuck cell from hanging the whole run.

use super::error::BenchError;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What one child left behind.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status (killed children included).
    pub status: ExitStatus,
    /// Everything it wrote on stdout.
    pub stdout: String,
    /// Everything it wrote on stderr.
    pub stderr: String,
    /// True when we killed it at the deadline.
    pub killed: bool,
}

impl Finished {
    /// How this child failed, or `None` when it exited 0.
    pub fn failure(&self, who: &str) -> Option<BenchError> {
        if self.killed {
            return Some(BenchError::Killed { who: who.into() });
        }
        if self.status.success() {
            return None;
        }
        let last = self.stderr.lines().rev().find(|l| !l.trim().is_empty());
        Some(BenchError::Exited {
            who: who.into(),
            status: self.status,
            last_line: last.map(|l| l.trim().to_string()),
        })
    }
}

struct Running {
    child: Child,
    out: Option<JoinHandle<String>>,
    err: Option<JoinHandle<String>>,
    status: Option<ExitStatus>,
    killed: bool,
}

fn drain(r: Option<impl Read + Send + 'static>) -> Option<JoinHandle<String>> {
    r.map(|mut r| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    })
}

fn start(mut cmd: Command) -> Result<Running, BenchError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| BenchError::Start {
        program: format!("{:?}", cmd.get_program()),
        source,
    })?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    Ok(Running {
        child,
        out,
        err,
        status: None,
        killed: false,
    })
}

impl Running {
    fn finish(mut self) -> Finished {
        let status = match self.status {
            Some(s) => s,
            None => match self.child.wait() {
                Ok(s) => s,
                Err(_) => std::os::unix::process::ExitStatusExt::from_raw(1 << 8),
            },
        };
        let join =
            |h: Option<JoinHandle<String>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
        Finished {
            status,
            stdout: join(self.out.take()),
            stderr: join(self.err.take()),
            killed: self.killed,
        }
    }
}

/// Start `a`, then `b`; wait for both until `deadline` from now, killing
/// whatever still runs then. Errors only when a process cannot be started.
pub fn run_pair(
    a: Command,
    b: Command,
    deadline: Duration,
) -> Result<(Finished, Finished), BenchError> {
    let mut ra = start(a)?;
    let mut rb = match start(b) {
        Ok(r) => r,
        Err(e) => {
            // Do not leave `a` waiting for a peer that will never come.
            let _ = ra.child.kill();
            let _ = ra.finish();
            return Err(e);
        }
    };
    let end = Instant::now() + deadline;
    let mut pause = Duration::from_micros(200);
    loop {
        for r in [&mut ra, &mut rb] {
            if r.status.is_none() {
                if let Ok(Some(s)) = r.child.try_wait() {
                    r.status = Some(s);
                }
            }
        }
        if ra.status.is_some() && rb.status.is_some() {
            break;
        }
        if Instant::now() >= end {
            for r in [&mut ra, &mut rb] {
                if r.status.is_none() {
                    let _ = r.child.kill();
                    r.killed = true;
                }
            }
            break;
        }
        std::thread::sleep(pause);
        // Poll fast for short runs, gently for long ones.
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    Ok((ra.finish(), rb.finish()))
}

/// The start of a launcher command for one side of a pair: this binary,
/// pinned to `cpu` when given, on `spec`, running `workload` for `count`
/// packets. The caller adds the cell's own flags.
pub fn launcher_command(spec: &str, workload: &str, count: u64, cpu: Option<usize>) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap_or_else(|_| "lguest-launcher".into()));
    if let Some(cpu) = cpu {
        c.args(["--cpu", &cpu.to_string()]);
    }
    c.arg("--sharenet")
        .arg(spec)
        .args(["--workload", workload])
        .args(["--count", &count.to_string()]);
    c
}
