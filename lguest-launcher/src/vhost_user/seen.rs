//! What `--capture`, `status` and the wake-up histogram see of a VM's
//! link: the few hooks the backend calls, kept here so the data path's
//! files only call them.
//!
//! * [`start`] (before QEMU connects): the capture file with one interface,
//!   `vhost-PID-rx` (frames the peer sent into our VM, and drops), the
//!   control socket `PATH.status.PID` beside the `--sharenet` path (role
//!   `vhost-user`, one port `link`), and our kick stamp.
//! * [`publish`] (every `WATCH_EVERY`, from the watch thread that already
//!   holds the backend): a snapshot of the link's counters and ring
//!   occupancy for `status`.
//! * [`woke`] (each notified wake-up of the link's event): the wake-up's
//!   latency from the peer's kick stamp. The backend sleeps in rust-vmm's
//!   epoll loop, whose sleep start we do not see: the latency is from the
//!   kick alone.
//! * [`finish`] (in `exit_with`, which ends the process with `exit`, so no
//!   destructor runs): the capture's closing block, the control socket and
//!   the stamp's symlink removed.
//!
//! The tap itself needs no hook: the link's polls pass
//! [`crate::run::account`] like a synthetic guest's.

use super::link::Link;
use super::VhostArgs;
use crate::stats::Stats;
use crate::status::{PortState, Server};
use crate::wait::latency::{self, PeerStamp};
use std::sync::{Arc, Mutex, OnceLock};
use transport::Transport;

struct Seen {
    port: Arc<Mutex<PortState>>,
    server: Option<Server>,
    /// The peer's kick stamp: (peer pid, its stamp) of the current link.
    stamp: Mutex<Option<(u32, Option<PeerStamp>)>>,
}

static SEEN: OnceLock<Seen> = OnceLock::new();

/// Start the capture (a bad path is a usage error: exit 2 with the line),
/// the control socket and the kick stamp.
pub(super) fn start(args: &VhostArgs) -> Result<(), String> {
    let pid = std::process::id();
    if let Some(cfg) = args.capture.config() {
        let iface = crate::capture::Iface {
            name: format!("vhost-{pid}-rx"),
            description: format!(
                "sharenet vhost-user backend (pid {pid}, socket {}): frames the peer sent our VM, and drops",
                args.socket.display()
            ),
            mac: None,
        };
        crate::capture::start_with(&cfg, &[iface]).map_err(|e| e.to_string())?;
    }
    let port = Arc::new(Mutex::new(PortState {
        port: "link".into(),
        ..Default::default()
    }));
    let snapshot = {
        let port = port.clone();
        Box::new(move || vec![port.lock().unwrap_or_else(|p| p.into_inner()).clone()])
    };
    let server = crate::status::serve_with(
        &args.sharenet,
        &format!("vhost-{pid}"),
        "vhost-user",
        snapshot,
    );
    latency::publish(&args.sharenet.path);
    set_path(&args.sharenet.path);
    let _ = SEEN.set(Seen {
        port,
        server,
        stamp: Mutex::new(None),
    });
    Ok(())
}

/// The link's counters now (`None`: the link is down; the last counters
/// stay, marked down).
pub(super) fn publish<T: Transport>(link: Option<&Link<T>>) {
    let Some(seen) = SEEN.get() else { return };
    let mut p = seen.port.lock().unwrap_or_else(|p| p.into_inner());
    let Some(link) = link else {
        p.link_up = false;
        return;
    };
    let mut s = link.stats.clone();
    s.packets_received = s.packets_copied;
    s.bytes_received = s.bytes_copied;
    s.bytes_sent = link.tx_bytes;
    if let Ok(o) = link.copier.occupancy() {
        o.record(&mut s);
    }
    s.finish(link.started.elapsed().as_secs_f64());
    p.link_up = true;
    p.stats = s;
}

/// A notified wake-up of the link: its latency into `stats`.
pub(super) fn woke(stats: &mut Stats) {
    let woke = latency::monotonic_ns();
    let Some(seen) = SEEN.get() else {
        return latency::record(stats, None, 0, woke);
    };
    let mut st = seen.stamp.lock().unwrap_or_else(|p| p.into_inner());
    let pid = stats.peer_pid;
    if st.as_ref().is_none_or(|(p, _)| *p != pid) {
        *st = Some((pid, PeerStamp::open(&seen_path(), pid)));
    }
    let peer = st.as_mut().and_then(|(_, s)| s.as_mut());
    latency::record(stats, peer, 0, woke);
}

fn seen_path() -> std::path::PathBuf {
    SEEN_PATH.get().cloned().unwrap_or_default()
}

/// The `--sharenet` path, for the peer's stamp.
static SEEN_PATH: OnceLock<std::path::PathBuf> = OnceLock::new();

/// Remember the `--sharenet` path ([`start`] calls it).
pub(super) fn set_path(p: &std::path::Path) {
    let _ = SEEN_PATH.set(p.to_path_buf());
}

/// The process ends: close the capture, remove the socket and the stamp.
pub(super) fn finish(stats: &Stats) {
    let mut s = stats.clone();
    crate::capture::finish(&mut s);
    latency::unpublish();
    if let Some(server) = SEEN.get().and_then(|s| s.server.as_ref()) {
        server.remove_socket();
    }
}
