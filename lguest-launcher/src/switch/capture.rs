//! `switch --capture FILE.pcapng`: one pcapng interface per port.
//!
//! Interface *N* is port *N* (`port-N`; a `--tap NAME` port, numbered
//! after the member ports, is `tap-NAME`). On its interface each port
//! shows
//! * every frame its member sent into the switch, inbound (EPB flags
//!   direction 1), one per `rx_packets` of the port's stats; a frame the
//!   switch dropped there carries the comment `drop reason=same_port` or
//!   `drop reason=unknown_port`;
//! * every frame the switch put on its member's ring, outbound (direction
//!   2), one per `tx_packets`, and every frame that found the ring full
//!   with `drop reason=no_room`;
//! * a malformed chain from its member as an empty inbound record with
//!   `drop reason=malformed: DETAIL` (not in `rx_packets`, as in the
//!   stats);
//! * a member joining or leaving, as an empty record with a comment;
//! * an address learned on the port (`address 02:..:.. learned on port
//!   N`), as an empty record: the member's MAC, which the port's interface
//!   block cannot carry (it is written before any member joins).
//!
//! So a reader's per-interface counts equal the port's counters in the
//! switch's stats JSON, drop reasons under the same names. Frames are read
//! from the first piece of the member's chain (a synthetic guest's frame
//! is one piece); records go through the process's one [`Tap`], handed to
//! the writer at the end of each forwarding turn ([`turn_done`]). The
//! member's MAC is not known when the file starts: its first frame (a
//! synthetic guest's hello) shows it.

use super::forward::Src;
use super::stats::SwitchStats;
use super::SwitchConfig;
use crate::capture::{CaptureConfig, Iface, Tap, FLAG_IN, FLAG_OUT};
use crate::stats::Stats;
use crate::virtq::{ChainError, Seg};

/// Start the capture with one interface per port (and the TAP port).
pub(super) fn start(c: &CaptureConfig, cfg: &SwitchConfig) -> Result<(), String> {
    let pid = std::process::id();
    let mut ifaces: Vec<Iface> = (0..cfg.ports)
        .map(|n| Iface {
            name: format!("port-{n}"),
            description: format!(
                "sharenet switch (pid {pid}) port {n}: frames its member sent (inbound), \
                 frames put on its ring (outbound), drops with their reason"
            ),
            mac: None,
        })
        .collect();
    if let Some(t) = &cfg.tap {
        ifaces.push(Iface {
            name: format!("tap-{t}"),
            description: format!(
                "sharenet switch (pid {pid}) port {}: the TAP device {t}",
                cfg.ports
            ),
            mac: None,
        });
    }
    crate::capture::start_with(c, &ifaces).map_err(|e| e.to_string())
}

#[inline]
fn tap() -> Option<&'static Tap> {
    crate::capture::tap()
}

fn record(t: &Tap, port: usize, src: Src<'_>, segs: &[Seg], len: u32, c: Option<String>, f: u32) {
    match src {
        Src::Member(mem) => match segs.first() {
            Some(s) => t.frame(port as u32, mem, s.addr, s.len, len, c, f),
            None => t.note(port as u32, c.unwrap_or_default(), f),
        },
        Src::Bytes(b) => t.bytes(port as u32, &b[..(len as usize).min(b.len())], c, f),
    }
}

/// A frame entering at `port`, forwarded (`drop` `None`) or dropped there
/// for `drop` (`same_port`, `unknown_port`).
#[inline]
pub(super) fn inbound(port: usize, src: Src<'_>, segs: &[Seg], len: u32, drop: Option<&str>) {
    if let Some(t) = tap() {
        let c = drop.map(|r| format!("drop reason={r}: {}", why(r)));
        record(t, port, src, segs, len, c, FLAG_IN);
    }
}

/// A frame leaving through `port`: put on its ring (`full` false) or
/// dropped because it stayed full.
#[inline]
pub(super) fn outbound(port: usize, src: Src<'_>, segs: &[Seg], len: u32, full: bool) {
    if let Some(t) = tap() {
        let c = full.then(|| format!("drop reason=no_room: {}", why("no_room")));
        record(t, port, src, segs, len, c, FLAG_OUT);
    }
}

/// A malformed chain from `port`'s member: the chain's error, or the
/// length of a frame no port buffer can take (or shorter than an
/// Ethernet header).
pub(super) fn malformed(port: usize, chain: Result<u32, ChainError>) {
    if let Some(t) = tap() {
        let detail = match chain {
            Err(e) => e.to_string(),
            Ok(len) => format!(
                "frame of {len} bytes: shorter than an Ethernet header or larger than a port buffer"
            ),
        };
        t.note(
            port as u32,
            format!("drop reason=malformed: {detail}"),
            FLAG_IN,
        );
    }
}

/// `mac` was learned on `port` (first seen there, or moved there): an
/// empty record whose comment names the address, so a reader can tell
/// which member the interface `port-N` is (its interface block is written
/// before any member joins, so it cannot carry the MAC itself).
#[cold]
pub(super) fn learned(port: usize, mac: &[u8; 6]) {
    if let Some(t) = tap() {
        let m = mac.map(|b| format!("{b:02x}")).join(":");
        t.note(
            port as u32,
            format!("address {m} learned on port {port}"),
            0, // no direction: not a frame, as a join note
        );
    }
}

/// A member joined or left `port`.
pub(super) fn note(port: usize, what: String) {
    if let Some(t) = tap() {
        t.note(port as u32, what, 0);
    }
}

/// The end of a forwarding turn: hand the records to the writer.
#[inline]
pub(super) fn turn_done(stats: &mut SwitchStats) {
    if let Some(t) = tap() {
        let mut s = Stats::default();
        t.send_batch(&mut s);
        stats.capture_records += s.capture_records;
        stats.capture_skipped += s.capture_skipped;
    }
}

/// The switch stops: the closing statistics, per port.
pub(super) fn finish(stats: &SwitchStats) {
    let mut s = Stats {
        capture_records: stats.capture_records,
        capture_skipped: stats.capture_skipped,
        ..Stats::default()
    };
    let ports: Vec<String> = stats
        .ports
        .iter()
        .map(|p| {
            format!(
                "port-{} rx={} tx={} no_room={} unknown_port={} malformed={} same_port={}",
                p.port,
                p.rx_packets,
                p.tx_packets,
                p.drops.no_room,
                p.drops.unknown_port,
                p.drops.malformed,
                p.drops.same_port
            )
        })
        .collect();
    let comment = format!(
        "capture end: {} records written, {} skipped (writer behind); {}",
        stats.capture_records,
        stats.capture_skipped,
        ports.join("; ")
    );
    crate::capture::finish_with(&mut s, comment);
}

fn why(reason: &str) -> &'static str {
    match reason {
        "same_port" => "addressed to a MAC learned on the port it came in on",
        "unknown_port" => "no other port is up",
        "no_room" => "the member's ring stayed full past the hold",
        _ => "",
    }
}
