//! A switch: many launchers on one `lguest-launcher switch` (issue 17).
//!
//! Every test starts a real switch process and real member launchers that
//! share memory with it through real fds, over every transport (`unix:`
//! and `eventfd:` members all meet the switch at one path; `fifo:` member
//! N uses `PATH.N`). What must hold:
//!
//! * streams crossing the switch at once arrive intact, exactly as many
//!   as were sent, at the member they were addressed to and no other
//!   (`not_for_us` = 0 everywhere: the switch learned every address from
//!   the members' hellos and never flooded a unicast frame);
//! * a broadcast reaches every other member;
//! * the switch's counters add up: frames in = unicast + flooded + drops
//!   at the port they came in on; copies asked = frames out + `no_room`;
//! * a member killed mid-stream frees its port without disturbing the
//!   others, and a member that joins later is served;
//! * a member that stops reading costs the others nothing: frames for it
//!   are dropped at its port and counted, everyone else finishes;
//! * a member that comes back (same MAC) gets its old port number.

mod common;

use common::{
    check_counters_add_up, mac, serial, Checks, Outcome, Proc, Switch, TestDir, EXIT_LIMIT,
};
use lguest_launcher::switch::stats::SwitchStats;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

const BROADCAST: &str = "ff:ff:ff:ff:ff:ff";

/// A synthetic member on `spec`: `workload` for `count` packets, role and
/// `--name` `name`, MAC `mac`; `extra` follows (`--dst`, `--size`, ...).
fn member(
    dir: &TestDir,
    name: &str,
    spec: &str,
    mac: &str,
    workload: &str,
    count: &str,
    extra: &[&str],
) -> Proc {
    let mut args = vec![
        "--workload",
        workload,
        "--count",
        count,
        "--mac",
        mac,
        "--name",
        name,
    ];
    args.extend_from_slice(extra);
    dir.spawn(name, spec, &args)
}

/// A stream member `name` with MAC `mac(from)` sending `count` frames to
/// `mac(to)`.
fn stream_to(dir: &TestDir, name: &str, spec: &str, (from, to): (u8, u8), count: &str) -> Proc {
    member(
        dir,
        name,
        spec,
        &mac(from),
        "stream",
        count,
        &["--dst", &mac(to)],
    )
}

/// Frames per unicast stream, and in the broadcast.
const STREAM: u64 = 20_000;
const BCAST: u64 = 1_000;
const SIZE: u64 = 1000;

/// 8 members (4 sinks, 4 streams, each stream to its own sink) and a
/// broadcaster on one switch, all at once; push ports (the default: the
/// switch copies each frame straight into the sink's RX ring).
fn eight_members_four_streams_and_a_broadcast(kind: &str) {
    eight_members(kind, "on");
}

/// The same with `--push off`: every port pulls (the sink's copier takes
/// each frame from the port's ring).
fn eight_members_four_streams_and_a_broadcast_pull(kind: &str) {
    eight_members(kind, "off");
}

fn eight_members(kind: &str, push: &str) {
    let _g = serial();
    let dir = TestDir::new(&format!("switch8-{kind}-push-{push}"));
    let mut sw = Switch::start(&dir, kind, 9, "90", &["--push", push]);
    let per_sink = (STREAM + BCAST).to_string();
    let (n, b, size) = (STREAM.to_string(), BCAST.to_string(), SIZE.to_string());
    // Sinks first, so the switch has learned them (their hellos) before
    // anyone sends to them. `--reconnect`: another sender's end of stream
    // (the broadcaster's) does not end a sink that counts.
    let mut sinks: Vec<Proc> = (0..4)
        .map(|k| {
            let m = mac(0x10 + k as u8);
            member(
                &dir,
                &format!("sink{k}"),
                &sw.spec(k),
                &m,
                "sink",
                &per_sink,
                &["--reconnect", "--timeout", "60"],
            )
        })
        .collect();
    sw.wait_joined(4);
    std::thread::sleep(Duration::from_millis(300));
    let mut streams: Vec<Proc> = (0..4)
        .map(|k| {
            let (m, d) = (mac(0x20 + k as u8), mac(0x10 + k as u8));
            member(
                &dir,
                &format!("stream{k}"),
                &sw.spec(4 + k),
                &m,
                "stream",
                &n,
                &["--size", &size, "--dst", &d, "--timeout", "60"],
            )
        })
        .collect();
    let mut bcast = member(
        &dir,
        "bcast",
        &sw.spec(8),
        &mac(0x30),
        "stream",
        &b,
        &["--size", &size, "--dst", BROADCAST, "--timeout", "60"],
    );
    let streams: Vec<Outcome> = streams.iter_mut().map(|p| p.finish(EXIT_LIMIT)).collect();
    let bcast = bcast.finish(EXIT_LIMIT);
    let sinks: Vec<Outcome> = sinks.iter_mut().map(|p| p.finish(EXIT_LIMIT)).collect();
    let (swo, st) = sw.stop();
    let mut ctx: Vec<&Outcome> = sinks.iter().chain(&streams).collect();
    ctx.extend([&bcast, &swo]);
    let mut c = Checks::new(
        format!("8 members + broadcast over {kind}, --push {push}"),
        &ctx,
    );
    c.exit(&swo, 0).exit(&bcast, 0);
    let pushed = push == "on";
    for p in &st.ports {
        c.that(
            p.rx_push == pushed,
            format!("port {} should be rx_push {pushed}", p.port),
        );
    }
    for (k, s) in sinks.iter().enumerate() {
        // Who copied: the switch into the sink's ring (push), or the
        // sink's copier (pull).
        let copied = if pushed { 0 } else { STREAM + BCAST };
        c.exit(s, 0)
            .eq(s, field!(rx_push), pushed)
            .that(
                s.u64(field!(packets_copied)) >= copied
                    && (!pushed || s.u64(field!(packets_copied)) == 0),
                format!("sink{k}: packets_copied should be {copied} (+ hellos/ends)"),
            )
            .eq(s, field!(packets_received), STREAM + BCAST)
            .eq(s, field!(bytes_received), (STREAM + BCAST) * SIZE)
            .eq(s, field!(corrupted), 0)
            .eq(s, field!(not_for_us), 0)
            .eq(s, field!(foreign), 0)
            .eq(s, field!(mac), mac(0x10 + k as u8));
    }
    for s in &streams {
        c.exit(s, 0)
            .eq(s, field!(packets_sent), STREAM)
            .eq(s, field!(packets_consumed), STREAM)
            .eq(s, field!(not_for_us), 0);
    }
    c.eq(&bcast, field!(packets_consumed), BCAST);
    check_counters_add_up(&mut c, &st);
    c.that(
        st.joins == 9,
        format!("9 members should have joined, got {}", st.joins),
    );
    c.that(
        st.learned >= 9,
        format!("9 addresses should be learned, got {}", st.learned),
    );
    c.that(
        st.unicast >= 4 * STREAM,
        format!("at least {} unicast frames, got {}", 4 * STREAM, st.unicast),
    );
    for p in &st.ports {
        // The first member's hello finds no other port: `unknown_port`.
        c.that(
            p.drops.no_room + p.drops.malformed + p.drops.same_port == 0
                && p.drops.unknown_port <= 1,
            format!("port {} should drop nothing, got {:?}", p.port, p.drops),
        );
    }
    let early: u64 = st.ports.iter().map(|p| p.drops.unknown_port).sum();
    c.that(
        early <= 1,
        format!("only the first hello may find nobody, got {early}"),
    );
    // Which port each member had (fifo: fixed; sockets: by pid).
    let port_of = |o: &Outcome| st.ports.iter().find(|p| p.pid == o.pid).map(|p| p.port);
    for (k, s) in sinks.iter().enumerate() {
        let Some(p) = port_of(s) else {
            c.that(
                false,
                format!("sink{k} (pid {}) has no port in the stats", s.pid),
            );
            continue;
        };
        let out = st.ports[p].tx_packets;
        // Its stream, the broadcast, and at most the others' hellos and
        // end frames: nothing of the other streams.
        c.that(
            (STREAM + BCAST..=STREAM + BCAST + 16).contains(&out),
            format!(
                "port {p} (sink{k}) should get {} frames + hellos/ends, got {out}",
                STREAM + BCAST
            ),
        );
    }
    for (k, s) in streams.iter().enumerate() {
        if let Some(p) = port_of(s) {
            let rx = st.ports[p].rx_packets;
            c.that(
                (STREAM + 1..=STREAM + 2).contains(&rx),
                format!("port {p} (stream{k}) should take its {STREAM} frames + hello (+ end), got {rx}"),
            );
        }
    }
    c.done();
}

/// A member killed mid-stream frees its port; the other pair finishes
/// intact, and a member that joins afterwards is served.
fn member_killed_mid_stream_does_not_disturb_the_others(kind: &str) {
    let _g = serial();
    let dir = TestDir::new(&format!("switchkill-{kind}"));
    let mut sw = Switch::start(&dir, kind, 6, "90", &[]);
    let n = STREAM.to_string();
    let mut a = member(&dir, "sinkA", &sw.spec(0), &mac(0xa), "sink", &n, &[]);
    let mut c_sink = member(&dir, "sinkC", &sw.spec(1), &mac(0xc), "sink", "0", &[]);
    sw.wait_joined(2);
    std::thread::sleep(Duration::from_millis(300));
    // D streams to C far longer than the test lasts; it is killed.
    let mut d = stream_to(&dir, "streamD", &sw.spec(3), (0xd, 0xc), "100000000");
    let mut b = stream_to(&dir, "streamB", &sw.spec(2), (0xb, 0xa), &n);
    assert!(
        c_sink.wait_for_stderr("first frame from", Duration::from_secs(20)),
        "sinkC got nothing from D:\n{}",
        c_sink.stderr()
    );
    std::thread::sleep(Duration::from_millis(100));
    d.signal(Signal::SIGKILL);
    let d = d.finish(Duration::from_secs(5));
    let b = b.finish(EXIT_LIMIT);
    let a = a.finish(EXIT_LIMIT);
    // A latecomer on D's port finishes what C waits for.
    let mut e = stream_to(&dir, "streamE", &sw.spec(3), (0xe, 0xc), "5000");
    let e = e.finish(EXIT_LIMIT);
    let c_out = c_sink.finish(EXIT_LIMIT);
    let (swo, st) = sw.stop();
    let mut c = Checks::new(
        format!("member killed over {kind}"),
        &[&a, &b, &c_out, &d, &e, &swo],
    );
    c.exit(&swo, 0)
        .exit(&a, 0)
        .exit(&b, 0)
        .exit(&e, 0)
        .exit(&c_out, 0)
        .eq(&a, field!(packets_received), STREAM)
        .eq(&a, field!(bytes_received), STREAM * 1500)
        .eq(&a, field!(corrupted), 0)
        .eq(&a, field!(out_of_order), 0)
        .eq(&a, field!(not_for_us), 0)
        .eq(&b, field!(packets_consumed), STREAM)
        .eq(&c_out, field!(corrupted), 0)
        .eq(&e, field!(packets_consumed), 5000)
        .stderr_has(&swo, &format!("member pid {} left", d.pid));
    c.that(
        c_out.u64(field!(packets_received)) >= 5000,
        "sinkC should have E's 5000 frames",
    );
    c.that(
        st.joins == 5,
        format!("5 members should have joined, got {}", st.joins),
    );
    c.that(
        st.leaves == 5,
        format!("5 members should have left, got {}", st.leaves),
    );
    check_counters_add_up(&mut c, &st);
    c.done();
}

/// A member that stops reading (one frame a second): frames for it are
/// dropped at its port and counted; the other pair finishes intact.
fn slow_member_does_not_stall_the_others(kind: &str) {
    let _g = serial();
    let dir = TestDir::new(&format!("switchslow-{kind}"));
    // A hold long enough for a loaded machine's wake-ups; the member
    // that stopped reading costs its sender one hold, then drops.
    let mut sw = Switch::start(&dir, kind, 4, "90", &["--hold-ms", "200"]);
    let n = STREAM.to_string();
    let mut fast = member(&dir, "fast", &sw.spec(0), &mac(0xf), "sink", &n, &[]);
    let mut slow = member(
        &dir,
        "slow",
        &sw.spec(1),
        &mac(0x5),
        "sink",
        "0",
        &["--rx-delay-us", "1000000", "--timeout", "60"],
    );
    sw.wait_joined(2);
    std::thread::sleep(Duration::from_millis(300));
    let mut to_slow = stream_to(&dir, "to_slow", &sw.spec(2), (0x55, 0x5), "5000");
    let mut to_fast = stream_to(&dir, "to_fast", &sw.spec(3), (0xff, 0xf), &n);
    let to_slow = to_slow.finish(EXIT_LIMIT);
    let to_fast = to_fast.finish(EXIT_LIMIT);
    let fast = fast.finish(EXIT_LIMIT);
    slow.signal(Signal::SIGINT);
    let slow = slow.finish(Duration::from_secs(10));
    let (swo, st) = sw.stop();
    let mut c = Checks::new(
        format!("slow member over {kind}"),
        &[&fast, &to_fast, &slow, &to_slow, &swo],
    );
    c.exit(&swo, 0)
        .exit(&fast, 0)
        .exit(&to_fast, 0)
        .exit(&to_slow, 0)
        .received(&fast, STREAM)
        .eq(&fast, field!(out_of_order), 0)
        .eq(&to_slow, field!(packets_consumed), 5000)
        .eq(&slow, field!(corrupted), 0);
    let slow_port = st.ports.iter().find(|p| p.pid == slow.pid);
    match slow_port {
        Some(p) => {
            c.that(
                p.drops.no_room > 0,
                format!(
                    "the slow member's port should drop for room, got {:?}",
                    p.drops
                ),
            );
            c.that(
                p.tx_packets + p.drops.no_room >= 5000,
                format!("every frame for it is delivered or dropped: {p:?}"),
            );
            // A push port (the default): its room is the RX buffers the
            // slow member posts, and waiting for them stalls nobody else.
            c.that(
                p.rx_push,
                format!("the slow member's port should push: {p:?}"),
            );
        }
        None => {
            c.that(false, "the slow member has no port in the stats");
        }
    }
    c.that(
        slow.u64(field!(packets_received)) < 5000,
        "the slow member cannot have read everything",
    );
    check_counters_add_up(&mut c, &st);
    c.done();
}

/// A member killed and started again with the same MAC address gets its
/// old port number back, even though another member joined meanwhile and
/// (unix/eventfd) it is first given another free port; frames for its MAC
/// reach it there.
fn member_that_comes_back_gets_its_old_port(kind: &str) {
    let _g = serial();
    let dir = TestDir::new(&format!("switchback-{kind}"));
    let mut sw = Switch::start(&dir, kind, 5, "90", &[]);
    let specs: Vec<String> = (0..5).map(|n| sw.spec(n)).collect();
    let sink = |name: &str, port: usize, m: u8| {
        member(&dir, name, &specs[port], &mac(m), "sink", "0", &[])
    };
    let mut a = sink("a", 0, 0xa);
    sw.wait_joined(1);
    let mut b = sink("b", 1, 0xb);
    sw.wait_joined(2);
    let mut c_ = sink("c", 2, 0xc);
    sw.wait_joined(3);
    // Their hellos learned before B goes.
    std::thread::sleep(Duration::from_millis(300));
    b.signal(Signal::SIGKILL);
    let b = b.finish(Duration::from_secs(5));
    let end = Instant::now() + Duration::from_secs(10);
    while !sw
        .proc
        .stderr()
        .contains(&format!("member pid {} left", b.pid))
    {
        assert!(
            Instant::now() < end,
            "B's leaving not seen:\n{}",
            sw.proc.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // A newcomer does not take the port B is remembered on.
    let mut d = sink("d", 3, 0xd);
    sw.wait_joined(4);
    let mut b2 = sink("b2", 1, 0xb);
    sw.wait_joined(5);
    let end = Instant::now() + Duration::from_secs(10);
    let back = format!("port 1: member pid {} ", b2.pid());
    while !sw.proc.stderr().contains(&back) {
        assert!(
            Instant::now() < end,
            "B is not back on port 1:\n{}",
            sw.proc.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Frames for B's address reach the member that came back.
    let mut e = stream_to(&dir, "e", &specs[4], (0xe, 0xb), "1000");
    let e = e.finish(EXIT_LIMIT);
    let b2 = b2.finish(EXIT_LIMIT);
    for p in [&mut a, &mut c_, &mut d] {
        p.signal(Signal::SIGINT);
    }
    let (a, c_out, d) = (
        a.finish(EXIT_LIMIT),
        c_.finish(EXIT_LIMIT),
        d.finish(EXIT_LIMIT),
    );
    let (swo, st) = sw.stop();
    let mut c = Checks::new(
        format!("member comes back over {kind}"),
        &[&a, &b, &b2, &c_out, &d, &e, &swo],
    );
    c.exit(&swo, 0).exit(&e, 0).exit(&b2, 0).received(&b2, 1000);
    let port = |n: usize| st.ports.get(n).cloned().unwrap_or_default();
    c.that(
        port(1).pid == b2.pid && port(1).joins == 2,
        format!(
            "port 1 should be B's again (pid {}, 2 joins): {:?}",
            b2.pid,
            port(1)
        ),
    );
    c.that(
        port(3).pid == d.pid,
        format!(
            "the newcomer should be on port 3 (pid {}): {:?}",
            d.pid,
            port(3)
        ),
    );
    c.that(
        port(1).tx_packets >= 1000,
        format!("E's frames should go out of port 1: {:?}", port(1)),
    );
    check_counters_add_up(&mut c, &st);
    c.done();
}

crate::transport_suite!(
    eight_members_four_streams_and_a_broadcast,
    eight_members_four_streams_and_a_broadcast_pull,
    member_killed_mid_stream_does_not_disturb_the_others,
    slow_member_does_not_stall_the_others,
    member_that_comes_back_gets_its_old_port,
);

#[test]
fn switch_usage_errors_exit_2_naming_the_flag() {
    let dir = TestDir::new("switchusage");
    let bad_dir = format!("unix:{}/no-such-dir/sw", dir.path().display());
    for (args, needle) in [
        (
            vec!["switch", "--sharenet", "unix:/tmp/x", "--ports", "0"],
            "--ports",
        ),
        (
            vec!["switch", "--sharenet", "unix:/tmp/x", "--ports", "65"],
            "--ports",
        ),
        (vec!["switch", "--sharenet", &bad_dir], "no-such-dir"),
        (
            vec!["switch", "--sharenet", "unix:/tmp/x", "--mac-table", "0"],
            "--mac-table",
        ),
        (
            vec!["--sharenet", "unix:/tmp/x", "--mac", "02:00:00"],
            "--mac",
        ),
    ] {
        let o = dir.run_raw("usage", &args);
        let mut c = Checks::new(format!("{args:?}"), &[&o]);
        c.exit(&o, 2).stderr_has(&o, needle).done();
    }
}

/// Captures the frames a stream member sends through the switch's TAP
/// port (on the host side, in the test's network namespace), checks their
/// sequence numbers and sizes, then sends them back into the TAP
/// addressed to the sink member. Prints one JSON line.
const TAP_SCRIPT: &str = r#"
import json, socket, struct, sys, time
k, iface, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
stream = bytes.fromhex(sys.argv[4].replace(':', ''))
sink = bytes.fromhex(sys.argv[5].replace(':', ''))
host = bytes.fromhex('0200000000ee')
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
s.bind((iface, 0))
s.settimeout(1.0)
print('ready', flush=True)
frames, other, end = {}, 0, time.time() + 40
while len(frames) < k and time.time() < end:
    try:
        f = s.recv(70000)
    except socket.timeout:
        continue
    if f[6:12] != stream:
        other += 1
        continue
    seq = struct.unpack_from('<Q', f, 14)[0]
    if seq == 2**64 - 1:
        continue
    frames[seq] = f
ok = sorted(frames) == list(range(k)) and all(len(f) == 14 + size for f in frames.values())
sent = 0
for seq in sorted(frames):
    s.send(sink + host + frames[seq][12:])
    sent += 1
    time.sleep(0.0002)
print(json.dumps({'captured': len(frames), 'in_order': ok, 'sent': sent, 'other': other}), flush=True)
"#;

/// Run `ip ARGS`, panicking with its stderr on failure.
fn ip(args: &[&str]) {
    let o = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The network namespace of one test, deleted when dropped.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// `--tap`: frames a member sends reach the host's stack (captured on
/// the TAP in a namespace of the test's own), and frames the host sends
/// into the TAP reach the member they are addressed to, intact.
#[test]
fn tap_port_carries_frames_between_host_and_members() {
    if !nix::unistd::geteuid().is_root() || !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("skipped: needs root and /dev/net/tun");
        return;
    }
    let _g = serial();
    let dir = TestDir::new("switchtap");
    let ns = Netns(format!("sn-sw-{}", std::process::id()));
    ip(&["netns", "add", &ns.0]);
    // No IPv6 chatter (router solicitations) on the TAP.
    for knob in ["all", "default"] {
        let _ = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.0, "sysctl", "-qw"])
            .arg(format!("net.ipv6.conf.{knob}.disable_ipv6=1"))
            .status();
    }
    let spec = format!("unix:{}", dir.path().join("sw").display());
    let stats = dir.path().join("switch.json");
    let launcher = common::launcher().display().to_string();
    let stats_s = stats.display().to_string();
    let mut sw = dir.spawn_program(
        "switch",
        std::path::Path::new("ip"),
        &[
            "netns",
            "exec",
            &ns.0,
            &launcher,
            "switch",
            "--sharenet",
            &spec,
            "--ports",
            "4",
            "--tap",
            "snsw0",
            "--stats-json",
            &stats_s,
            "--timeout",
            "90",
        ],
    );
    assert!(
        sw.wait_for_stderr("TAP device snsw0", Duration::from_secs(10)),
        "switch with --tap did not start:\n{}",
        sw.stderr()
    );
    ip(&["-n", &ns.0, "link", "set", "snsw0", "up"]);
    const K: u64 = 200;
    const TAP_SIZE: u64 = 200;
    let (k, size) = (K.to_string(), TAP_SIZE.to_string());
    let (sink_mac, stream_mac) = (mac(0x5a), mac(0x7a));
    let mut sink = member(&dir, "sink", &spec, &sink_mac, "sink", &k, &[]);
    assert!(
        sw.wait_for_stderr(" joined", Duration::from_secs(20)),
        "sink did not join:\n{}",
        sw.stderr()
    );
    let mut host = dir.spawn_program(
        "host",
        std::path::Path::new("ip"),
        &[
            "netns",
            "exec",
            &ns.0,
            "python3",
            "-c",
            TAP_SCRIPT,
            &k,
            "snsw0",
            &size,
            &stream_mac,
            &sink_mac,
        ],
    );
    let ready = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(dir.path().join("host.out"))
        .unwrap_or_default()
        .contains("ready")
    {
        assert!(
            Instant::now() < ready,
            "capture did not start:\n{}",
            host.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // To an address nobody has: flooded to the TAP (and to the sink,
    // whose address filter drops it).
    let mut stream = member(
        &dir,
        "stream",
        &spec,
        &stream_mac,
        "stream",
        &k,
        &["--size", &size, "--dst", "02:00:00:00:00:ee"],
    );
    let stream = stream.finish(EXIT_LIMIT);
    let host = host.finish(Duration::from_secs(60));
    let sink = sink.finish(EXIT_LIMIT);
    sw.signal(Signal::SIGINT);
    let swo = sw.finish(Duration::from_secs(10));
    let text = std::fs::read_to_string(&stats).unwrap_or_default();
    let st: SwitchStats = serde_json::from_str(&text).unwrap_or_default();
    let report: serde_json::Value = host
        .stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    let mut c = Checks::new("TAP port", &[&sink, &stream, &host, &swo]);
    c.exit(&stream, 0)
        .exit(&host, 0)
        .exit(&sink, 0)
        .exit(&swo, 0)
        .eq(&sink, field!(packets_received), K)
        .eq(&sink, field!(bytes_received), K * TAP_SIZE)
        .eq(&sink, field!(corrupted), 0)
        .eq(&sink, field!(out_of_order), 0);
    // The stream's frames and its end-of-stream frame, flooded.
    let nfu = sink.u64(field!(not_for_us));
    c.that(
        (K..=K + 1).contains(&nfu),
        format!("the sink should filter the stream's {K} frames (+ end), got {nfu}"),
    );
    c.that(
        report["captured"] == K && report["in_order"] == true,
        format!(
            "the host should capture {K} frames 0..{K} of {} B: {report}",
            14 + TAP_SIZE
        ),
    );
    let tap = st.ports.iter().find(|p| p.state == "tap");
    c.that(
        tap.is_some_and(|p| p.rx_packets >= K && p.tx_packets >= K),
        format!("the TAP port should count {K} frames each way: {tap:?}"),
    );
    check_counters_add_up(&mut c, &st);
    c.done();
}

#[test]
fn switch_profile_sets_what_flags_set_and_refuses_unknown_keys() {
    let dir = TestDir::new("switchprofile");
    let (_, good_s) = dir.write_file(
        "sw.toml",
        format!(
            "[switch]\nsharenet = \"unix:{}/sw\"\nports = 3\nhold_ms = 10\n",
            dir.path().display()
        ),
    );
    // The profile names the path and 3 ports.
    let o = dir.run_raw(
        "good",
        &["switch", "--profile", &good_s, "--timeout", "0.5"],
    );
    Checks::new("switch profile", &[&o])
        .exit(&o, 0)
        .stderr_has(&o, "[switch] 3 ports; members join on unix:")
        .done();
    // A flag wins over the profile.
    let o = dir.run_raw(
        "flag_wins",
        &[
            "switch",
            "--profile",
            &good_s,
            "--ports",
            "5",
            "--timeout",
            "0.5",
        ],
    );
    Checks::new("flag wins", &[&o])
        .exit(&o, 0)
        .stderr_has(&o, "[switch] 5 ports")
        .done();
    let (_, bad_s) = dir.write_file("bad.toml", "[switch]\nports = 3\nportz = 4\n");
    let o = dir.run_raw("bad", &["switch", "--profile", &bad_s]);
    Checks::new("bad switch profile", &[&o])
        .exit(&o, 2)
        .stderr_has(
            &o,
            "bad.toml:3: unknown key `portz` in [switch]; expected one of sharenet, ports",
        )
        .done();
    // `capture` and `snaplen` in the profile start the per-port capture:
    // the file exists and begins with a pcapng section header.
    let pcap = dir.path().join("sw.pcapng");
    let (_, cap_s) = dir.write_file(
        "cap.toml",
        format!(
            "[switch]\nsharenet = \"unix:{}/swc\"\nports = 2\ncapture = \"{}\"\nsnaplen = 128\n",
            dir.path().display(),
            pcap.display()
        ),
    );
    let o = dir.run_raw(
        "capture_profile",
        &["switch", "--profile", &cap_s, "--timeout", "0.5"],
    );
    let head = std::fs::read(&pcap).unwrap_or_default();
    Checks::new("switch profile capture", &[&o])
        .exit(&o, 0)
        .that(
            head.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]),
            format!(
                "{} starts with a pcapng section header block",
                pcap.display()
            ),
        )
        .done();
    // `snaplen` without any capture is a usage error naming the fix.
    let (_, nocap_s) = dir.write_file(
        "nocap.toml",
        "[switch]\nsharenet = \"unix:/tmp/x\"\nsnaplen = 128\n",
    );
    let o = dir.run_raw("snaplen_alone", &["switch", "--profile", &nocap_s]);
    Checks::new("switch profile snaplen without capture", &[&o])
        .exit(&o, 2)
        .stderr_has(&o, "[switch] snaplen needs a capture")
        .done();
}

/// `switch --cpu N` pins the forwarding thread (the process's main
/// thread, `/proc/PID/status`'s `Cpus_allowed_list`) and the switch
/// forwards as before; a CPU the machine lacks, as a flag or as `cpu` in
/// `[switch]`, is a usage error naming `--cpu`.
#[test]
fn switch_cpu_pins_the_forwarding_thread() {
    let _g = serial();
    let dir = TestDir::new("switchcpu");
    let cpu = (0..lguest_launcher::cli::online_cpus())
        .find(|&c| lguest_launcher::cli::cpu_allowed(c))
        .expect("some CPU this test may run on");
    let cpu_s = cpu.to_string();
    let mut sw = Switch::start(&dir, "unix", 2, "60", &["--cpu", &cpu_s]);
    let status = format!("/proc/{}/status", sw.proc.pid());
    let allowed = || {
        std::fs::read_to_string(&status)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let end = Instant::now() + Duration::from_secs(10);
    while allowed() != cpu_s && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let pinned = allowed();
    const N: u64 = 5_000;
    let n = N.to_string();
    let mut sink = member(&dir, "sink", &sw.spec(0), &mac(1), "sink", &n, &[]);
    sw.wait_joined(1);
    let mut stream = stream_to(&dir, "stream", &sw.spec(1), (2, 1), &n);
    let (outs, swo, _) = sw.finish_members([&mut stream, &mut sink]);
    let (stream, sink) = (&outs[0], &outs[1]);
    Checks::new("a pinned switch", &[stream, sink, &swo])
        .that(
            pinned == cpu_s,
            format!("the switch's main thread may run on CPUs {pinned:?}, not only {cpu_s}"),
        )
        .all_exit([stream, sink, &swo], 0)
        .received(sink, N)
        .done();

    let o = dir.run_raw(
        "cpu_flag",
        &["switch", "--sharenet", "unix:/tmp/x", "--cpu", "4096"],
    );
    Checks::new("switch --cpu 4096", &[&o])
        .usage_error(&o, &["--cpu"])
        .done();
    let (_, prof) = dir.write_file(
        "cpu.toml",
        format!(
            "[switch]\nsharenet = \"unix:{}/swp\"\ncpu = 1000\n",
            dir.path().display()
        ),
    );
    let o = dir.run_raw("cpu_profile", &["switch", "--profile", &prof]);
    Checks::new("[switch] cpu = 1000", &[&o])
        .usage_error(&o, &["--cpu 1000 (or cpu in a profile's [switch])"])
        .done();
}
