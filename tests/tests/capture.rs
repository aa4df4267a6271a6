//! `--capture FILE.pcapng`: what the file holds, read back with a pure-Rust
//! pcapng reader (pcap-file) and with Debian's `tshark`/`capinfos` (which
//! `.ci/run` installs): every frame the copier delivered, with the stats'
//! counts and bytes; every dropped chain with its reason; the start of each
//! RX-ring-full stall; a readable file from a launcher killed mid-run.

mod common;

use common::*;
use nix::sys::signal::Signal;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A synthetic frame's Ethernet header: `--size` counts what follows it.
const ETH_HDR: u32 = 14;

fn hostile_peer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hostile-peer"))
}

/// One packet of a capture, as the pure-Rust reader saw it.
#[derive(Debug)]
struct Packet {
    orig_len: u32,
    captured: usize,
    comments: Vec<String>,
    flags: u32,
}

/// What a capture holds.
#[derive(Debug, Default)]
struct Capture {
    packets: Vec<Packet>,
    if_names: Vec<String>,
    if_tsresol: Vec<u8>,
    if_mac: Vec<Vec<u8>>,
    snaplen: Vec<u32>,
    stats_blocks: usize,
    /// The last block was cut short (a launcher killed mid-write): what
    /// the reader said.
    cut_short: Option<String>,
}

impl Capture {
    fn read(path: &Path) -> Result<Capture, String> {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut r = PcapNgReader::new(file).map_err(|e| format!("pcapng header: {e}"))?;
        let mut cap = Capture::default();
        while let Some(block) = r.next_block() {
            let block = match block {
                Ok(b) => b,
                Err(e) => {
                    cap.cut_short = Some(format!("block after {} packets: {e}", cap.packets.len()));
                    break;
                }
            };
            match block {
                Block::InterfaceDescription(idb) => {
                    cap.snaplen.push(idb.snaplen);
                    for o in &idb.options {
                        match o {
                            InterfaceDescriptionOption::IfName(n) => {
                                cap.if_names.push(n.to_string())
                            }
                            InterfaceDescriptionOption::IfTsResol(t) => cap.if_tsresol.push(*t),
                            InterfaceDescriptionOption::IfMacAddr(m) => cap.if_mac.push(m.to_vec()),
                            _ => {}
                        }
                    }
                }
                Block::EnhancedPacket(epb) => {
                    let mut p = Packet {
                        orig_len: epb.original_len,
                        captured: epb.data.len(),
                        comments: Vec::new(),
                        flags: 0,
                    };
                    for o in &epb.options {
                        match o {
                            EnhancedPacketOption::Comment(c) => p.comments.push(c.to_string()),
                            EnhancedPacketOption::Flags(f) => p.flags = *f,
                            _ => {}
                        }
                    }
                    cap.packets.push(p);
                }
                Block::InterfaceStatistics(_) => cap.stats_blocks += 1,
                _ => {}
            }
        }
        Ok(cap)
    }

    /// Delivered frames: packets without a drop or stall comment.
    fn delivered(&self) -> impl Iterator<Item = &Packet> {
        self.packets.iter().filter(|p| p.comments.is_empty())
    }

    fn with_reason(&self, prefix: &str) -> usize {
        self.packets
            .iter()
            .filter(|p| p.comments.iter().any(|c| c.starts_with(prefix)))
            .count()
    }
}

/// `tshark`, or `None` outside CI when it is not installed (CI installs it:
/// there a missing tshark fails the test).
fn tshark_available() -> bool {
    let ok = Command::new("tshark").arg("--version").output().is_ok()
        && Command::new("capinfos").arg("-h").output().is_ok();
    if !ok && std::env::var_os("CI").is_some() {
        panic!("tshark/capinfos not installed: .ci/run installs them (apt-get install tshark)");
    }
    if !ok {
        eprintln!("SKIP the tshark half of this test: tshark/capinfos not installed");
    }
    ok
}

/// Frames tshark counts in `path` matching `filter` (all with "").
fn tshark_count(path: &Path, filter: &str) -> Result<usize, String> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(path)
        .args(["-T", "fields", "-e", "frame.len"]);
    if !filter.is_empty() {
        cmd.args(["-Y", filter]);
    }
    let out = cmd.output().map_err(|e| format!("tshark: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "tshark -r {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().count())
}

/// `capinfos -c -M`: the number of packets, or why it could not read the file.
fn capinfos_count(path: &Path) -> Result<u64, String> {
    capinfos_count_of(path, false)
}

/// `capinfos -c -M`; with `cut_short_ok`, a file whose last block was cut
/// short (capinfos then exits non-zero after counting) still counts.
fn capinfos_count_of(path: &Path, cut_short_ok: bool) -> Result<u64, String> {
    let out = Command::new("capinfos")
        .args(["-c", "-M"])
        .arg(path)
        .output()
        .map_err(|e| format!("capinfos: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let cut = String::from_utf8_lossy(&out.stderr).contains("cut short");
    let counted = out.status.success() || (cut_short_ok && cut);
    if !counted {
        return Err(format!(
            "capinfos exit {:?}: {text}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Number of packets:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("no packet count in capinfos output: {text}"))
}

/// A stream of 1500 B frames into a sink that captures with --snaplen 128:
/// the file has one packet per frame the copier delivered (the data frames
/// the guest received and the end-of-stream frame), each cut to 128 bytes
/// with its original length kept, summing to the stats' bytes; the
/// interface is named after the guest, has a MAC and nanosecond timestamps;
/// tshark and capinfos count the same.
fn capture_holds_every_packet_received(kind: &str) {
    let _serial = serial();
    let dir = TestDir::new("capture_count");
    let (pcap, pcap_s) = dir.file("sink.pcapng");
    let (count, size) = (20_000u64, 1500u64);
    let (sink, stream) = run_stream_pair(
        &dir,
        &dir.sharenet(kind, "link"),
        count,
        size,
        &["--name", "left", "--capture", &pcap_s, "--snaplen", "128"],
        &[],
    );
    let mut c = Checks::new(
        format!("{kind}: capture of a 20000-frame stream"),
        &[&sink, &stream],
    );
    check_stream_intact(&mut c, &sink, &stream, count, size);
    let cap = match Capture::read(&pcap) {
        Ok(cap) => cap,
        Err(e) => {
            c.that(false, format!("pure-Rust reader: {e}"));
            c.done();
            return;
        }
    };
    let data: Vec<&Packet> = cap
        .delivered()
        .filter(|p| p.orig_len == size as u32 + ETH_HDR)
        .collect();
    let delivered = cap.delivered().count() as u64;
    c.that(
        cap.if_names == ["left-rx"],
        format!("one interface named left-rx, got {:?}", cap.if_names),
    )
    .that(
        cap.if_tsresol == [9],
        format!("nanosecond timestamps, got {:?}", cap.if_tsresol),
    )
    .that(
        cap.if_mac.len() == 1 && cap.if_mac[0].len() == 6,
        format!("the interface has a 6-byte MAC, got {:?}", cap.if_mac),
    )
    .that(
        cap.snaplen == [128],
        format!("snaplen 128, got {:?}", cap.snaplen),
    )
    .that(
        delivered == sink.u64(field!(packets_copied)),
        format!(
            "delivered packets in the file {delivered} == packets_copied {}",
            sink.u64(field!(packets_copied))
        ),
    )
    .that(
        data.len() as u64 == sink.u64(field!(packets_received)),
        format!(
            "{size}-byte frames (+ Ethernet header) in the file {} == packets_received {}",
            data.len(),
            sink.u64(field!(packets_received))
        ),
    )
    .that(
        data.iter()
            .map(|p| (p.orig_len - ETH_HDR) as u64)
            .sum::<u64>()
            == sink.u64(field!(bytes_received)),
        "original lengths of the data frames less their Ethernet headers sum to bytes_received",
    )
    .that(
        data.iter().all(|p| p.captured == 128),
        "every data frame is cut to the 128-byte snaplen",
    )
    .that(
        cap.with_reason("drop ") == 0,
        "no drops in an honest stream",
    )
    .that(
        cap.stats_blocks == 1,
        "the file ends with one interface statistics block",
    )
    .eq(&sink, field!(capture_skipped), 0)
    .eq(&sink, field!(capture_records), cap.packets.len() as u64);
    if tshark_available() {
        match (tshark_count(&pcap, ""), capinfos_count(&pcap)) {
            (Ok(t), Ok(ci)) => {
                c.that(
                    t == cap.packets.len() && ci == cap.packets.len() as u64,
                    format!(
                        "tshark counts {t}, capinfos {ci}, the Rust reader {}",
                        cap.packets.len()
                    ),
                );
                let big = tshark_count(&pcap, &format!("frame.len == {}", size as u32 + ETH_HDR));
                c.that(
                    big == Ok(data.len()),
                    format!(
                        "tshark: {big:?} frames of {size} bytes, want {}",
                        data.len()
                    ),
                );
            }
            (t, ci) => {
                c.that(false, format!("tshark {t:?}, capinfos {ci:?}"));
            }
        }
    }
    c.done();
}

/// The hostile peer's looping chains (10 rounds of its 64-entry ring): each
/// of the 640 drops is in the capture as a packet whose comment names the
/// reason `loop`, the name the stats' `drops_by_reason` uses too; tshark
/// finds them by comment.
fn capture_marks_malformed_chains_with_their_reason(kind: &str) {
    let (_serial, dir, spec) = fresh_link(kind, "capture_loop");
    let (pcap, pcap_s) = dir.file("honest.pcapng");
    let mut honest = dir.spawn(
        "honest",
        &spec,
        &[
            "--workload",
            "idle",
            "--wait",
            "sleep",
            "--timeout",
            "20",
            "--capture",
            &pcap_s,
        ],
    );
    let mut hostile = dir.spawn_program("hostile", hostile_peer(), &[&spec, "loop", "10"]);
    let honest = honest.finish(Duration::from_secs(25));
    let hostile = hostile.finish(Duration::from_secs(25));
    let mut c = Checks::new(
        format!("{kind}: capture of looping chains"),
        &[&honest, &hostile],
    );
    c.exit(&honest, 1).eq(&honest, field!(peer_loop), 640);
    let by_reason = honest
        .stats
        .as_ref()
        .and_then(|s| s.drops_by_reason.get("loop").copied());
    c.that(
        by_reason == Some(640),
        format!("drops_by_reason.loop == 640, got {by_reason:?}"),
    );
    match Capture::read(&pcap) {
        Ok(cap) => {
            let loops = cap.with_reason("drop reason=loop:");
            c.that(
                cap.cut_short.is_none(),
                format!("a whole file: {:?}", cap.cut_short),
            );
            c.that(
                loops == 640,
                format!("640 packets with `drop reason=loop:`, got {loops}"),
            )
            .that(cap.delivered().count() == 0, "nothing delivered")
            .that(
                cap.packets.iter().all(|p| p.flags & 0b11 == 0b01),
                "every packet is marked inbound",
            );
        }
        Err(e) => {
            c.that(false, format!("pure-Rust reader: {e}"));
        }
    }
    if tshark_available() {
        let n = tshark_count(&pcap, "frame.comment contains \"reason=loop\"");
        c.that(
            n == Ok(640),
            format!("tshark finds {n:?} loop drops by comment, want 640"),
        );
    }
    c.done();
}

/// A 4-entry RX ring behind a sink that sleeps per packet: our guest often
/// has no RX buffer posted. Nothing is lost (the peer's chain waits), but
/// each stall's start is in the capture with the reason `rx_ring_full`, at
/// most once per poll that found the ring full, and every frame still
/// arrives in the file.
fn capture_marks_rx_ring_full_stalls(kind: &str) {
    let _serial = serial();
    let dir = TestDir::new("capture_full");
    let (pcap, pcap_s) = dir.file("sink.pcapng");
    let (sink, stream) = run_stream_pair(
        &dir,
        &dir.sharenet(kind, "link"),
        3000,
        1500,
        &[
            "--queue-size",
            "4",
            "--rx-delay-us",
            "20",
            "--capture",
            &pcap_s,
        ],
        &[],
    );
    let mut c = Checks::new(
        format!("{kind}: capture of RX-ring-full stalls"),
        &[&sink, &stream],
    );
    check_stream_intact(&mut c, &sink, &stream, 3000, 1500);
    c.gt(&sink, field!(rx_ring_full), 0.0);
    match Capture::read(&pcap) {
        Ok(cap) => {
            let stalls = cap.with_reason("stall reason=rx_ring_full:") as u64;
            let full = sink.u64(field!(rx_ring_full));
            c.that(
                stalls > 0 && stalls <= full,
                format!("stall records {stalls}: want 1..={full} (rx_ring_full)"),
            )
            .that(
                cap.delivered().count() as u64 == sink.u64(field!(packets_copied)),
                "every delivered frame is in the file",
            );
        }
        Err(e) => {
            c.that(false, format!("pure-Rust reader: {e}"));
        }
    }
    c.done();
}

/// A capturing sink killed with SIGKILL mid-stream leaves a file that both
/// readers open, holding the frames up to its last flush: every block is
/// whole except, at most, the one the kill interrupted (a fatal signal can
/// cut a write(2) short), which the readers report as cut short and skip.
fn killed_launcher_leaves_a_readable_capture(kind: &str) {
    let (_serial, dir, spec) = fresh_link(kind, "capture_kill");
    let (pcap, pcap_s) = dir.file("sink.pcapng");
    let mut sink = dir.sink(&spec, ENDLESS, &["--capture", &pcap_s]);
    let mut stream = dir.stream(&spec, ENDLESS, &["--size", "1000"]);
    let connected = sink.wait_for_stderr("connected to peer pid", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));
    sink.signal(Signal::SIGKILL);
    let sink = sink.finish(Duration::from_secs(5));
    stream.signal(Signal::SIGINT);
    let stream = stream.finish(Duration::from_secs(10));
    let mut c = Checks::new(
        format!("{kind}: capture of a killed sink"),
        &[&sink, &stream],
    );
    c.that(connected, "the pair connected")
        .that(sink.code.is_none(), "the sink died by the signal");
    let got = match Capture::read(&pcap) {
        Ok(cap) => {
            let n = cap.delivered().count();
            c.that(n > 1000, format!("the file holds {n} frames, want > 1000"))
                .that(
                    cap.delivered().all(|p| p.orig_len == 1000 + ETH_HDR),
                    "every frame is a whole 1000-byte frame behind its Ethernet header",
                );
            Some(cap.packets.len())
        }
        Err(e) => {
            c.that(false, format!("pure-Rust reader: {e}"));
            None
        }
    };
    if tshark_available() {
        let ci = capinfos_count_of(&pcap, true);
        c.that(
            ci.as_ref().ok().map(|&n| n as usize) == got,
            format!("capinfos reads the file: {ci:?} packets, the Rust reader {got:?}"),
        );
    }
    c.done();
}

/// Usage: `--snaplen` needs `--capture`; a capture file that cannot be
/// created is named with its flag; both exit 2 before any rendezvous.
#[test]
fn capture_usage_errors_name_the_flag_and_exit_2() {
    let dir = TestDir::new("capture_usage");
    let spec = dir.sharenet("unix", "link");
    let a = dir.run_raw("snaplen", &["--sharenet", &spec, "--snaplen", "128"]);
    let b = dir.run_raw(
        "nodir",
        &[
            "--sharenet",
            &spec,
            "--capture",
            "/nonexistent/dir/x.pcapng",
        ],
    );
    let s = dir.run_raw(
        "small",
        &[
            "--sharenet",
            &spec,
            "--capture",
            "x.pcapng",
            "--snaplen",
            "10",
        ],
    );
    let mut c = Checks::new("capture usage errors", &[&a, &b, &s]);
    c.exit(&a, 2)
        .stderr_has(&a, "--snaplen 128 needs --capture")
        .exit(&b, 2)
        .stderr_has(
            &b,
            "--capture /nonexistent/dir/x.pcapng: cannot create the file",
        )
        .exit(&s, 2)
        .stderr_has(&s, "64..=65535");
    c.done();
}

crate::transport_tests! {
    unix: [
        capture_holds_every_packet_received,
        capture_marks_malformed_chains_with_their_reason,
        capture_marks_rx_ring_full_stalls,
        killed_launcher_leaves_a_readable_capture,
    ],
    eventfd: [
        capture_holds_every_packet_received,
        capture_marks_malformed_chains_with_their_reason,
    ],
}
