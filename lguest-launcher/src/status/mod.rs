//! Live status of a running launcher: `lguest-launcher status`.
//!
//! Each launcher listens on a *control socket* beside its rendezvous path,
//! `PATH.status.PID` (mode 0600). Both launchers of a pair share `PATH`, so
//! each has its own socket, named by its pid: `status` asks every one it
//! finds and shows each side under its own heading.
//!
//! The protocol is one exchange: the client connects, the server checks
//! the caller's uid with `SO_PEERCRED` (the socket's mode does not stop
//! root; the check does: another uid gets one `{"error": ...}` line and the
//! connection is closed), then writes one JSON line, a [`Reply`], and
//! closes. A reply describes a process (`role` `launcher` or `switch`) and
//! its *ports*: a launcher has one, `link`; a switch answers the same
//! message with one [`Port`] per port, so one client reads both. Each port
//! carries the whole stats object under the stats JSON's own key names
//! (`packets_received`, `packets_sent`, `drops_by_reason`, ...; a port
//! deserializes into [`crate::stats::Stats`]) plus the live fields: link up
//! or down, rates over the last second, uptime.
//!
//! `server.rs` is the launcher's side (a thread that samples the shared
//! stats and answers), `client.rs` the `status` subcommand, `table.rs` its
//! human table.
//!
//! The live state beyond counters: ring occupancy (`rx_ring_posted`,
//! `rx_ring_in_use`, `peer_tx_pending`, sampled by the copier's thread
//! every millisecond it is busy and before each sleep), the current
//! link's `link_spin_hits`/`link_sleeps`, and the wake-up latency
//! histogram `wakeup_latency_log2_ns` (see [`crate::wait::latency`]).

mod client;
mod server;
mod table;

pub use client::{run, StatusArgs};
pub use server::{launcher_snapshot, serve, serve_with, PortState, Server, Snapshot};
pub use table::histogram as histogram_line;

use crate::stats::Stats;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The protocol version a [`Reply`] carries.
pub const VERSION: u32 = 1;

/// What one launcher (or switch) says about itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Reply {
    /// [`VERSION`].
    pub version: u32,
    /// `launcher` or `switch`.
    pub role: String,
    /// The guest's (or switch's) name.
    pub name: String,
    /// The answering process.
    pub pid: u32,
    /// Its `--sharenet KIND:PATH`.
    pub sharenet: String,
    /// The control socket that answered (filled in by the client).
    pub socket: String,
    /// One per port: a launcher has one (`link`).
    pub ports: Vec<Port>,
}

/// One port's live state: the stats object plus what only a live process
/// knows.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Port {
    /// `link` for a launcher; the port's name on a switch.
    pub port: String,
    /// The peer is there and the run goes on.
    pub link_up: bool,
    /// Seconds since the launcher started.
    pub uptime_s: f64,
    /// Frames our copier moved into our RX ring per second, last second.
    pub rx_pps: f64,
    /// Their bits per second.
    pub rx_bps: f64,
    /// Frames our guest put on its TX ring per second, last second.
    pub tx_pps: f64,
    /// Their bits per second (frames of `--size` bytes).
    pub tx_bps: f64,
    /// The stats JSON object, same keys.
    #[serde(flatten)]
    pub stats: Stats,
}

/// The control socket of the launcher `pid` on rendezvous `path`.
pub fn socket_path(path: &Path, pid: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".status.{pid}"));
    PathBuf::from(s)
}
