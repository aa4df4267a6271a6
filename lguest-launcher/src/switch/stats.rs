//! The switch's counters and its stats JSON (`--stats-json`).
//!
//! Per port: frames in from the member (`rx_*`), frames out to it
//! (`tx_*`), and drops by reason. A drop is counted once, at the port
//! where it happened: `no_room` at the destination whose ring stayed full,
//! `unknown_port`/`malformed`/`same_port` at the port the frame came in
//! on. So for every port, `rx_packets` = frames forwarded at least once +
//! its `unknown_port` + `same_port` drops, and the sum of every port's
//! `tx_packets` + `no_room` is the number of copies forwarding asked for.

use serde::{Deserialize, Serialize};

/// Drops at one port, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Drops {
    /// Frames for this port's member dropped because its ring stayed full
    /// (it is slow or gone): flow control, never a wait.
    pub no_room: u64,
    /// Frames from this port with nowhere to go (no other port is up).
    pub unknown_port: u64,
    /// Frames from this port that were malformed: a bad chain, shorter
    /// than an Ethernet header, or larger than a port buffer.
    pub malformed: u64,
    /// Frames from this port addressed to a MAC learned on this same port
    /// (never sent back out of the port they came in on).
    pub same_port: u64,
    /// Push ports: of the `no_room` drops, those where the RX chain the
    /// member posted was malformed or too small for the frame (the chain
    /// went back to it used with length 0).
    pub bad_rx_chain: u64,
}

/// One port's counters (cumulative across the members it served).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PortStats {
    /// Port number.
    pub port: usize,
    /// `up` (a member is linked), `down` (free) or `tap`.
    pub state: String,
    /// The member's pid (the last one, when down).
    pub pid: u32,
    /// Members that joined this port.
    pub joins: u64,
    /// Frames the member sent into the switch.
    pub rx_packets: u64,
    /// Their bytes (Ethernet frames, without the `virtio_net_hdr`).
    pub rx_bytes: u64,
    /// Frames the switch put on the member's ring.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Drops by reason.
    pub drops: Drops,
    /// Notifications written to the member.
    pub notifications_sent: u64,
    /// The switch serves the member's RX ring and copies frames straight
    /// into its buffers (push); false: the member's copier pulls them from
    /// the port's ring (see `switch/port.rs`).
    pub rx_push: bool,
}

/// The switch's stats JSON object.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SwitchStats {
    /// `fifo`, `unix` or `eventfd`.
    pub transport: String,
    /// `--ports`.
    pub ports_max: usize,
    /// Every port that was ever used, by number.
    pub ports: Vec<PortStats>,
    /// Frames flooded (broadcast, multicast or unknown unicast).
    pub flooded: u64,
    /// Frames forwarded to exactly one learned port.
    pub unicast: u64,
    /// Copies forwarding asked for (one per unicast frame, one per other
    /// port for a flooded one): every port's `tx_packets` + `no_room`
    /// add up to this.
    pub copies: u64,
    /// Addresses learned (new or moved).
    pub learned: u64,
    /// Table entries that aged out.
    pub aged_out: u64,
    /// Addresses not learned because the table was full.
    pub table_full: u64,
    /// Entries in the table at the end.
    pub table_entries: usize,
    /// Members that joined.
    pub joins: u64,
    /// Members that left (or died).
    pub leaves: u64,
    /// Members refused (a broken ring at join, a handshake that failed).
    pub refused: u64,
    /// `--wait`: `sleep`, `spin` or `adaptive`.
    pub wait: String,
    /// Idle periods that ended in work while spinning (or at the re-check
    /// before a sleep).
    pub spin_hits: u64,
    /// Times the switch went to sleep in `poll`.
    pub sleeps: u64,
    /// Times it woke from that sleep.
    pub wakeups: u64,
    /// Forwarding turns that moved at least one frame: frames in over
    /// this is the mean burst a turn's fixed costs (every port's indexes
    /// read, both rings published, kicks) are shared by.
    pub busy_turns: u64,
    /// Turns that found nothing to move (spinning, or the re-check after
    /// a wake-up).
    pub idle_turns: u64,
    /// The adaptive spin budget at exit, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spin_budget_us: Option<f64>,
    /// CPU seconds the switch used (user + system).
    pub cpu_s: f64,
    /// `--capture`: records handed to the capture writer.
    pub capture_records: u64,
    /// `--capture`: records skipped because the writer was behind.
    pub capture_skipped: u64,
    /// Seconds the switch ran.
    pub elapsed_s: f64,
    /// `running`, `ok`, or what ended the switch.
    pub result: String,
}

impl SwitchStats {
    /// The counters of port `n`, created on first use.
    pub fn port(&mut self, n: usize) -> &mut PortStats {
        while self.ports.len() <= n {
            let port = self.ports.len();
            self.ports.push(PortStats {
                port,
                state: "down".into(),
                ..PortStats::default()
            });
        }
        &mut self.ports[n]
    }

    /// Write the JSON object to `path` (temporary file, then rename).
    pub fn write_json(&self, path: &std::path::Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text + "\n")?;
        std::fs::rename(&tmp, path)
    }
}
