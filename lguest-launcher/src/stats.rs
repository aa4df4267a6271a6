//! Counters for every path, and the stats JSON contract.
//!
//! Field names are a contract (see DESIGN.md): scripts read them. Add
//! fields freely; never rename these. The same type reads the JSON back
//! (the benchmark, `demo` and the integration tests read [`Stats`], not
//! untyped JSON); a field missing from an older file reads as its default.
//!
//! Ping round trips go into an HDR histogram ([`rtt_histogram`]): fixed
//! memory whatever the count, percentiles to three significant figures.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Longest round trip the histogram resolves (60 s, in ns); longer ones
/// are recorded as this.
const RTT_MAX_NS: u64 = 60_000_000_000;

/// An empty histogram for ping round trips in nanoseconds: 1 ns to 60 s at
/// three significant figures, a fixed size however many are recorded.
pub fn rtt_histogram() -> Histogram<u64> {
    // The bounds are constants that `new_with_bounds` accepts (low >= 1,
    // high >= 2 * low, sigfig <= 5), so this cannot fail.
    Histogram::new_with_bounds(1, RTT_MAX_NS, 3).expect("valid histogram bounds")
}

/// One run's counters.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// `fifo`, `unix` or `eventfd`.
    pub transport: String,
    /// The workload name.
    pub workload: String,
    /// Notify mode asked for.
    pub notify: String,
    /// Notify mode in force after negotiation with the peer.
    pub notify_effective: String,
    /// vhost-user: what the peer may map (`exchange` or `guest`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub share: String,
    /// vhost-user `--share exchange`: VM TX chains that could not be copied
    /// into the exchange area (malformed, or larger than a slot).
    #[serde(skip_serializing_if = "is_zero")]
    pub vm_tx_dropped: u64,
    /// Writes mode.
    pub writes: String,
    /// Wait mode.
    pub wait: String,
    /// `verify` (full pattern and checksum) or `stamp` (header only).
    pub payload: String,
    /// Frame size (bytes) for sending workloads.
    pub size: u32,
    /// Packets our guest put on its TX ring.
    pub packets_sent: u64,
    /// Of those, packets the peer has consumed.
    pub packets_consumed: u64,
    /// Bytes of those packets where they vary (a switch port's frames);
    /// 0 where every packet is `size` bytes (a synthetic stream).
    pub bytes_sent: u64,
    /// Intact packets our guest received.
    pub packets_received: u64,
    /// Frame bytes our guest received.
    pub bytes_received: u64,
    /// Packets sent by the peer (sink) or by us (ping) but never received.
    /// A sink knows what the peer sent only from its end-of-stream frame
    /// (`peer_sent`); without one this stays 0 and `missing` counts.
    pub lost: u64,
    /// `--count` of a sink or ping (0 for others).
    pub expected: u64,
    /// Of `expected`, packets that did not arrive (lost or never sent).
    pub missing: u64,
    /// Of `expected`, packets the sender never sent (known from its
    /// end-of-stream frame, or our own count for ping).
    pub not_sent: u64,
    /// Data frames the peer's stream said it sent (its end-of-stream
    /// frame); absent when none arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_sent: Option<u64>,
    /// Packets whose checksum, size or length did not match.
    pub corrupted: u64,
    /// Frames our copier moved from the peer's TX ring into our RX ring
    /// (for a VM: what it received). With `rx_push` our copier moves
    /// nothing: the switch copied them into our RX ring, and counts them
    /// as its port's `tx_packets`; this stays 0.
    pub packets_copied: u64,
    /// The peer (a switch) serves our RX ring and copies frames straight
    /// into it ([`transport::F_RX_PUSH`]); false: our copier pulls them.
    pub rx_push: bool,
    /// Frame bytes of those.
    pub bytes_copied: u64,
    /// Packets that arrived with a sequence number other than the next one.
    pub out_of_order: u64,
    /// Unicast frames for another MAC address (a switch flooding an
    /// address it had not learned), ignored.
    pub not_for_us: u64,
    /// Frames of another EtherType than sharenet's (the host's own traffic
    /// through a switch's TAP port), ignored.
    pub foreign: u64,
    /// Our MAC address (`--mac`).
    pub mac: String,
    /// Where our data frames went (`--dst`).
    pub dst: String,
    /// Notifications written to the peer.
    pub notifications_sent: u64,
    /// Notifications skipped because the peer's suppression said so.
    pub notifications_suppressed: u64,
    /// Notification writes that found the channel full (nonblocking): the
    /// peer already had a wake-up pending.
    pub notifications_pending: u64,
    /// Times we slept and were woken by a notification.
    pub wakeups: u64,
    /// Idle periods that ended in work while spinning (or at the re-check
    /// before a sleep): `--wait spin|adaptive` paying off.
    pub spin_hits: u64,
    /// Times the wait loop went to sleep in the transport.
    pub sleeps: u64,
    /// One-way blocking wake-up latency over a channel of this transport's
    /// kind, measured at connect (the adaptive spin is calibrated from its
    /// lower quartile), median, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wakeup_p50_us: Option<f64>,
    /// The same, 99th percentile, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wakeup_p99_us: Option<f64>,
    /// Wake-up latency measured during the run, log2 buckets: entry *i*
    /// counts notified wake-ups that came `[2^i, 2^(i+1))` ns after the
    /// peer's kick (or after our sleep began, if the kick came first; see
    /// `lguest_launcher::wait::latency`). Empty when there was none.
    /// Its counts plus `wakeup_latency_unstamped` equal `wakeups`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub wakeup_latency_log2_ns: Vec<u64>,
    /// Notified wake-ups with no usable kick stamp from the peer (a switch
    /// or an older build has none; a kick already counted, or stale).
    pub wakeup_latency_unstamped: u64,
    /// Median of `wakeup_latency_log2_ns`, the upper bound of its bucket, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wakeup_latency_p50_us: Option<f64>,
    /// 99th percentile of `wakeup_latency_log2_ns`, upper bound, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wakeup_latency_p99_us: Option<f64>,
    /// `spin_hits` of the current (at exit: the last) link generation.
    pub link_spin_hits: u64,
    /// `sleeps` of the current (at exit: the last) link generation.
    pub link_sleeps: u64,
    /// Our RX ring's size (0 before the first link).
    pub rx_ring_size: u32,
    /// RX buffers our guest has posted that no frame has filled yet, at the
    /// last look (live; at exit, the last value).
    pub rx_ring_posted: u32,
    /// RX buffers holding frames our guest has not taken back, or not
    /// posted: `rx_ring_size - rx_ring_posted`.
    pub rx_ring_in_use: u32,
    /// The peer's TX ring size (0 before the first link).
    pub peer_tx_size: u32,
    /// Chains on the peer's TX ring waiting for our copier, at the last look.
    pub peer_tx_pending: u32,
    /// The adaptive spin budget at the end of the run, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spin_budget_us: Option<f64>,
    /// Times our copier had a peer packet but no RX buffer.
    pub rx_ring_full: u64,
    /// Malformed chains or ring state from the peer (all classes).
    pub peer_errors: u64,
    /// Of those: bad descriptor index.
    pub peer_bad_index: u64,
    /// Of those: buffer outside the peer's memory.
    pub peer_out_of_bounds: u64,
    /// Of those: looped or over-long chain.
    pub peer_loop: u64,
    /// Of those: writable descriptor in a TX chain.
    pub peer_wrong_direction: u64,
    /// Of those: indirect descriptor.
    pub peer_indirect: u64,
    /// Of those: zero or oversize length, or a frame larger than our RX buffer.
    pub peer_bad_length: u64,
    /// Of those: a `virtio_net_hdr` asking for an impossible offload
    /// (unknown GSO type, checksum outside the frame, GSO size 0, ...), or
    /// one that cannot be done for our guest.
    pub peer_bad_offload: u64,
    /// Frames with an offload header (partial checksum, GSO) our copier
    /// delivered unchanged: our guest accepted what they need.
    pub offload_passed: u64,
    /// Partial checksums our copier completed in software (our guest did
    /// not accept `NEEDS_CSUM`).
    pub offload_csum_completed: u64,
    /// GSO frames our copier cut into segments in software (our guest did
    /// not accept the GSO type).
    pub offload_segmented: u64,
    /// Segments those became (each delivered as its own frame).
    pub offload_segments: u64,
    /// Our guest's receive offloads as virtio-net feature bits
    /// (`--offloads`; a VM's negotiated ones).
    pub offloads: u64,
    /// The peer's receive offloads from its handshake (0: none stated).
    pub peer_offloads: u64,
    /// Our MTU (`--mtu`; 0: none stated).
    pub mtu: u32,
    /// A sink: TCP frames that arrived whole with a GSO header (`--gso`
    /// stream, our guest accepting TSO).
    pub gso_frames_received: u64,
    /// A sink: TCP frames that arrived as plain segments (a `--gso`
    /// stream segmented for a guest without TSO), each checksum checked.
    pub tcp_segments_received: u64,
    /// A sink: TCP frames whose IPv4 header or TCP checksum did not check
    /// out (also counted in `corrupted`).
    pub tcp_checksum_errors: u64,
    /// Dropped peer chains by reason, keyed by the reason's stable name
    /// (`bad_index`, `out_of_bounds`, `loop`, `wrong_direction`,
    /// `indirect`, `bad_length`, `oversized`, `bad_offload`): the same
    /// names the capture's drop comments and `status` use.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub drops_by_reason: std::collections::BTreeMap<String, u64>,
    /// `--capture`: records handed to the capture writer.
    pub capture_records: u64,
    /// `--capture`: records skipped because the writer was behind (its
    /// queue full); the file says so too.
    pub capture_skipped: u64,
    /// Polls that left the peer's ring alone because its dropped chains had
    /// spent their budget for the window (`lguest_launcher::garbage`).
    pub peer_throttled: u64,
    /// Seconds from connect to finish.
    pub elapsed_s: f64,
    /// Million packets per second (sent or received, whichever is larger).
    pub mpps: f64,
    /// Gigabits per second of frame bytes.
    pub gbps: f64,
    /// Ping round trip, median, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_p50_us: Option<f64>,
    /// Ping round trip, 99th percentile, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_p99_us: Option<f64>,
    /// Ping round trip, 99.9th percentile, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_p999_us: Option<f64>,
    /// The peer's pid.
    pub peer_pid: u32,
    /// CPU seconds this process used (user + system).
    pub cpu_s: f64,
    /// `ok`, or the one-line error that ended the run.
    pub result: String,
    /// The link generation in force at the end (1 for the first link; see
    /// `--reconnect`).
    pub generation: u32,
    /// Links that came up again after the peer left (`--reconnect`).
    pub reconnects: u64,
    /// Total time the link was down: from noticing the peer gone to the
    /// first packet moved after the next peer connected.
    pub link_down_ms: f64,
    /// The same, per outage, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub link_down_ms_each: Vec<f64>,
    /// Per reconnect: from the new handshake to the first packet moved (the
    /// restart cost left after the new peer's own start-up).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resume_ms_each: Vec<f64>,
    /// Peers refused at a reconnect (queue size, memory size or features
    /// other than the link was set up with).
    pub refused: u64,
    /// A stream: chains each peer generation completed, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub consumed_per_generation: Vec<u64>,
    /// A sink or echo: what each sender (a peer launcher, by pid) sent us.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub senders: Vec<Sender>,
}

/// What one sender delivered to a sink or echo. A restarted sender is a
/// new process: it starts a new sequence and gets its own record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sender {
    /// The sending launcher's pid.
    pub pid: u32,
    /// Sequence number of its first intact frame we received.
    pub first_seq: u64,
    /// Sequence number of its last intact frame we received.
    pub last_seq: u64,
    /// Intact frames received from it.
    pub received: u64,
    /// Sequence numbers skipped (a frame arrived ahead of the next one).
    pub gaps: u64,
    /// Frames whose sequence number was not above the last one.
    pub duplicates: u64,
}

impl Stats {
    /// Add a copier's offload counters ([`crate::offload::OffloadCounts`]).
    pub fn add_offloads(&mut self, c: crate::offload::OffloadCounts) {
        self.offload_passed += c.passed;
        self.offload_csum_completed += c.csum_completed;
        self.offload_segmented += c.segmented;
        self.offload_segments += c.segments;
    }

    /// Fill in rates from counts and elapsed time.
    pub fn finish(&mut self, elapsed_s: f64) {
        self.elapsed_s = elapsed_s;
        let pkts = self.packets_sent.max(self.packets_received) as f64;
        let bytes = if self.packets_received >= self.packets_sent {
            self.bytes_received as f64
        } else {
            self.packets_sent as f64 * self.size as f64
        };
        if elapsed_s > 0.0 {
            self.mpps = pkts / elapsed_s / 1e6;
            self.gbps = bytes * 8.0 / elapsed_s / 1e9;
        }
        self.cpu_s = cpu_seconds();
        let q = |q| crate::wait::latency::quantile_us(&self.wakeup_latency_log2_ns, q);
        (self.wakeup_latency_p50_us, self.wakeup_latency_p99_us) = (q(0.5), q(0.99));
    }

    /// Fill in the round-trip percentiles from a histogram of round trips
    /// in nanoseconds (see [`rtt_histogram`]); nothing when it is empty.
    pub fn set_rtts(&mut self, rtts_ns: &Histogram<u64>) {
        if rtts_ns.is_empty() {
            return;
        }
        let pct = |q: f64| rtts_ns.value_at_quantile(q) as f64 / 1000.0;
        self.rtt_p50_us = Some(pct(0.50));
        self.rtt_p99_us = Some(pct(0.99));
        self.rtt_p999_us = Some(pct(0.999));
    }

    /// Fill in the wake-up latency percentiles from a histogram in ns.
    pub fn set_wakeups(&mut self, wakeups_ns: &Histogram<u64>) {
        if wakeups_ns.is_empty() {
            return;
        }
        let pct = |q: f64| wakeups_ns.value_at_quantile(q) as f64 / 1000.0;
        self.wakeup_p50_us = Some(pct(0.50));
        self.wakeup_p99_us = Some(pct(0.99));
    }

    /// The one-line human summary printed on stderr.
    pub fn summary(&self) -> String {
        let pkts = self.packets_sent.max(self.packets_received);
        let mut s = format!(
            "{} over {}: {} packets in {:.3} s, {:.3} Mpps, {:.2} Gbit/s, {:.4} notifications/packet",
            self.workload,
            self.transport,
            pkts,
            self.elapsed_s,
            self.mpps,
            self.gbps,
            self.notifications_sent as f64 / pkts.max(1) as f64
        );
        if let (Some(p50), Some(p99)) = (self.rtt_p50_us, self.rtt_p99_us) {
            s += &format!(", rtt p50 {p50:.1} us p99 {p99:.1} us");
        }
        if self.lost + self.corrupted + self.peer_errors > 0 {
            s += &format!(
                ", lost {} corrupted {} peer errors {}",
                self.lost, self.corrupted, self.peer_errors
            );
        }
        s
    }

    /// Write the JSON object to `path` (via a temporary file and rename, so
    /// a reader never sees half a file).
    pub fn write_json(&self, path: &std::path::Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text + "\n")?;
        std::fs::rename(&tmp, path)
    }
}

/// User + system CPU seconds of this process.
pub fn cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => 0.0,
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_percentiles_come_from_the_histogram_within_its_precision() {
        let mut h = rtt_histogram();
        // 1..=100_000 µs, once each: p50 = 50 ms, p99 = 99 ms, p99.9 = 99.9 ms.
        for us in 1..=100_000u64 {
            h.saturating_record(us * 1000);
        }
        let mut s = Stats::default();
        s.set_rtts(&h);
        let close = |got: Option<f64>, want: f64| {
            let got = got.expect("percentile set");
            assert!((got - want).abs() <= want * 1e-3, "{got} vs {want}");
        };
        close(s.rtt_p50_us, 50_000.0);
        close(s.rtt_p99_us, 99_000.0);
        close(s.rtt_p999_us, 99_900.0);
    }

    #[test]
    fn rtt_histogram_memory_does_not_grow_with_the_count() {
        let mut h = rtt_histogram();
        let before = h.distinct_values();
        for i in 0..1_000_000u64 {
            h.saturating_record(20_000 + i % 5_000);
        }
        // Longer than the histogram's range: saturates, not an error.
        h.saturating_record(u64::MAX);
        assert_eq!(h.distinct_values(), before);
        assert_eq!(h.len(), 1_000_001);
    }

    #[test]
    fn no_round_trips_leave_the_percentiles_out() {
        let mut s = Stats::default();
        s.set_rtts(&rtt_histogram());
        assert_eq!(s.rtt_p50_us, None);
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("rtt_p50_us").is_none());
    }

    #[test]
    fn stats_read_back_typed_and_older_files_default_missing_fields() {
        let mut s = Stats {
            transport: "eventfd".into(),
            packets_received: 42,
            ..Stats::default()
        };
        s.set_rtts(&{
            let mut h = rtt_histogram();
            h.saturating_record(12_000);
            h
        });
        let back: Stats = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.transport, "eventfd");
        assert_eq!(back.packets_received, 42);
        assert!(back.rtt_p50_us.is_some_and(|p| (p - 12.0).abs() < 0.02));
        // A file from before `packets_consumed`, `notify_effective` and the
        // drop classes existed.
        let old: Stats =
            serde_json::from_str(r#"{"transport":"fifo","packets_sent":7,"elapsed_s":0.5}"#)
                .unwrap();
        assert_eq!((old.packets_sent, old.packets_consumed), (7, 0));
        assert_eq!(old.notify_effective, "");
        assert_eq!(old.rtt_p99_us, None);
    }
}
