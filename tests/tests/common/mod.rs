//! Shared helpers for the sharenet integration tests.
//!
//! Every test drives the real `lguest-launcher` binary as separate
//! processes, the way a user would: two launchers given the same
//! `--sharenet KIND:PATH` find each other, move packets, write their stats
//! JSON and exit. The helpers here do the plumbing so each test reads as
//! the behaviour it checks:
//!
//! * [`launcher`] finds the binary next to the test binary (and builds it
//!   with the same profile, so a test never runs a stale launcher);
//! * [`TestDir`] is a fresh directory per test for rendezvous paths, stats
//!   JSON and the captured stderr of each process;
//! * [`Proc`] is a running launcher that is killed and reaped if the test
//!   fails, so nothing outlives a failed test;
//! * [`Outcome`] is what a finished launcher left behind (exit code,
//!   stderr, stats JSON read as the launcher's own typed [`Stats`]), and
//!   prints all of it when an assertion fails;
//! * [`field!`] names one stats field, so a check reads it typed and a
//!   misspelt field is a compile error, not a "missing" at run time;
//! * [`Checks`] collects every broken expectation of a test before failing,
//!   so one run shows everything that went wrong, not just the first thing.
//!
//! The machine these run on has two cores and each pair is two busy
//! processes, so tests that spawn pairs hold [`serial`] to keep timing
//! assertions from being disturbed by a neighbouring test.

#![allow(dead_code)] // each test binary uses a different subset

pub use lguest_launcher::stats::Stats;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// `--timeout` given to every launcher unless the test picks its own: long
/// enough for a loaded machine, short enough that nothing hangs forever.
pub const LAUNCHER_TIMEOUT: &str = "30";
/// How long a test waits for a launcher with the default timeout to exit
/// before killing it (its own timeout plus the watchdog's 2 s and slack).
pub const EXIT_LIMIT: Duration = Duration::from_secs(40);

/// Serializes the tests that spawn pairs: two cores, two busy processes.
static SERIAL: Mutex<()> = Mutex::new(());

/// Take the global pair lock; a test that panicked while holding it does
/// not poison the rest of the suite.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The launcher binary: `$SHARENET_LAUNCHER` if set, else
/// `target/<profile>/lguest-launcher` next to this test binary (which lives
/// in `target/<profile>/deps/`). Cargo does not build other packages' bins
/// for an integration test, so we run `cargo build -p lguest-launcher` with
/// the same profile once per test binary: a no-op when it is fresh, and it
/// keeps the suite from testing a stale launcher.
pub fn launcher() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(find_or_build)
}

fn find_or_build() -> PathBuf {
    if let Some(p) = std::env::var_os("SHARENET_LAUNCHER") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().and_then(Path::parent).unwrap_or_else(|| {
        panic!(
            "test binary {} is not in target/<profile>/deps",
            exe.display()
        )
    });
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("profile directory name")
        .to_owned();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile_dir.parent().expect("target dir").to_path_buf());
    let bin = target_dir.join(&profile).join("lguest-launcher");

    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--quiet", "-p", "lguest-launcher", "--target-dir"])
        .arg(&target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let built = cmd.output();
    let ok = matches!(&built, Ok(o) if o.status.success());
    if !ok {
        let why = match &built {
            Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => format!("cannot run cargo: {e}"),
        };
        if bin.exists() {
            eprintln!(
                "warning: `cargo build -p lguest-launcher` failed; testing the existing {}\n{why}",
                bin.display()
            );
        } else {
            panic!("cannot build lguest-launcher ({profile}):\n{why}");
        }
    }
    assert!(
        bin.exists(),
        "no launcher at {} after building it",
        bin.display()
    );
    bin
}

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

    /// Start the launcher with exactly `args` (for command-line tests).
    pub fn spawn_raw(&self, role: &str, args: &[&str]) -> Proc {
        Proc::start(
            &self.path,
            role,
            args.iter().map(|a| a.to_string()).collect(),
            None,
        )
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

/// What a finished launcher left behind.
pub struct Outcome {
    /// The test's name for it (`sink`, `stream`, ...).
    pub role: String,
    /// Its pid.
    pub pid: u32,
    /// Its arguments.
    pub argv: Vec<String>,
    /// Exit code; `None` if a signal ended it or the test had to kill it.
    pub code: Option<i32>,
    /// The raw exit status.
    pub status: ExitStatus,
    /// The test killed it because it outlived the wait limit.
    pub killed_by_test: bool,
    /// Spawn to exit.
    pub lifetime: Duration,
    /// From the call to [`Proc::finish`] to exit (e.g. kill-to-exit).
    pub waited: Duration,
    /// Everything it wrote on stderr.
    pub stderr: String,
    /// Everything it wrote on stdout.
    pub stdout: String,
    /// The stats JSON, if written and valid.
    pub stats: Option<Stats>,
    /// The stats file's text (or why there is none).
    pub stats_text: String,
}

/// One stats field: its name in the JSON contract (for messages) and how
/// to read it from the typed [`Stats`]. Made by [`field!`].
pub struct Field<T> {
    /// The JSON field name.
    pub name: &'static str,
    /// Read it.
    pub read: fn(&Stats) -> T,
}

// By hand: a derive would ask `T: Copy`, and a `String` field is a field too.
impl<T> Clone for Field<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Field<T> {}

/// `field!(packets_received)`: the [`Field`] for a `Stats` member, named
/// as it is in the JSON.
#[macro_export]
macro_rules! field {
    ($f:ident) => {
        $crate::common::Field {
            name: stringify!($f),
            read: |s: &$crate::common::Stats| s.$f.clone(),
        }
    };
}

/// A stats value a numeric check (`>`) can compare: counts, seconds and
/// the optional round-trip percentiles (`None` when the run had none).
pub trait Number: Copy {
    /// The value as a float, if present.
    fn number(self) -> Option<f64>;
}

impl Number for u64 {
    fn number(self) -> Option<f64> {
        Some(self as f64)
    }
}

impl Number for u32 {
    fn number(self) -> Option<f64> {
        Some(f64::from(self))
    }
}

impl Number for f64 {
    fn number(self) -> Option<f64> {
        Some(self)
    }
}

impl Number for Option<f64> {
    fn number(self) -> Option<f64> {
        self
    }
}

impl Outcome {
    /// A stats field, if the stats were written and valid.
    pub fn stat<T>(&self, f: Field<T>) -> Option<T> {
        self.stats.as_ref().map(f.read)
    }

    /// A numeric stats field, if present.
    pub fn num<T: Number>(&self, f: Field<T>) -> Option<f64> {
        self.stat(f).and_then(Number::number)
    }

    /// A counter; panics with the full dump if there are no stats.
    #[track_caller]
    pub fn u64(&self, f: Field<u64>) -> u64 {
        match self.stat(f) {
            Some(v) => v,
            None => panic!(
                "{}: stats field `{}` missing or not a count\n{self}",
                self.role, f.name
            ),
        }
    }

    /// A string field, or "" if there are no stats.
    pub fn text(&self, f: Field<String>) -> String {
        self.stat(f).unwrap_or_default()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.killed_by_test {
            "still running: killed by the test".to_string()
        } else {
            match self.code {
                Some(c) => format!("exit {c}"),
                None => format!("ended by {:?}", self.status),
            }
        };
        writeln!(
            f,
            "--- {} (pid {}): {how} after {:.3} s (waited {:.3} s)",
            self.role,
            self.pid,
            self.lifetime.as_secs_f64(),
            self.waited.as_secs_f64()
        )?;
        writeln!(f, "    args: {}", self.argv.join(" "))?;
        writeln!(f, "    stderr:")?;
        for l in self.stderr.lines() {
            writeln!(f, "      {l}")?;
        }
        if !self.stdout.is_empty() {
            writeln!(f, "    stdout: {} bytes", self.stdout.len())?;
        }
        if !self.stats_text.is_empty() {
            writeln!(f, "    stats:")?;
            for l in self.stats_text.lines() {
                writeln!(f, "      {l}")?;
            }
        }
        Ok(())
    }
}

/// Every expectation of a test, checked before failing once with all the
/// broken ones and the full story of each process involved.
pub struct Checks<'a> {
    what: String,
    ctx: Vec<&'a Outcome>,
    failures: Vec<String>,
}

impl<'a> Checks<'a> {
    /// Checks about `what`, reporting `ctx` on failure.
    pub fn new(what: impl Into<String>, ctx: &[&'a Outcome]) -> Self {
        Checks {
            what: what.into(),
            ctx: ctx.to_vec(),
            failures: Vec::new(),
        }
    }

    /// Expect `cond`; `msg` says what should have held.
    pub fn that(&mut self, cond: bool, msg: impl Into<String>) -> &mut Self {
        if !cond {
            self.failures.push(msg.into());
        }
        self
    }

    /// Expect exit code `code`.
    pub fn exit(&mut self, o: &Outcome, code: i32) -> &mut Self {
        let got = o.code;
        self.that(
            got == Some(code),
            format!("{} should exit {code}, got {}", o.role, show_code(o)),
        )
    }

    /// Expect stats field `f` == `want`.
    pub fn eq<T: PartialEq + fmt::Debug>(
        &mut self,
        o: &Outcome,
        f: Field<T>,
        want: T,
    ) -> &mut Self {
        let got = o.stat(f);
        let msg = format!(
            "{}: {} should be {want:?}, got {}",
            o.role,
            f.name,
            show(got.as_ref())
        );
        self.that(got == Some(want), msg)
    }

    /// Expect stats field `f` > `floor`.
    pub fn gt<T: Number + fmt::Debug>(
        &mut self,
        o: &Outcome,
        f: Field<T>,
        floor: f64,
    ) -> &mut Self {
        let got = o.stat(f);
        self.that(
            got.and_then(Number::number).is_some_and(|v| v > floor),
            format!(
                "{}: {} should be > {floor}, got {}",
                o.role,
                f.name,
                show(got.as_ref())
            ),
        )
    }

    /// Expect stderr to contain `needle`.
    pub fn stderr_has(&mut self, o: &Outcome, needle: &str) -> &mut Self {
        self.that(
            o.stderr.contains(needle),
            format!("{} stderr should contain {needle:?}", o.role),
        )
    }

    /// Fail with everything collected, if anything.
    #[track_caller]
    pub fn done(&mut self) {
        if self.failures.is_empty() {
            return;
        }
        let mut msg = format!("{}: {} check(s) failed:\n", self.what, self.failures.len());
        for f in &self.failures {
            msg += &format!("  * {f}\n");
        }
        for o in &self.ctx {
            msg += &o.to_string();
        }
        panic!("{msg}");
    }
}

fn show<T: fmt::Debug>(v: Option<&T>) -> String {
    v.map_or("<no stats>".into(), |v| format!("{v:?}"))
}

fn show_code(o: &Outcome) -> String {
    if o.killed_by_test {
        "nothing (still running, killed by the test)".into()
    } else {
        match o.code {
            Some(c) => c.to_string(),
            None => format!("{:?}", o.status),
        }
    }
}

/// The checks every successful stream/sink pair must pass: both exit 0,
/// every packet arrived once, intact and in order, nothing blamed on the
/// peer, and each side names the other's pid.
pub fn check_stream_intact(
    c: &mut Checks<'_>,
    sink: &Outcome,
    stream: &Outcome,
    count: u64,
    size: u64,
) {
    c.exit(sink, 0)
        .exit(stream, 0)
        .eq(sink, field!(packets_received), count)
        .eq(sink, field!(bytes_received), count * size)
        .eq(sink, field!(lost), 0)
        .eq(sink, field!(corrupted), 0)
        .eq(sink, field!(out_of_order), 0)
        .eq(sink, field!(peer_errors), 0)
        .eq(stream, field!(packets_sent), count)
        .eq(stream, field!(packets_consumed), count)
        .eq(stream, field!(peer_errors), 0)
        .eq(sink, field!(peer_pid), stream.pid)
        .eq(stream, field!(peer_pid), sink.pid);
    let (sink_result, stream_result) = (sink.text(field!(result)), stream.text(field!(result)));
    c.that(
        sink_result == "ok",
        format!("sink result should be \"ok\", got {sink_result:?}"),
    );
    c.that(
        stream_result == "ok",
        format!("stream result should be \"ok\", got {stream_result:?}"),
    );
}

/// Run a sink and a stream of `count` × `size` on `spec` with extra flags
/// for each side, started together (sink first), and wait for both.
pub fn run_stream_pair(
    dir: &TestDir,
    spec: &str,
    count: u64,
    size: u64,
    sink_args: &[&str],
    stream_args: &[&str],
) -> (Outcome, Outcome) {
    let (n, s) = (count.to_string(), size.to_string());
    let mut a = vec!["--workload", "sink", "--count", &n];
    a.extend_from_slice(sink_args);
    let mut b = vec!["--workload", "stream", "--count", &n, "--size", &s];
    b.extend_from_slice(stream_args);
    let mut sink = dir.spawn("sink", spec, &a);
    let mut stream = dir.spawn("stream", spec, &b);
    let sink = sink.finish(EXIT_LIMIT);
    let stream = stream.finish(EXIT_LIMIT);
    (sink, stream)
}

/// Run a stream pair and check it is intact.
pub fn stream_pair_intact(
    what: &str,
    dir: &TestDir,
    spec: &str,
    count: u64,
    size: u64,
    sink_args: &[&str],
    stream_args: &[&str],
) -> (Outcome, Outcome) {
    let (sink, stream) = run_stream_pair(dir, spec, count, size, sink_args, stream_args);
    let mut c = Checks::new(what, &[&sink, &stream]);
    check_stream_intact(&mut c, &sink, &stream, count, size);
    c.done();
    (sink, stream)
}

/// Generate `mod fifo`, `mod unix` and `mod eventfd`, each with one
/// `#[test]` per listed body `fn name(kind: &str)`: one suite, three
/// transports, no copies.
#[macro_export]
macro_rules! transport_suite {
    ($($test:ident),* $(,)?) => {
        transport_suite!(@mod fifo; $($test),*);
        transport_suite!(@mod unix; $($test),*);
        transport_suite!(@mod eventfd; $($test),*);
    };
    (@mod $kind:ident; $($test:ident),*) => {
        mod $kind {
            $(
                #[test]
                fn $test() {
                    super::$test(stringify!($kind));
                }
            )*
        }
    };
}

// ---- switch members and CPU time --------------------------------------

/// A member's MAC address: `02:00:00:00:00:NN`.
pub fn mac(n: u8) -> String {
    format!("02:00:00:00:00:{n:02x}")
}

/// A switch on `dir/sw` with 4 ports, stopping itself after `timeout_s`
/// seconds, its stats in `dir/switch.json` (`extra` flags follow); returns
/// it once it says members may join, with its `--sharenet` and stats path.
pub fn start_switch(
    dir: &TestDir,
    kind: &str,
    timeout_s: &str,
    extra: &[&str],
) -> (Proc, String, PathBuf) {
    let path = dir.path().join("sw");
    let stats = dir.path().join("switch.json");
    let spec = format!("{kind}:{}", path.display());
    let stats_s = stats.display().to_string();
    let mut args = vec!["switch", "--sharenet", &spec, "--ports", "4"];
    args.extend(["--timeout", timeout_s, "--stats-json", &stats_s]);
    args.extend_from_slice(extra);
    let mut p = dir.spawn_raw("switch", &args);
    assert!(
        p.wait_for_stderr("members join on", Duration::from_secs(10)),
        "switch did not start:\n{}",
        p.stderr()
    );
    (p, spec, stats)
}

/// Wait until the switch `sw` has said ` joined` `n` times (30 s at most).
pub fn wait_joined(sw: &mut Proc, n: usize) {
    let end = Instant::now() + Duration::from_secs(30);
    while sw.stderr().matches(" joined").count() < n {
        assert!(
            Instant::now() < end,
            "members did not join:\n{}",
            sw.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stop the switch `sw` with SIGINT; its outcome and its stats file.
pub fn stop_switch(
    mut sw: Proc,
    stats: &Path,
) -> (Outcome, lguest_launcher::switch::stats::SwitchStats) {
    sw.signal(Signal::SIGINT);
    let out = sw.finish(Duration::from_secs(10));
    let text = fs::read_to_string(stats).unwrap_or_default();
    let st = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("switch stats {}: {e}\n{text}", stats.display()));
    (out, st)
}

/// User + system CPU time of a live process, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 here.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// The switch's own bookkeeping: frames in = unicast + flooded + frames
/// dropped where they came in; copies = frames out + dropped for room.
pub fn check_counters_add_up(c: &mut Checks<'_>, s: &lguest_launcher::switch::stats::SwitchStats) {
    let rx: u64 = s.ports.iter().map(|p| p.rx_packets).sum();
    let tx: u64 = s.ports.iter().map(|p| p.tx_packets).sum();
    let in_drops: u64 = s
        .ports
        .iter()
        .map(|p| p.drops.same_port + p.drops.unknown_port)
        .sum();
    let no_room: u64 = s.ports.iter().map(|p| p.drops.no_room).sum();
    c.that(
        rx == s.unicast + s.flooded + in_drops,
        format!(
            "frames in {rx} should be unicast {} + flooded {} + dropped at their port {in_drops}",
            s.unicast, s.flooded
        ),
    );
    c.that(
        tx + no_room == s.copies,
        format!(
            "frames out {tx} + no_room {no_room} should be the copies asked, {}",
            s.copies
        ),
    );
}
