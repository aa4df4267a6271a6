//! Seeing the link, beyond one pair's capture and status (`capture.rs`,
//! `status.rs`): a switch's per-port capture read back with pcap-file and
//! tshark, `status` against a live switch, and the wake-up latency
//! histogram measured during a run.

mod common;

use common::*;
use lguest_launcher::status::Reply;
use nix::sys::signal::Signal;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Per interface of a capture: names, and records by kind.
#[derive(Debug, Default)]
struct PerIface {
    names: Vec<String>,
    /// Inbound frame records (direction 1) with no comment or a drop
    /// comment other than `malformed`: one per `rx_packets`.
    inbound: BTreeMap<u32, u64>,
    /// Outbound records (direction 2): one per `tx_packets` + `no_room`.
    outbound: BTreeMap<u32, u64>,
    /// `drop reason=NAME` comments by (interface, NAME).
    drops: BTreeMap<(u32, String), u64>,
    /// Every block of an interface.
    all: BTreeMap<u32, u64>,
    /// `address MAC learned on port N` comments: (interface, MAC).
    learned: Vec<(u32, String)>,
}

fn read_per_iface(path: &Path) -> PerIface {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = PcapNgReader::new(file).expect("pcapng header");
    let mut out = PerIface::default();
    while let Some(block) = r.next_block() {
        match block.expect("a whole block") {
            Block::InterfaceDescription(idb) => {
                for o in &idb.options {
                    if let InterfaceDescriptionOption::IfName(n) = o {
                        out.names.push(n.to_string());
                    }
                }
            }
            Block::EnhancedPacket(epb) => {
                let i = epb.interface_id;
                *out.all.entry(i).or_default() += 1;
                let mut flags = 0;
                let mut reason = None;
                for o in &epb.options {
                    match o {
                        EnhancedPacketOption::Flags(f) => flags = *f,
                        EnhancedPacketOption::Comment(c) => {
                            if let Some(r) = c.strip_prefix("drop reason=") {
                                reason = r.split(':').next().map(str::to_string);
                            }
                            if let Some(m) = c.strip_prefix("address ") {
                                if let Some(m) = m.split(' ').next() {
                                    out.learned.push((i, m.to_string()));
                                }
                            }
                        }
                        _ => {}
                    }
                }
                if let Some(r) = &reason {
                    *out.drops.entry((i, r.clone())).or_default() += 1;
                }
                match flags & 0b11 {
                    1 if reason.as_deref() != Some("malformed") => {
                        *out.inbound.entry(i).or_default() += 1
                    }
                    2 => *out.outbound.entry(i).or_default() += 1,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    out
}

/// tshark's count of packets per interface id, if tshark is installed
/// (CI installs it: there a missing one fails).
fn tshark_per_iface(path: &Path) -> Option<BTreeMap<u32, u64>> {
    let out = match Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args(["-T", "fields", "-e", "frame.interface_id"])
        .output()
    {
        Ok(o) => o,
        Err(_) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIP the tshark half: tshark not installed");
            return None;
        }
        Err(e) => panic!("tshark: {e} (.ci/run installs it)"),
    };
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut m = BTreeMap::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        *m.entry(l.trim().parse().expect("an interface id"))
            .or_default() += 1;
    }
    Some(m)
}

fn eq<T: PartialEq + std::fmt::Debug>(c: &mut Checks<'_>, what: &str, got: T, want: T) {
    let ok = got == want;
    c.that(ok, format!("{what}: got {got:?}, want {want:?}"));
}

/// A sink (`--mac A`, `--count`) on port 0 of `sw` and, once it joined, a
/// stream to it (`--mac B --dst A`, `--count`, then `extra`) on port 1.
fn sink_then_stream(
    dir: &TestDir,
    sw: &mut Switch,
    (a, sink_count): (&str, &str),
    (b, stream_count, extra): (&str, &str, &[&str]),
) -> (Proc, Proc) {
    let sink_args = ["--mac", a, "--workload", "sink", "--count", sink_count];
    let sink = dir.spawn("sink", &sw.spec(0), &sink_args);
    sw.wait_joined(1);
    let mut args = vec!["--mac", b, "--dst", a, "--workload", "stream"];
    args.extend(["--count", stream_count]);
    args.extend_from_slice(extra);
    let stream = dir.spawn("stream", &sw.spec(1), &args);
    (sink, stream)
}

/// A switch with three ports captures a stream from port 1 to a sink on
/// port 0: one interface per port (`port-0` ..), and on each interface
/// the inbound records equal the port's `rx_packets`, the outbound ones
/// its `tx_packets` + `no_room`, and each drop reason's records its drop
/// counter; tshark counts the same records per interface as pcap-file.
fn switch_capture_has_one_interface_per_port_with_its_counts(kind: &str) {
    let _serial = serial();
    let dir = TestDir::new("switch_capture");
    let (pcap, pcap_s) = dir.file("sw.pcapng");
    let mut sw = Switch::start(
        &dir,
        kind,
        3,
        "90",
        &["--capture", &pcap_s, "--snaplen", "128"],
    );
    let (count, a, b) = ("5000", "02:00:00:00:00:0a", "02:00:00:00:00:0b");
    let (mut sink, mut stream) =
        sink_then_stream(&dir, &mut sw, (a, count), (b, count, &["--size", "1000"]));
    let sink = sink.finish(EXIT_LIMIT);
    let stream = stream.finish(EXIT_LIMIT);
    sw.wait_joined(2);
    let (out, st) = sw.stop();
    let cap = read_per_iface(&pcap);
    let mut c = Checks::new(
        format!("{kind}: switch capture per port"),
        &[&sink, &stream, &out],
    );
    c.exit(&sink, 0).exit(&stream, 0).exit(&out, 0);
    eq(
        &mut c,
        "interface names",
        &cap.names[..],
        &["port-0", "port-1", "port-2"].map(String::from)[..],
    );
    c.that(st.ports.len() >= 2, format!("ports used: {:?}", st.ports));
    // Each member's MAC is named on its port's interface.
    for (port, mac) in [(0u32, a), (1, b)] {
        c.that(
            cap.learned.contains(&(port, mac.to_string())),
            format!(
                "port {port}: `address {mac} learned` record; got {:?}",
                cap.learned
            ),
        );
    }
    c.that(
        st.capture_skipped == 0,
        format!("capture skipped {}", st.capture_skipped),
    );
    for p in &st.ports {
        let i = p.port as u32;
        let get = |m: &BTreeMap<u32, u64>| m.get(&i).copied().unwrap_or(0);
        eq(
            &mut c,
            &format!("port {i}: inbound records = rx_packets"),
            get(&cap.inbound),
            p.rx_packets,
        );
        eq(
            &mut c,
            &format!("port {i}: outbound records = tx_packets + no_room"),
            get(&cap.outbound),
            p.tx_packets + p.drops.no_room,
        );
        for (name, n) in [
            ("no_room", p.drops.no_room),
            ("unknown_port", p.drops.unknown_port),
            ("malformed", p.drops.malformed),
            ("same_port", p.drops.same_port),
        ] {
            let got = cap.drops.get(&(i, name.to_string())).copied().unwrap_or(0);
            eq(
                &mut c,
                &format!("port {i}: drop reason={name} records"),
                got,
                n,
            );
        }
    }
    // The stream's frames went from port 1 to port 0.
    let p0 = st
        .ports
        .iter()
        .find(|p| p.port == 0)
        .map_or(0, |p| p.tx_packets);
    c.that(
        p0 > 5000,
        format!("port 0 took the stream's 5000 frames and its end: tx {p0}"),
    );
    if let Some(t) = tshark_per_iface(&pcap) {
        eq(&mut c, "tshark's records per interface", t, cap.all.clone());
    }
    c.done();
}

/// `status` against a live switch: one reply, role `switch`, a row per
/// port used; the stream's port counts frames in, the sink's frames out,
/// and both moved between two calls half a second apart; every port reads
/// as the typed stats; the human table names the ports.
fn status_of_a_live_switch_has_port_rows_that_move(kind: &str) {
    let _serial = serial();
    let dir = TestDir::new("switch_status");
    let mut sw = Switch::start(&dir, kind, 3, "90", &[]);
    let (a, b) = ("02:00:00:00:00:0a", "02:00:00:00:00:0b");
    let (mut sink, mut stream) =
        sink_then_stream(&dir, &mut sw, (a, "0"), (b, ENDLESS, &["--rate", "20000"]));
    sw.wait_joined(2);
    let ask = || {
        let o = Command::new(launcher())
            .args(["status", "--sharenet", &sw.base_spec(), "--json"])
            .output()
            .expect("run status");
        assert!(
            o.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
        for r in v.as_array().into_iter().flatten() {
            for p in r["ports"].as_array().into_iter().flatten() {
                serde_json::from_value::<Stats>(p.clone()).expect("a port reads as Stats");
            }
        }
        serde_json::from_value::<Vec<Reply>>(v).expect("replies")
    };
    std::thread::sleep(Duration::from_millis(300));
    let first = ask();
    std::thread::sleep(Duration::from_millis(600));
    let second = ask();
    let table = Command::new(launcher())
        .args(["status", "--sharenet", &sw.base_spec()])
        .output()
        .expect("run status");
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    stream.signal(Signal::SIGTERM);
    sink.signal(Signal::SIGTERM);
    let stream = stream.finish(EXIT_LIMIT);
    let sink = sink.finish(EXIT_LIMIT);
    let (out, _) = sw.stop();
    let mut c = Checks::new(
        format!("{kind}: status of a live switch"),
        &[&sink, &stream, &out],
    );
    let switch_of = |rs: &[Reply]| rs.iter().find(|r| r.role == "switch").cloned();
    let (Some(s1), Some(s2)) = (switch_of(&first), switch_of(&second)) else {
        c.that(false, format!("no switch reply: {first:?}"));
        return c.done();
    };
    let row = |r: &Reply, n: &str| r.ports.iter().find(|p| p.port == n).cloned();
    let (in1, in2) = (row(&s1, "port-1"), row(&s2, "port-1"));
    let (out1, out2) = (row(&s1, "port-0"), row(&s2, "port-0"));
    c.that(
        in1.is_some() && out1.is_some(),
        format!("rows port-0 and port-1: {s1:?}"),
    );
    if let (Some(a), Some(b), Some(x), Some(y)) = (in1, in2, out1, out2) {
        c.that(a.link_up && x.link_up, "both ports up");
        c.grew(
            "port-1 frames in",
            a.stats.packets_copied,
            b.stats.packets_copied,
        )
        .grew(
            "port-0 frames out",
            x.stats.packets_sent,
            y.stats.packets_sent,
        );
        eq(&mut c, "port-1's member", a.stats.peer_pid, stream.pid);
        c.that(b.rx_pps > 0.0, format!("port-1 rate {}", b.rx_pps));
    }
    c.that(
        table.contains("port-0") && table.contains("port-1"),
        format!("table:\n{table}"),
    );
    c.done();
}

/// A sleeping stream pair: every notified wake-up of each side is in its
/// wake-up latency histogram or counted unstamped; with a launcher peer
/// (which stamps its kicks) almost none is unstamped; the percentiles are
/// there; the stats carry the current link's spin hits and sleeps and the
/// ring sizes.
fn wakeup_histogram_counts_every_wakeup(kind: &str) {
    let _serial = serial();
    let dir = TestDir::new("wakeup_hist");
    let (sink, stream) = run_stream_pair(
        &dir,
        &dir.sharenet(kind, "link"),
        50_000,
        1500,
        &["--wait", "sleep"],
        &["--wait", "sleep", "--rate", "50000"],
    );
    let mut c = Checks::new(format!("{kind}: wake-up histogram"), &[&sink, &stream]);
    c.exit(&sink, 0).exit(&stream, 0);
    for o in [&sink, &stream] {
        let Some(s) = &o.stats else {
            c.that(false, format!("{}: no stats", o.role));
            continue;
        };
        let counted: u64 = s.wakeup_latency_log2_ns.iter().sum();
        eq(
            &mut c,
            &format!("{}: histogram + unstamped = wakeups", o.role),
            counted + s.wakeup_latency_unstamped,
            s.wakeups,
        );
        // Most wake-ups follow a stamped kick; under load some do not (two
        // kicks before one wake-up leave one stamp; a tick wakes us too).
        c.that(
            s.wakeup_latency_unstamped * 4 <= s.wakeups,
            format!(
                "{}: {} of {} wake-ups unstamped",
                o.role, s.wakeup_latency_unstamped, s.wakeups
            ),
        );
        eq(
            &mut c,
            &format!("{}: link_sleeps = sleeps", o.role),
            s.link_sleeps,
            s.sleeps,
        );
        eq(
            &mut c,
            &format!("{}: rx ring size", o.role),
            s.rx_ring_size,
            256,
        );
        eq(
            &mut c,
            &format!("{}: peer tx ring size", o.role),
            s.peer_tx_size,
            256,
        );
    }
    let s = sink.stats.clone().unwrap_or_default();
    c.that(
        s.wakeups > 0,
        format!("the sink slept and was woken: {}", s.wakeups),
    );
    c.that(
        s.wakeup_latency_p50_us.is_some() && s.wakeup_latency_p99_us >= s.wakeup_latency_p50_us,
        format!(
            "percentiles {:?} {:?}",
            s.wakeup_latency_p50_us, s.wakeup_latency_p99_us
        ),
    );
    c.done();
}

transport_suite!(
    switch_capture_has_one_interface_per_port_with_its_counts,
    status_of_a_live_switch_has_port_rows_that_move,
    wakeup_histogram_counts_every_wakeup,
);
