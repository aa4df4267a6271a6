//! The launcher's side of the control socket: a thread that keeps a
//! second of stats samples (for rates) and answers each caller of the same
//! uid with one [`Reply`].

use super::{socket_path, Port, Reply, VERSION};
use crate::run::SharedStats;
use crate::stats::Stats;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use std::collections::VecDeque;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the server looks for callers and samples the stats.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Rates are over this window.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// A running control socket; dropping it stops the thread and removes the
/// socket.
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listen on `PATH.status.PID` beside the rendezvous `spec`. `None` (with a
/// warning) when the socket cannot be made: status is a convenience, the
/// run goes on without it.
pub fn serve(cfg: &crate::cli::config::RunConfig, shared: SharedStats) -> Option<Server> {
    let pid = std::process::id();
    let path = socket_path(&cfg.spec.path, pid);
    let _ = std::fs::remove_file(&path); // a dead launcher's, same pid
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "warning: [{}] no control socket {} ({e}); `lguest-launcher status` will not see this launcher",
                cfg.name,
                path.display()
            );
            return None;
        }
    };
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    let _ = listener.set_nonblocking(true);
    let stop = Arc::new(AtomicBool::new(false));
    let state = State {
        name: cfg.name.clone(),
        sharenet: cfg.spec.to_string(),
        shared,
        started: Instant::now(),
        samples: VecDeque::new(),
    };
    let thread = std::thread::Builder::new()
        .name("status".into())
        .spawn({
            let stop = stop.clone();
            move || state.run(listener, &stop)
        })
        .ok()?;
    Some(Server {
        path,
        stop,
        thread: Some(thread),
    })
}

struct Sample {
    at: Instant,
    rx: u64,
    rx_bytes: u64,
    tx: u64,
}

struct State {
    name: String,
    sharenet: String,
    shared: SharedStats,
    started: Instant,
    samples: VecDeque<Sample>,
}

impl State {
    fn run(mut self, listener: UnixListener, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            self.sample();
            // Nonblocking: stops at WouldBlock, when nobody is waiting.
            while let Ok((conn, _)) = listener.accept() {
                self.answer(conn);
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
    }

    fn stats(&self) -> Stats {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn sample(&mut self) {
        let s = self.stats();
        let now = Instant::now();
        self.samples.push_back(Sample {
            at: now,
            rx: s.packets_copied,
            rx_bytes: s.bytes_copied,
            tx: s.packets_sent,
        });
        while self.samples.len() > 2 && now.duration_since(self.samples[1].at) >= RATE_WINDOW {
            self.samples.pop_front();
        }
    }

    fn answer(&mut self, mut conn: UnixStream) {
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
        let me = nix::unistd::geteuid().as_raw();
        match getsockopt(&conn, PeerCredentials) {
            Ok(c) if c.uid() == me => {}
            Ok(c) => {
                let _ = writeln!(
                    conn,
                    "{}",
                    serde_json::json!({ "error": format!(
                        "refused: uid {} is not this launcher's uid {me}", c.uid()) })
                );
                return;
            }
            Err(_) => return,
        }
        self.sample();
        let reply = self.reply();
        if let Ok(line) = serde_json::to_string(&reply) {
            let _ = writeln!(conn, "{line}");
        }
    }

    fn reply(&self) -> Reply {
        let stats = self.stats();
        let (first, last) = (self.samples.front(), self.samples.back());
        let (mut rx_pps, mut rx_bps, mut tx_pps) = (0.0, 0.0, 0.0);
        if let (Some(a), Some(b)) = (first, last) {
            let dt = b.at.duration_since(a.at).as_secs_f64();
            if dt > 0.0 {
                rx_pps = (b.rx - a.rx.min(b.rx)) as f64 / dt;
                rx_bps = (b.rx_bytes - a.rx_bytes.min(b.rx_bytes)) as f64 * 8.0 / dt;
                tx_pps = (b.tx - a.tx.min(b.tx)) as f64 / dt;
            }
        }
        let peer_alive = stats.peer_pid != 0
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(stats.peer_pid as i32), None)
                .is_ok();
        Reply {
            version: VERSION,
            role: "launcher".into(),
            name: self.name.clone(),
            pid: std::process::id(),
            sharenet: self.sharenet.clone(),
            socket: String::new(),
            ports: vec![Port {
                port: "link".into(),
                link_up: peer_alive && stats.result.is_empty(),
                uptime_s: self.started.elapsed().as_secs_f64(),
                rx_pps,
                rx_bps,
                tx_pps,
                tx_bps: tx_pps * stats.size as f64 * 8.0,
                stats,
            }],
        }
    }
}
