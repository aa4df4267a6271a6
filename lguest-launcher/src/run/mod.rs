//! One launcher run: memory, rendezvous, then the wait loop.
//!
//! The synthetic guest and the copier run to completion in one thread, as
//! DPDK's virtio-user polls its own device: each turn (`Synthetic`'s
//! [`Device::turn`](crate::wait::Device::turn)) the guest does what it can (reap, receive, send) and
//! the copier pulls what the peer offers. When neither made progress the
//! one wait loop ([`crate::wait`]) idles as `--wait` says.
//!
//! Kicks to the peer (our TX avail moved) and interrupts to the peer (its TX
//! used moved) both cross the transport, each only when the peer's
//! suppression state asks for it. Every packet the copier moved or dropped
//! passes through [`account`], the one `match` on its outcome.

//!
//! The files: this one holds the run's entry ([`main`]) and its error;
//! `session.rs` connects, link generation after link generation
//! (`--reconnect`); `synthetic.rs` is the guest and copier of one link as
//! the wait loop drives them; `account.rs` is the one `match`; `signals.rs`
//! is how SIGINT/SIGTERM/SIGHUP and a blocked call end a run.

mod account;
mod meet;
mod session;
mod signals;
mod synthetic;

pub use account::{account, notify};
pub use session::{pin_this_thread, run};
pub use signals::signal_name;
pub(crate) use signals::{install_signal_handlers, spawn_helpers};
use signals::{signal_exit, start_watchdog};

use crate::cli::config::RunConfig;
use crate::copier::CopyError;
use crate::guest::Shortfall;
use crate::link::{dispatch, WithTransport};
use crate::stats::Stats;
use crate::virtq::RingError;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use transport::Transport;

/// Why a run failed (runtime failures: exit 1).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Setting up memory failed.
    #[error("guest memory: {0}")]
    Memory(#[from] crate::memory::MemoryError),
    /// Rendezvous or notification failed (includes "peer gone").
    #[error("{0}")]
    Transport(#[from] transport::Error),
    /// The copier stopped the link.
    #[error("peer {pid}: {err}; disconnecting")]
    Copy {
        /// The peer's pid.
        pid: u32,
        /// What the copier found.
        err: CopyError,
    },
    /// Our own rings are broken, or the peer wrote impossible used entries.
    #[error("peer {pid} broke our TX ring: {err}")]
    Ring {
        /// The peer's pid.
        pid: u32,
        /// What it wrote.
        err: RingError,
    },
    /// `--cpu N`: the kernel refused to pin the busy thread there.
    #[error("--cpu {cpu}: cannot pin the launcher's thread: {source}")]
    Pin {
        /// The CPU asked for.
        cpu: usize,
        /// What `sched_setaffinity` said.
        source: nix::Error,
    },
    /// `--timeout` passed before the workload finished.
    #[error("timed out after {0:.1} s before the workload finished")]
    Timeout(f64),
    /// Nobody came, and the path is held by a live pair.
    #[error("{err}: {path} is in use by the pair {a}/{b}; pick another path")]
    Busy {
        /// The timeout.
        err: transport::Error,
        /// The rendezvous path.
        path: String,
        /// The pair's pids.
        a: u32,
        /// The pair's pids.
        b: u32,
    },
    /// The peer stated another MTU than ours (`--mtu`).
    #[error("refused peer {pid}: {err}")]
    Mtu {
        /// The peer's pid.
        pid: u32,
        /// Both MTUs.
        err: crate::offload::mtu::MtuMismatch,
    },
    /// SIGINT, SIGTERM or SIGHUP: stopped cleanly (exit 128 + signal).
    #[error("interrupted by {}", signal_name(*.0))]
    Interrupted(i32),
    /// A sink learned from the sender's end-of-stream frame that fewer
    /// frames will come than it waits for.
    #[error("received {} of {}; the peer finished after {}", .0.received, .0.expected, .0.peer_sent)]
    Short(Shortfall),
}

/// Stats shared with the watchdog, which writes them if the run hangs.
pub type SharedStats = Arc<Mutex<Stats>>;

/// Run one launcher as `cfg` says (transport chosen by its kind), write
/// its stats, print its summary; the process exit code.
pub fn main(cfg: &RunConfig) -> ExitCode {
    let shared: SharedStats = Arc::new(Mutex::new(Stats::default()));
    if let Some(c) = &cfg.capture {
        let mac = crate::capture::synthetic_mac(std::process::id());
        if let Err(e) = crate::capture::start(c, &cfg.name, mac) {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let control = crate::status::serve(cfg, shared.clone());
    crate::wait::latency::publish(&cfg.spec.path);
    install_signal_handlers();
    let bar = spawn_helpers(|| {
        start_watchdog(cfg, shared.clone());
        crate::progress::Progress::start(cfg, shared.clone())
    });
    let result = dispatch(
        cfg.spec.kind,
        Run {
            cfg,
            shared: &shared,
        },
    );
    drop(bar);
    let mut stats = match &result {
        Ok(s) => s.clone(),
        Err(e) => {
            let mut s = lock(&shared).clone();
            if s.result.is_empty() {
                // Failed before the loop (rendezvous, refused peer).
                s.result = e.to_string();
            }
            s
        }
    };
    crate::capture::finish(&mut stats);
    crate::wait::latency::unpublish();
    drop(control);
    write_stats(cfg, &stats);
    let name = &cfg.name;
    match result {
        Ok(s) => {
            if !cfg.quiet {
                eprintln!("[{name}] {}", s.summary());
            }
            ExitCode::SUCCESS
        }
        Err(RunError::Interrupted(sig)) => {
            eprintln!("[{name}] {}", stats.summary());
            eprintln!(
                "[{name}] {}: stopped cleanly, stats written",
                RunError::Interrupted(sig)
            );
            signal_exit(sig)
        }
        Err(e) => {
            eprintln!("error: [{name}] {e}");
            ExitCode::from(1)
        }
    }
}

/// [`run`] with the transport of the configured kind.
struct Run<'a> {
    cfg: &'a RunConfig,
    shared: &'a SharedStats,
}

impl WithTransport for Run<'_> {
    type Output = Result<Stats, RunError>;
    fn with<T: Transport + 'static>(self) -> Self::Output {
        run::<T>(self.cfg, self.shared)
    }
}

fn write_stats(cfg: &RunConfig, stats: &Stats) {
    if let Some(p) = &cfg.stats_json {
        if let Err(e) = stats.write_json(p) {
            eprintln!("warning: cannot write stats to {}: {e}", p.display());
        }
    }
}

fn lock(s: &SharedStats) -> std::sync::MutexGuard<'_, Stats> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn publish(shared: &SharedStats, stats: &Stats, started: Instant) {
    let mut s = stats.clone();
    s.finish(started.elapsed().as_secs_f64());
    *lock(shared) = s;
}
