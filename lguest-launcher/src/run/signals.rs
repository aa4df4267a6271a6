//! Ending a run on SIGINT/SIGTERM/SIGHUP, and the watchdog for a call that blocks.

use super::*;
use crate::cli::config::RunConfig;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `SIGINT` for 2, and so on.
pub fn signal_name(sig: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str())
        .unwrap_or("a signal")
}

/// The signals that stop a launcher cleanly.
pub(super) const STOP_SIGNALS: [nix::sys::signal::Signal; 3] = [
    nix::sys::signal::Signal::SIGINT,
    nix::sys::signal::Signal::SIGTERM,
    nix::sys::signal::Signal::SIGHUP,
];

/// Route SIGINT/SIGTERM/SIGHUP to [`transport::interrupt_flag`]: every
/// wait gives up, the run loop stops at its next tick, stats are written
/// and the process exits with 128 + the signal's number. Threads started
/// inside `spawn_helpers` never take these signals, so they interrupt the
/// main thread's `poll`.
pub(crate) fn install_signal_handlers() {
    let flag = transport::interrupt_flag();
    for sig in STOP_SIGNALS {
        if let Err(e) = signal_hook::flag::register_usize(sig as i32, flag.clone(), sig as usize) {
            eprintln!("warning: cannot handle {sig}: {e}");
        }
    }
}

/// Start helper threads with the stop signals blocked (they inherit the
/// mask), so the signals land on the calling thread.
pub(crate) fn spawn_helpers<R>(start: impl FnOnce() -> R) -> R {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
    let mut set = SigSet::empty();
    for sig in STOP_SIGNALS {
        set.add(sig);
    }
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    let r = start();
    let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
    r
}

/// The exit code after `sig`: 128 + its number, as shells report it.
pub(super) fn signal_exit(sig: i32) -> ExitCode {
    ExitCode::from(128u8.saturating_add(sig.clamp(0, 127) as u8))
}

/// How long an interrupted stream waits for a TX slot for its
/// end-of-stream frame.
pub(super) const END_GRACE: Duration = Duration::from_millis(300);

/// How long the run loop has to stop after a signal before the watchdog
/// writes the stats and exits for it (a blocking write to a stopped peer).
/// How often the watchdog looks at the clock and the signal flag: rarely,
/// since any wake-up on a machine of two busy spinners costs them.
const WATCH_EVERY: Duration = Duration::from_millis(500);

pub(super) const SIGNAL_GRACE: Duration = Duration::from_secs(2);

/// The run loop honours `--timeout` and signals itself; this thread is the
/// backstop for a call that blocks (a blocking notification write to a
/// stopped peer).
pub(super) fn start_watchdog(cfg: &RunConfig, shared: SharedStats) {
    let cfg = cfg.clone();
    std::thread::spawn(move || {
        // No deadline for a reconnecting launcher without `--timeout`.
        let deadline = cfg
            .run_limit()
            .map(|t| Instant::now() + t + Duration::from_secs(2));
        let mut signalled: Option<(i32, Instant)> = None;
        let (why, code) = loop {
            std::thread::sleep(WATCH_EVERY);
            if let (None, Some(sig)) = (signalled, transport::interrupted()) {
                signalled = Some((sig, Instant::now()));
            }
            if let Some((sig, at)) = signalled {
                if at.elapsed() >= SIGNAL_GRACE {
                    break (
                        format!("interrupted by {} (blocked)", signal_name(sig)),
                        128 + sig,
                    );
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break (
                    format!(
                        "timed out after {:.1} s (blocked)",
                        cfg.timeout.as_secs_f64()
                    ),
                    1,
                );
            }
        };
        let mut s = lock(&shared).clone();
        s.result = why;
        write_stats(&cfg, &s);
        eprintln!("error: [{}] {}", cfg.name, s.result);
        std::process::exit(code);
    });
}
