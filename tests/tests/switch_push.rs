//! Push ports (issue 17): the switch serves a member's RX ring and copies
//! each frame straight into it. Real switch, real launchers, real shared
//! memory, as in `switch.rs`, which runs its suites in push mode (the
//! default) and the 8-member suite again with `--push off`. Here:
//!
//! * who pushes: two launchers on a direct link never do; a member with
//!   `--share exchange` (its RX ring is not in the memory it shares) keeps
//!   the pull path beside push members on the same switch, and both
//!   streams arrive intact;
//! * a hostile push member (`hostile-member`, tests/src/bin) whose RX ring
//!   points outside its memory, straddles its end, loops, or whose avail
//!   index jumps, or which posts no RX buffer at all: the switch never
//!   crashes, drops what was for it and counts it at its port, and an
//!   honest pair on the same switch finishes intact;
//! * a `--gso` stream (its frames ask for offloads: the general path)
//!   beside a plain one (a run at a time, `switch/burst.rs`) on one push
//!   switch: both intact, every checksum completed, counters adding up;
//! * live `status` of a push member: its RX ring's fill is what the switch
//!   left in it (the member's copier does not take from that ring).

mod common;

use common::{
    check_counters_add_up, launcher, mac, serial, Checks, Outcome, Proc, Switch, TestDir, ENDLESS,
    EXIT_LIMIT,
};
use lguest_launcher::switch::stats::SwitchStats;
use nix::sys::signal::Signal;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn hostile_member() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hostile-member"))
}

fn member(dir: &TestDir, name: &str, spec: &str, m: &str, args: &[&str]) -> Proc {
    let mut a = vec!["--name", name, "--mac", m, "--payload", "stamp"];
    a.extend_from_slice(args);
    dir.spawn(name, spec, &a)
}

/// A stamping sink member `name` (MAC `m`) for `count` frames; `extra`
/// follows.
fn sink_member(
    dir: &TestDir,
    name: &str,
    spec: &str,
    m: &str,
    count: &str,
    extra: &[&str],
) -> Proc {
    let mut a = vec!["--workload", "sink", "--count", count];
    a.extend_from_slice(extra);
    member(dir, name, spec, m, &a)
}

/// A stamping stream member `name` (MAC `m`): `count` frames of `size`
/// bytes to `dst`.
fn stream_member(
    dir: &TestDir,
    name: &str,
    spec: &str,
    (m, dst): (&str, &str),
    count: &str,
    size: &str,
) -> Proc {
    let a = [
        "--workload",
        "stream",
        "--count",
        count,
        "--size",
        size,
        "--dst",
        dst,
    ];
    member(dir, name, spec, m, &a)
}

const N: u64 = 20_000;

#[test]
fn direct_pair_never_pushes() {
    let _g = serial();
    let dir = TestDir::new("push-direct");
    let spec = dir.sharenet("eventfd", "link");
    let n = N.to_string();
    let mut sink = sink_member(&dir, "sink", &spec, &mac(1), &n, &[]);
    let mut stream = member(
        &dir,
        "stream",
        &spec,
        &mac(2),
        &["--workload", "stream", "--count", &n, "--size", "1000"],
    );
    let stream = stream.finish(EXIT_LIMIT);
    let sink = sink.finish(EXIT_LIMIT);
    let mut c = Checks::new("a direct pair", &[&sink, &stream]);
    c.exit(&sink, 0)
        .exit(&stream, 0)
        .received(&sink, N)
        .eq(&sink, field!(rx_push), false)
        .eq(&stream, field!(rx_push), false)
        .that(
            sink.u64(field!(packets_copied)) >= N,
            "the sink's copier pulled every frame",
        );
    c.done();
}

/// A `--share exchange` member pulls beside push members on one switch.
#[test]
fn share_exchange_member_pulls_beside_push_members() {
    let _g = serial();
    let dir = TestDir::new("push-mixed");
    let mut sw = Switch::start(&dir, "unix", 4, "90", &[]);
    let spec = sw.base_spec();
    let n = N.to_string();
    let exchange = ["--share", "exchange"];
    let mut px = sink_member(&dir, "pull-sink", &spec, &mac(0xa), &n, &exchange);
    let mut ps = sink_member(&dir, "push-sink", &spec, &mac(0xb), &n, &[]);
    sw.wait_joined(2);
    std::thread::sleep(Duration::from_millis(300));
    let stream =
        |name: &str, m: &str, dst: String| stream_member(&dir, name, &spec, (m, &dst), &n, "1400");
    let mut sx = stream("to-pull", &mac(0x1a), mac(0xa));
    let mut ss = stream("to-push", &mac(0x1b), mac(0xb));
    let (outs, swo, st) = sw.finish_members([&mut sx, &mut ss, &mut px, &mut ps]);
    let ctx: Vec<&Outcome> = outs.iter().chain([&swo]).collect();
    let mut c = Checks::new("push and pull members on one switch", &ctx);
    c.exit(&swo, 0).all_exit(&outs, 0);
    let (px, ps) = (&outs[2], &outs[3]);
    c.received(px, N)
        .eq(px, field!(rx_push), false)
        .received(ps, N)
        .eq(ps, field!(rx_push), true)
        .eq(ps, field!(packets_copied), 0);
    for (o, want) in [(px, false), (ps, true)] {
        let p = st.ports.iter().find(|p| p.pid == o.pid);
        c.that(
            p.is_some_and(|p| p.rx_push == want && p.tx_packets >= N),
            format!("{}: port rx_push {want}, {N} frames out: {p:?}", o.role),
        );
    }
    c.done();
}

/// A push run (`switch/burst.rs`) ends at a frame whose header asks for an
/// offload: a `--gso` stream (partial checksums) to a push sink that takes
/// no offloads, so the switch's general path completes every checksum,
/// beside a plain stream whose frames go a run at a time, both through one
/// switch at once. Every frame of both arrives, every checksum right, and
/// the switch's counters add up.
#[test]
fn offload_frames_and_plain_runs_cross_one_push_switch() {
    let _g = serial();
    let dir = TestDir::new("push-offload-runs");
    let mut sw = Switch::start(&dir, "eventfd", 4, "90", &[]);
    let spec = sw.base_spec();
    let n = N.to_string();
    let mut plain_sink = sink_member(&dir, "plain-sink", &spec, &mac(0xa), &n, &[]);
    let (gso_mac, gso_sink_mac) = (mac(0x1b), mac(0xb));
    let mut a = vec!["--name", "gso-sink", "--mac", &gso_sink_mac];
    a.extend(["--workload", "sink", "--count", &n, "--offloads", "off"]);
    let mut gso_sink = dir.spawn("gso-sink", &spec, &a);
    sw.wait_joined(2);
    std::thread::sleep(Duration::from_millis(300));
    let to_a = mac(0xa);
    let mut plain = stream_member(&dir, "plain", &spec, (&mac(0x1a), &to_a), &n, "1400");
    let mut gso = dir.spawn(
        "gso",
        &spec,
        &[
            "--name",
            "gso",
            "--mac",
            &gso_mac,
            "--workload",
            "stream",
            "--gso",
            "--count",
            &n,
            "--size",
            "1000",
            "--dst",
            &gso_sink_mac,
        ],
    );
    let (outs, swo, st) = sw.finish_members([&mut plain, &mut gso, &mut plain_sink, &mut gso_sink]);
    let ctx: Vec<&Outcome> = outs.iter().chain([&swo]).collect();
    let mut c = Checks::new("offload frames and plain runs on one push switch", &ctx);
    c.exit(&swo, 0).all_exit(&outs, 0);
    let (ps, gs) = (&outs[2], &outs[3]);
    c.received(ps, N)
        .eq(ps, field!(rx_push), true)
        .received(gs, N)
        .eq(gs, field!(rx_push), true)
        .eq(gs, field!(tcp_segments_received), N)
        .eq(gs, field!(gso_frames_received), 0)
        .eq(gs, field!(tcp_checksum_errors), 0);
    check_counters_add_up(&mut c, &st);
    // And nothing lost on the way (no drop for room, no malformed frame,
    // no bad RX chain): every frame out is a copy asked for.
    let lost: u64 = st
        .ports
        .iter()
        .map(|p| p.drops.no_room + p.drops.malformed + p.drops.bad_rx_chain)
        .sum();
    c.that(lost == 0, format!("lost {lost}"));
    c.that(
        st.unicast >= 2 * N,
        format!("both streams unicast: {}", st.unicast),
    );
    c.done();
}

/// A hostile push member in `mode` beside an honest pair; frames are sent
/// to it all along. What the switch must do with it: `check`.
fn hostile_push_member(
    kind: &str,
    mode: &str,
    check: impl Fn(&mut Checks<'_>, &SwitchStats, &Outcome, &Outcome),
) {
    let _g = serial();
    let dir = TestDir::new(&format!("push-hostile-{mode}-{kind}"));
    let mut sw = Switch::start(&dir, kind, 4, "90", &["--hold-ms", "50"]);
    let spec = sw.base_spec();
    let n = N.to_string();
    let mut sink = sink_member(&dir, "sink", &spec, &mac(0xa), &n, &[]);
    let hm = mac(0xe);
    let mut bad = dir.spawn_program("hostile", hostile_member(), &[&spec, mode, &hm, "40"]);
    sw.wait_joined(2);
    std::thread::sleep(Duration::from_millis(300));
    let stream = |name: &str, m: &str, dst: &str, count: &str| {
        stream_member(&dir, name, &spec, (m, dst), count, "1000")
    };
    let mut to_bad = stream("to-hostile", &mac(0x1e), &hm, "5000");
    let mut to_sink = stream("to-sink", &mac(0x1a), &mac(0xa), &n);
    let to_sink = to_sink.finish(EXIT_LIMIT);
    let sink = sink.finish(EXIT_LIMIT);
    let to_bad = to_bad.finish(EXIT_LIMIT);
    let bad = bad.finish(EXIT_LIMIT);
    let (swo, st) = sw.stop();
    let mut c = Checks::new(
        format!("hostile push member ({mode}) over {kind}"),
        &[&sink, &to_sink, &to_bad, &bad, &swo],
    );
    c.exit(&swo, 0)
        .exit(&sink, 0)
        .exit(&to_sink, 0)
        .exit(&to_bad, 0)
        .received(&sink, N)
        .eq(&sink, field!(rx_push), true)
        .eq(&to_bad, field!(packets_consumed), 5000)
        .that(!swo.stderr.contains("panicked"), "the switch panicked");
    // Counters still add up: frames in = unicast + flooded + dropped
    // where they came in; copies = frames out + no_room.
    check_counters_add_up(&mut c, &st);
    check(&mut c, &st, &bad, &swo);
    c.done();
}

/// The hostile member's port.
fn port_of<'a>(
    st: &'a SwitchStats,
    o: &Outcome,
) -> Option<&'a lguest_launcher::switch::stats::PortStats> {
    st.ports.iter().find(|p| p.pid == o.pid)
}

fn hostile_rx_descriptors_are_dropped_and_counted(kind: &str) {
    hostile_push_member(kind, "rx-garbage", |c, st, bad, _| {
        let p = port_of(st, bad);
        c.that(
            p.is_some_and(|p| {
                p.rx_push && p.drops.bad_rx_chain > 0 && p.drops.no_room >= p.drops.bad_rx_chain
            }),
            format!("bad RX chains counted at the hostile port: {p:?}"),
        );
        // Its valid descriptors (the last bytes of its memory) are used.
        c.that(
            p.is_some_and(|p| p.tx_packets > 0),
            format!("frames into its valid buffers: {p:?}"),
        );
    });
}

fn hostile_rx_avail_jump_ends_its_port(kind: &str) {
    hostile_push_member(kind, "rx-jump", |c, st, bad, swo| {
        c.stderr_has(swo, &format!("member pid {} left", bad.pid));
        c.stderr_has(swo, "member RX ring");
        let p = port_of(st, bad);
        c.that(
            p.is_some_and(|p| p.state == "down"),
            format!("its port is down: {p:?}"),
        );
    });
}

fn member_posting_no_rx_buffers_is_dropped_for_room(kind: &str) {
    hostile_push_member(kind, "rx-none", |c, st, bad, _| {
        let p = port_of(st, bad);
        c.that(
            p.is_some_and(|p| p.rx_push && p.drops.no_room >= 4000 && p.drops.bad_rx_chain == 0),
            format!("frames for it dropped for room: {p:?}"),
        );
    });
}

/// The sink's port in `status --json` (one reply per launcher on `spec`).
fn status_port(spec: &str, pid: u32) -> Result<serde_json::Value, String> {
    let o = Command::new(launcher())
        .args(["status", "--sharenet", spec, "--json"])
        .output()
        .map_err(|e| format!("run status: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| {
        let err = String::from_utf8_lossy(&o.stderr);
        format!("status --json is not JSON ({e}): {err}")
    })?;
    v.as_array()
        .into_iter()
        .flatten()
        .find(|r| r["pid"] == pid)
        .map(|r| r["ports"][0].clone())
        .ok_or_else(|| format!("no reply from pid {pid}: {v}"))
}

/// A push member's live `status`: idle, its whole RX ring is posted and
/// unfilled; fed faster than it reads (`--rx-delay-us`), the switch fills
/// what it posts and the fill shows it. Its copier's own index of that
/// ring never moves under push, so a fill read from there stayed at the
/// first figure for good.
#[test]
fn live_status_of_a_slow_push_member_shows_its_ring_filled() {
    let _g = serial();
    let dir = TestDir::new("push-status");
    let mut sw = Switch::start(&dir, "eventfd", 4, "90", &[]);
    let spec = sw.base_spec();
    let slow = ["--rx-delay-us", "500"];
    let mut sink = sink_member(&dir, "sink", &spec, &mac(1), ENDLESS, &slow);
    sw.wait_joined(1);
    std::thread::sleep(Duration::from_millis(600));
    let idle = status_port(&spec, sink.pid());
    let mut stream = member(
        &dir,
        "stream",
        &spec,
        &mac(2),
        &["--workload", "stream", "--count", ENDLESS, "--dst", &mac(1)],
    );
    sw.wait_joined(2);
    std::thread::sleep(Duration::from_millis(1500));
    let busy = status_port(&spec, sink.pid());
    stream.signal(Signal::SIGINT);
    sink.signal(Signal::SIGINT);
    let stream = stream.finish(EXIT_LIMIT);
    let sink = sink.finish(EXIT_LIMIT);
    let (swo, _) = sw.stop();
    let mut c = Checks::new("live status of a slow push member", &[&sink, &stream, &swo]);
    let fill = |p: &serde_json::Value| {
        let n = |k: &str| p[k].as_u64().unwrap_or(u64::MAX);
        (n("rx_ring_posted"), n("rx_ring_in_use"), n("rx_ring_size"))
    };
    match (idle, busy) {
        (Ok(idle), Ok(busy)) => {
            c.that(busy["rx_push"] == true, format!("the sink pushes: {busy}"));
            let (posted, in_use, size) = fill(&idle);
            c.that(
                size == 256 && posted == size && in_use == 0,
                format!("idle: the whole ring posted, none filled: {posted}/{in_use}/{size}"),
            );
            let (posted, in_use, size) = fill(&busy);
            c.that(
                size == 256 && posted < 64 && posted + in_use == size,
                format!("busy: the switch filled what it posted: {posted}/{in_use}/{size}"),
            );
        }
        (idle, busy) => {
            c.that(false, format!("status: idle {idle:?}, busy {busy:?}"));
        }
    }
    c.that(
        sink.u64(field!(packets_received)) > 0,
        "the sink received frames",
    );
    c.done();
}

crate::transport_tests! {
    eventfd: [
        hostile_rx_descriptors_are_dropped_and_counted,
        hostile_rx_avail_jump_ends_its_port,
        member_posting_no_rx_buffers_is_dropped_for_room,
    ],
    unix: [
        hostile_rx_descriptors_are_dropped_and_counted,
    ],
}
