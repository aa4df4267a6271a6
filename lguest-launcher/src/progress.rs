//! A progress bar for long runs, fed from the shared stats snapshot.
//!
//! The run loop never touches the terminal: it publishes a stats snapshot
//! every millisecond or so (for the watchdog anyway), and this thread draws
//! from it. The bar appears only once a run has gone on for two seconds,
//! only when stderr is a terminal, and never with `--quiet`.

use crate::cli::config::{RunConfig, Workload};
use crate::run::SharedStats;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Delay before a bar appears.
const SHOW_AFTER: Duration = Duration::from_secs(2);

/// A running progress thread; dropping it clears the bar.
pub struct Progress {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Start drawing for `cfg` from `shared`, if the terminal wants it.
    pub fn start(cfg: &RunConfig, shared: SharedStats) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let wanted =
            !cfg.quiet && std::io::stderr().is_terminal() && cfg.workload != Workload::Idle;
        let handle = wanted.then(|| {
            let stop = stop.clone();
            let total = cfg.count;
            let workload = cfg.workload;
            std::thread::spawn(move || draw(total, workload, &shared, &stop))
        });
        Progress { stop, handle }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn draw(total: u64, workload: Workload, shared: &SharedStats, stop: &AtomicBool) {
    let started = Instant::now();
    let mut bar: Option<ProgressBar> = None;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() < SHOW_AFTER {
            continue;
        }
        let s = shared.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let done = match workload {
            Workload::Stream => s.packets_consumed,
            Workload::Sink | Workload::Ping => s.packets_received,
            _ => s.packets_sent,
        };
        let b = bar.get_or_insert_with(|| {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg} [{bar:30}] {human_pos}/{human_len} packets, {rate}, eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .with_key("rate", |st: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0} pkt/s", st.per_sec());
                })
                .progress_chars("=> "),
            );
            b.set_message(format!("{} over {}", s.workload, s.transport));
            b
        });
        b.set_position(done.min(total));
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}
