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
    serve_with(&cfg.spec, &cfg.name, "launcher", launcher_snapshot(shared))
}

/// What one port says at one look: its name, whether its link is up, its
/// stats (the stats JSON's keys).
#[derive(Clone, Debug, Default)]
pub struct PortState {
    /// `link` for a launcher, `port-N` (or the member's name) on a switch.
    pub port: String,
    /// The peer is there and the run goes on.
    pub link_up: bool,
    /// The counters.
    pub stats: Stats,
}

/// Something that can say what every port looks like now (called by the
/// status thread every 100 ms and for each caller).
pub type Snapshot = Box<dyn Fn() -> Vec<PortState> + Send>;

/// A launcher's one port, `link`, from the stats its run publishes.
pub fn launcher_snapshot(shared: SharedStats) -> Snapshot {
    Box::new(move || {
        let stats = shared.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let peer_alive = stats.peer_pid != 0
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(stats.peer_pid as i32), None)
                .is_ok();
        vec![PortState {
            port: "link".into(),
            link_up: peer_alive && stats.result.is_empty(),
            stats,
        }]
    })
}

/// [`serve`] for any process: `role` (`launcher`, `vhost-user`, `switch`)
/// named `name` on rendezvous `spec`, its ports from `snapshot`.
pub fn serve_with(
    spec: &crate::cli::config::Spec,
    name: &str,
    role: &str,
    snapshot: Snapshot,
) -> Option<Server> {
    let pid = std::process::id();
    let path = socket_path(&spec.path, pid);
    let _ = std::fs::remove_file(&path); // a dead launcher's, same pid
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "warning: [{name}] no control socket {} ({e}); `lguest-launcher status` will not see this {role}",
                path.display()
            );
            return None;
        }
    };
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    let _ = listener.set_nonblocking(true);
    let stop = Arc::new(AtomicBool::new(false));
    let state = State {
        name: name.to_string(),
        role: role.to_string(),
        sharenet: spec.to_string(),
        snapshot,
        started: Instant::now(),
        samples: Vec::new(),
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

impl Server {
    /// Remove the socket now (a process that ends with `exit` never drops
    /// its server).
    pub fn remove_socket(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

struct Sample {
    at: Instant,
    rx: u64,
    rx_bytes: u64,
    tx: u64,
    tx_bytes: u64,
}

struct State {
    name: String,
    role: String,
    sharenet: String,
    snapshot: Snapshot,
    started: Instant,
    /// Per port (by index), the last second of samples.
    samples: Vec<VecDeque<Sample>>,
}

impl State {
    fn run(mut self, listener: UnixListener, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let ports = (self.snapshot)();
            self.sample(&ports);
            // Nonblocking: stops at WouldBlock, when nobody is waiting.
            while let Ok((conn, _)) = listener.accept() {
                self.answer(conn);
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
    }

    fn sample(&mut self, ports: &[PortState]) {
        let now = Instant::now();
        self.samples.resize_with(ports.len(), VecDeque::new);
        for (p, q) in ports.iter().zip(&mut self.samples) {
            let s = &p.stats;
            q.push_back(Sample {
                at: now,
                rx: s.packets_copied,
                rx_bytes: s.bytes_copied,
                tx: s.packets_sent,
                tx_bytes: s.bytes_sent,
            });
            while q.len() > 2 && now.duration_since(q[1].at) >= RATE_WINDOW {
                q.pop_front();
            }
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
        let ports = (self.snapshot)();
        self.sample(&ports);
        let reply = self.reply(ports);
        if let Ok(line) = serde_json::to_string(&reply) {
            let _ = writeln!(conn, "{line}");
        }
    }

    fn reply(&self, ports: Vec<PortState>) -> Reply {
        let ports = ports
            .into_iter()
            .zip(&self.samples)
            .map(|(p, q)| {
                let (mut rx_pps, mut rx_bps, mut tx_pps, mut tx_bps) = (0.0, 0.0, 0.0, 0.0);
                if let (Some(a), Some(b)) = (q.front(), q.back()) {
                    let dt = b.at.duration_since(a.at).as_secs_f64();
                    let d = |x: u64, y: u64| y.saturating_sub(x) as f64 / dt;
                    if dt > 0.0 {
                        rx_pps = d(a.rx, b.rx);
                        rx_bps = d(a.rx_bytes, b.rx_bytes) * 8.0;
                        tx_pps = d(a.tx, b.tx);
                        tx_bps = if b.tx_bytes > 0 {
                            d(a.tx_bytes, b.tx_bytes) * 8.0
                        } else {
                            // A synthetic guest counts packets of --size.
                            tx_pps * p.stats.size as f64 * 8.0
                        };
                    }
                }
                Port {
                    port: p.port,
                    link_up: p.link_up,
                    uptime_s: self.started.elapsed().as_secs_f64(),
                    rx_pps,
                    rx_bps,
                    tx_pps,
                    tx_bps,
                    stats: p.stats,
                }
            })
            .collect();
        Reply {
            version: VERSION,
            role: self.role.clone(),
            name: self.name.clone(),
            pid: std::process::id(),
            sharenet: self.sharenet.clone(),
            socket: String::new(),
            ports,
        }
    }
}
