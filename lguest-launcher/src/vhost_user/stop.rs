//! SIGINT, SIGTERM and SIGHUP: a vhost-user backend stops as a launcher
//! does (README, "Exit codes"), whether QEMU has connected yet or not.
//!
//! The backend's threads are rust-vmm's and ours, each blocked in its own
//! call (`accept` polling, the daemon's epoll, the link's watch), so the
//! stop signals are taken by one thread of their own
//! ([`signal_hook::iterator::Signals`]): it writes the stats with `result`
//! = `interrupted by SIGTERM`, closes the capture, removes the control
//! socket, the kick stamp and the `--socket` QEMU would connect to, and
//! exits with 128 + the signal's number ([`super::exit_with`]).

use super::backend::NetBackend;
use super::{exit_with, VhostArgs};
use crate::run::signal_name;
use signal_hook::iterator::Signals;
use std::sync::{Arc, RwLock, TryLockError};
use std::time::{Duration, Instant};
use transport::Transport;

/// How long the stop waits for a thread that holds the backend (a service
/// in progress) before it writes what it has without the link's counters.
const LOCK_GRACE: Duration = Duration::from_secs(2);

/// Take the stop signals on a thread of their own from now on. A failure
/// to set that up leaves the default action (the process ends at once,
/// with files left): said on stderr, not fatal.
pub(super) fn on_stop_signals<T: Transport + 'static>(
    backend: &Arc<RwLock<NetBackend<T>>>,
    args: &VhostArgs,
) {
    let mut signals = match Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warning: cannot handle SIGINT/SIGTERM/SIGHUP: {e}");
            return;
        }
    };
    let backend = backend.clone();
    let args = args.clone();
    std::thread::spawn(move || {
        let Some(sig) = signals.forever().next() else {
            return;
        };
        let result = format!("interrupted by {}", signal_name(sig));
        // QEMU has not connected (or has gone): nobody else removes it.
        let _ = std::fs::remove_file(&args.socket);
        let stats = {
            let since = Instant::now();
            loop {
                match backend.try_write() {
                    Ok(mut b) => break b.stats_so_far(result.clone()),
                    Err(TryLockError::Poisoned(p)) => {
                        break p.into_inner().stats_so_far(result.clone())
                    }
                    Err(TryLockError::WouldBlock) => {}
                }
                if since.elapsed() >= LOCK_GRACE {
                    // A thread stuck holding the backend: what the stats
                    // can say without it.
                    break crate::stats::Stats {
                        result: result.clone(),
                        transport: args.sharenet.kind.name().into(),
                        workload: "vhost-user".into(),
                        ..Default::default()
                    };
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        let code = 128u8.saturating_add(sig.clamp(0, 127) as u8);
        exit_with(&args, &stats, &result, code);
    });
}
