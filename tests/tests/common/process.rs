//! Launcher processes and their test directory: [`TestDir`] and [`Proc`].

use super::{launcher, Outcome, LAUNCHER_TIMEOUT};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A fresh directory for one test: rendezvous paths, stats JSON and logs.
/// Removed when the test passes; kept (and named in the failure message)
/// when it fails.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// `/tmp/sharenet-tests-<pid>-<n>-<label>`, empty.
    pub fn new(label: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!(
            "/tmp/sharenet-tests-{}-{n}-{label}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TestDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<dir>/<name>`, and the same as text for a flag's value.
    pub fn file(&self, name: &str) -> (PathBuf, String) {
        let path = self.path.join(name);
        let text = path.display().to_string();
        (path, text)
    }

    /// Write `text` to `<dir>/<name>` (a profile, say); its path, and the
    /// path as text for a flag's value.
    pub fn write_file(&self, name: &str, text: impl AsRef<[u8]>) -> (PathBuf, String) {
        let (path, s) = self.file(name);
        fs::write(&path, text).unwrap_or_else(|e| panic!("write {s}: {e}"));
        (path, s)
    }

    /// `KIND:<dir>/<name>`, the value for `--sharenet`.
    pub fn sharenet(&self, kind: &str, name: &str) -> String {
        format!("{kind}:{}", self.path.join(name).display())
    }

    /// Start one launcher: `--sharenet SPEC --stats-json <dir>/<role>.json`,
    /// `--timeout 30` unless `args` has one, stderr to `<dir>/<role>.log`.
    pub fn spawn(&self, role: &str, sharenet: &str, args: &[&str]) -> Proc {
        let stats = self.path.join(format!("{role}.json"));
        let mut argv: Vec<String> = vec![
            "--sharenet".into(),
            sharenet.into(),
            "--stats-json".into(),
            stats.display().to_string(),
        ];
        if !args.contains(&"--timeout") {
            argv.extend(["--timeout".into(), LAUNCHER_TIMEOUT.into()]);
        }
        argv.extend(args.iter().map(|a| a.to_string()));
        Proc::start(&self.path, role, argv, Some(stats))
    }

    /// Start `role` running `--workload WORKLOAD --count COUNT` and then
    /// `extra`, through [`TestDir::spawn`] (stats, log and timeout as there).
    pub fn workload(
        &self,
        role: &str,
        sharenet: &str,
        workload: &str,
        count: &str,
        extra: &[&str],
    ) -> Proc {
        let mut args = vec!["--workload", workload, "--count", count];
        args.extend_from_slice(extra);
        self.spawn(role, sharenet, &args)
    }

    /// A sink named `sink`: `--workload sink --count COUNT` and `extra`.
    pub fn sink(&self, sharenet: &str, count: &str, extra: &[&str]) -> Proc {
        self.workload("sink", sharenet, "sink", count, extra)
    }

    /// A stream named `stream`: `--workload stream --count COUNT` and `extra`.
    pub fn stream(&self, sharenet: &str, count: &str, extra: &[&str]) -> Proc {
        self.workload("stream", sharenet, "stream", count, extra)
    }

    /// Start the launcher with exactly `args` (for command-line tests).
    pub fn spawn_raw(&self, role: &str, args: &[&str]) -> Proc {
        Proc::start(
            &self.path,
            role,
            args.iter().map(|a| a.to_string()).collect(),
            None,
        )
    }

    /// Run the launcher with exactly `args` and wait for it, 10 s at most:
    /// for usage errors and short runs (a run that outlives it is killed,
    /// and its outcome says so).
    pub fn run_raw(&self, role: &str, args: &[&str]) -> Outcome {
        self.spawn_raw(role, args).finish(Duration::from_secs(10))
    }

    /// Start the launcher with exactly `args`, reading its stats from
    /// `<dir>/<role>.json` (the caller passes `--stats-json` there).
    pub fn spawn_raw_with_stats(&self, role: &str, args: &[&str]) -> Proc {
        Proc::start(
            &self.path,
            role,
            args.iter().map(|a| a.to_string()).collect(),
            Some(self.path.join(format!("{role}.json"))),
        )
    }

    /// Start another program (a test binary such as `hostile-peer`) with
    /// exactly `args`, stderr to `<dir>/<role>.log`.
    pub fn spawn_program(&self, role: &str, program: &Path, args: &[&str]) -> Proc {
        Proc::start_program(
            program,
            &self.path,
            role,
            args.iter().map(|a| a.to_string()).collect(),
            None,
        )
    }

    /// Entries left in the directory other than our own logs and stats.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left: Vec<String> = fs::read_dir(&self.path)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| {
                        !(n.ends_with(".log") || n.ends_with(".out") || n.ends_with(".json"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        left.sort();
        left
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept test directory {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A running launcher. Dropping it kills (SIGKILL) and reaps the process if
/// it is still running, so a failed test leaves nothing behind.
pub struct Proc {
    role: String,
    argv: Vec<String>,
    child: Child,
    spawned: Instant,
    log: PathBuf,
    out: PathBuf,
    stats: Option<PathBuf>,
    exited: Option<(ExitStatus, Instant)>,
}

impl Proc {
    fn start(dir: &Path, role: &str, argv: Vec<String>, stats: Option<PathBuf>) -> Proc {
        Proc::start_program(launcher(), dir, role, argv, stats)
    }

    fn start_program(
        program: &Path,
        dir: &Path,
        role: &str,
        argv: Vec<String>,
        stats: Option<PathBuf>,
    ) -> Proc {
        let log = dir.join(format!("{role}.log"));
        let out = dir.join(format!("{role}.out"));
        let child = Command::new(program)
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("create stdout file"))
            .stderr(File::create(&log).expect("create stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        Proc {
            role: role.into(),
            argv,
            child,
            spawned: Instant::now(),
            log,
            out,
            stats,
            exited: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it has written to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn poll(&mut self) -> bool {
        if self.exited.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exited = Some((st, Instant::now()));
            }
        }
        self.exited.is_some()
    }

    /// Send `sig` (no-op once it has exited and been reaped).
    pub fn signal(&mut self, sig: Signal) {
        if !self.poll() {
            kill(Pid::from_raw(self.pid() as i32), sig)
                .unwrap_or_else(|e| panic!("kill -{sig} {} ({}): {e}", self.pid(), self.role));
        }
    }

    /// Wait until stderr contains `needle`; false if the process exited or
    /// `limit` passed first.
    pub fn wait_for_stderr(&mut self, needle: &str, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        loop {
            if self.stderr().contains(needle) {
                return true;
            }
            if self.poll() || Instant::now() >= end {
                return self.stderr().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Wait up to `limit` for it to exit (killing it after that, which the
    /// outcome records as "still running") and collect what it left.
    pub fn finish(&mut self, limit: Duration) -> Outcome {
        let asked = Instant::now();
        let end = asked + limit;
        let mut killed = false;
        while !self.poll() {
            if Instant::now() >= end {
                let _ = self.child.kill();
                let st = self.child.wait().expect("wait after kill");
                self.exited = Some((st, Instant::now()));
                killed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let (status, at) = self.exited.expect("exited");
        let (stats, stats_text) = match &self.stats {
            None => (None, String::new()),
            Some(p) => match fs::read_to_string(p) {
                Ok(t) => (serde_json::from_str(&t).ok(), t),
                Err(e) => (None, format!("<no stats at {}: {e}>", p.display())),
            },
        };
        Outcome {
            role: self.role.clone(),
            pid: self.pid(),
            argv: self.argv.clone(),
            code: if killed { None } else { status.code() },
            status,
            killed_by_test: killed,
            lifetime: at.duration_since(self.spawned),
            waited: at.duration_since(asked),
            stderr: self.stderr(),
            stdout: fs::read_to_string(&self.out).unwrap_or_default(),
            stats,
            stats_text,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.poll() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The arguments of a vhost-user backend on `socket` linked through
/// `sharenet`: `vhost-user --socket SOCKET --sharenet SHARENET`, then
/// `extra`.
pub fn vhost_user_args<'a>(socket: &'a str, sharenet: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["vhost-user", "--socket", socket, "--sharenet", sharenet];
    args.extend_from_slice(extra);
    args
}
