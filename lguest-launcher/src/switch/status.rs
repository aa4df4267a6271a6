//! `status --sharenet KIND:PATH` against a live switch: one row per port.
//!
//! The switch answers on the same control socket as a launcher
//! (`PATH.status.PID`, see [`crate::status`]), role `switch`, with one
//! [`PortState`] per port ever used. Each port's counters are mapped onto
//! the stats JSON's keys, seen from the member: `packets_copied`/
//! `bytes_copied` are the frames the member sent into the switch
//! (`rx_packets`, `rx_bytes`), `packets_sent`/`bytes_sent` the frames the
//! switch put on its ring (`tx_packets`, `tx_bytes`), `drops_by_reason`
//! the port's drops under their names (`no_room`, `unknown_port`,
//! `malformed`, `same_port`), `peer_pid` the member. The forwarding
//! thread publishes them every 100 ms of forwarding (and with each stats
//! write, every half second, when idle).

use super::stats::SwitchStats;
use super::SwitchConfig;
use crate::stats::Stats;
use crate::status::{PortState, Server};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the forwarding thread publishes its counters for `status`.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// The control socket and what it last published.
pub(super) struct Status {
    ports: Arc<Mutex<Vec<PortState>>>,
    _server: Option<Server>,
    last: Instant,
}

/// Listen beside the switch's path.
pub(super) fn serve(cfg: &SwitchConfig) -> Status {
    let ports: Arc<Mutex<Vec<PortState>>> = Arc::default();
    let snapshot = {
        let ports = ports.clone();
        Box::new(move || ports.lock().unwrap_or_else(|p| p.into_inner()).clone())
    };
    let server = crate::status::serve_with(&cfg.spec, "switch", "switch", snapshot);
    Status {
        ports,
        _server: server,
        last: Instant::now(),
    }
}

impl Status {
    /// Publish if [`PUBLISH_EVERY`] has passed by `now` (called from the
    /// wait loop's tick, which read the clock anyway).
    pub(super) fn tick(&mut self, sw: &SwitchStats, now: Instant) {
        if now.saturating_duration_since(self.last) >= PUBLISH_EVERY {
            self.publish(sw);
        }
    }

    /// Publish the switch's counters.
    pub(super) fn publish(&mut self, sw: &SwitchStats) {
        self.last = Instant::now();
        let rows = sw
            .ports
            .iter()
            .map(|p| {
                let mut drops = std::collections::BTreeMap::new();
                for (k, v) in [
                    ("no_room", p.drops.no_room),
                    ("unknown_port", p.drops.unknown_port),
                    ("malformed", p.drops.malformed),
                    ("same_port", p.drops.same_port),
                ] {
                    if v > 0 {
                        drops.insert(k.to_string(), v);
                    }
                }
                PortState {
                    port: format!("port-{}", p.port),
                    link_up: p.state == "up" || p.state == "tap",
                    stats: Stats {
                        transport: sw.transport.clone(),
                        workload: "switch".into(),
                        peer_pid: p.pid,
                        packets_copied: p.rx_packets,
                        bytes_copied: p.rx_bytes,
                        packets_sent: p.tx_packets,
                        bytes_sent: p.tx_bytes,
                        notifications_sent: p.notifications_sent,
                        peer_errors: p.drops.malformed,
                        drops_by_reason: drops,
                        generation: p.joins as u32,
                        capture_records: sw.capture_records,
                        capture_skipped: sw.capture_skipped,
                        elapsed_s: sw.elapsed_s,
                        result: if sw.result == "running" {
                            String::new()
                        } else {
                            sw.result.clone()
                        },
                        ..Stats::default()
                    },
                }
            })
            .collect();
        *self.ports.lock().unwrap_or_else(|p| p.into_inner()) = rows;
    }
}
