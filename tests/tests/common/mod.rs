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
//!   so one run shows everything that went wrong, not just the first thing;
//!   the checks several tests make (a usage error, a pair intact, packets
//!   received, a counter that grew) are its methods or live in `pair.rs`;
//! * [`fresh_link`], [`TestDir::sink`] / [`TestDir::stream`] and
//!   [`run_sink_and_stream`] are the set-up most pair tests share;
//!   [`Switch`] is a running `lguest-launcher switch` and its members'
//!   specs; [`transport_suite!`] and [`transport_tests!`] make one
//!   `#[test]` per transport from one body.
//!
//! Layout: `process.rs` ([`TestDir`], [`Proc`]), `outcome.rs`
//! ([`Outcome`], [`Field`]), `checks.rs` ([`Checks`]), `pair.rs` (a stream
//! and a sink on one link), `switch.rs` (the switch, its members, CPU
//! time); the macros stay here, ahead of the modules that use them.
//!
//! The machine these run on has two cores and each pair is two busy
//! processes, so tests that spawn pairs hold [`serial`] to keep timing
//! assertions from being disturbed by a neighbouring test.

#![allow(dead_code)] // each test binary uses a different subset

pub use lguest_launcher::stats::Stats;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

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
/// `transport_tests! { unix: [a, b], eventfd: [a] }`: `mod unix` with a
/// `#[test]` per listed body `fn name(kind: &str)` run with `"unix"`, and
/// so on: for the suites that run on some transports only.
#[macro_export]
macro_rules! transport_tests {
    ($($kind:ident: [$($test:ident),* $(,)?]),* $(,)?) => {
        $($crate::transport_suite!(@mod $kind; $($test),*);)*
    };
}

// The macros above come first: their textual scope covers the modules below.
mod checks;
mod outcome;
mod pair;
mod process;
mod switch;

// Each test binary uses a different subset.
#[allow(unused_imports)]
pub use checks::*;
#[allow(unused_imports)]
pub use outcome::*;
#[allow(unused_imports)]
pub use pair::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use switch::*;
