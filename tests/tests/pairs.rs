//! Pairs of real launcher processes, over every transport.
//!
//! Each test body below is written once as `fn name(kind: &str)`; the
//! `transport_suite!` list at the bottom turns every one of them into
//! `fifo::name`, `unix::name` and `eventfd::name`. A body that is not in
//! the list is dead code, which clippy (`-D warnings`) refuses, so no test
//! can silently skip a transport.

mod common;

use common::{
    check_stream_intact, fresh_link, run_sink_and_stream, run_stream_pair, serial,
    stream_pair_intact, Checks, Outcome, TestDir, ENDLESS, EXIT_LIMIT,
};
use nix::sys::signal::Signal;
use std::time::Duration;

/// Packets in the standard stream runs.
const COUNT: u64 = 200_000;
/// How long a launcher has to notice that its peer died.
const NOTICE_DEATH: Duration = Duration::from_secs(5);
/// How long to wait for a launcher to report its connection.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);
const CONNECTED: &str = "connected to peer pid";

// ---------------------------------------------------------------- intact data

/// 200,000 frames of `size` bytes arrive intact and in order.
fn stream_intact(kind: &str, size: u64) {
    let _serial = serial();
    let dir = TestDir::new(&format!("stream_{size}"));
    stream_pair_intact(
        &format!("{kind}: stream {COUNT} x {size} B"),
        &dir,
        &dir.sharenet(kind, "link"),
        COUNT,
        size,
        &[],
        &[],
    );
}

/// Full-size frames (copy bandwidth dominates).
fn stream_1500_intact(kind: &str) {
    stream_intact(kind, 1500);
}

/// Small frames (per-packet overhead dominates).
fn stream_64_intact(kind: &str) {
    stream_intact(kind, 64);
}

/// 20,000 pings all come back, and their round trips are measured.
fn ping_echo_round_trips(kind: &str) {
    let (_serial, dir, spec) = fresh_link(kind, "ping_echo");
    let n = "20000";
    let mut echo = dir.workload("echo", &spec, "echo", n, &[]);
    let mut ping = dir.workload("ping", &spec, "ping", n, &["--size", "64"]);
    let ping = ping.finish(EXIT_LIMIT);
    let echo = echo.finish(EXIT_LIMIT);
    let mut c = Checks::new(format!("{kind}: ping/echo {n}"), &[&ping, &echo]);
    c.exit(&ping, 0)
        .exit(&echo, 0)
        .eq(&ping, field!(packets_sent), 20_000)
        .eq(&ping, field!(packets_received), 20_000)
        .eq(&ping, field!(lost), 0)
        .eq(&ping, field!(corrupted), 0)
        .received(&echo, 20_000)
        .gt(&ping, field!(rtt_p50_us), 0.0)
        .gt(&ping, field!(rtt_p99_us), 0.0);
    let (p50, p99) = (ping.num(field!(rtt_p50_us)), ping.num(field!(rtt_p99_us)));
    c.that(
        matches!((p50, p99), (Some(a), Some(b)) if a <= b),
        format!("ping: rtt_p50_us {p50:?} should be <= rtt_p99_us {p99:?}"),
    );
    c.done();
}

// ------------------------------------------------------------------ rendezvous

/// Start `first`, wait until it is waiting for its peer plus a 200 ms head
/// start, then start `second`; the pair forms and the stream is intact.
fn start_order(kind: &str, sink_first: bool) {
    let _serial = serial();
    let dir = TestDir::new(if sink_first {
        "sink_first"
    } else {
        "stream_first"
    });
    let spec = dir.sharenet(kind, "link");
    let n = COUNT.to_string();
    let sink_args = ["--workload", "sink", "--count", &n];
    let stream_args = ["--workload", "stream", "--count", &n, "--size", "1500"];
    let (first_role, first_args, second_role, second_args) = if sink_first {
        ("sink", &sink_args[..], "stream", &stream_args[..])
    } else {
        ("stream", &stream_args[..], "sink", &sink_args[..])
    };
    let mut first = dir.spawn(first_role, &spec, first_args);
    let waiting = first.wait_for_stderr("waiting for peer", CONNECT_LIMIT);
    std::thread::sleep(Duration::from_millis(200));
    let mut second = dir.spawn(second_role, &spec, second_args);
    let first = first.finish(EXIT_LIMIT);
    let second = second.finish(EXIT_LIMIT);
    let (sink, stream) = if sink_first {
        (&first, &second)
    } else {
        (&second, &first)
    };
    let mut c = Checks::new(
        format!("{kind}: {first_role} started 200 ms before {second_role}"),
        &[sink, stream],
    );
    c.that(
        waiting,
        format!("{first_role} should say it is waiting for its peer"),
    );
    check_stream_intact(&mut c, sink, stream, COUNT, 1500);
    c.done();
}

fn pair_forms_when_sink_starts_first(kind: &str) {
    start_order(kind, true);
}

fn pair_forms_when_stream_starts_first(kind: &str) {
    start_order(kind, false);
}

/// Two pairs at once on different paths in the same directory do not
/// cross: each sink gets exactly its own stream's packets.
fn two_pairs_in_one_directory_are_independent(kind: &str) {
    let _serial = serial();
    let dir = TestDir::new("two_pairs");
    let (a, b) = (dir.sharenet(kind, "a"), dir.sharenet(kind, "b"));
    let n = COUNT.to_string();
    let mut sink_a = dir.workload("sink_a", &a, "sink", &n, &[]);
    let mut sink_b = dir.workload("sink_b", &b, "sink", &n, &[]);
    let mut stream_a = dir.workload("stream_a", &a, "stream", &n, &["--size", "1500"]);
    let mut stream_b = dir.workload("stream_b", &b, "stream", &n, &["--size", "64"]);
    let outs = [
        sink_a.finish(EXIT_LIMIT),
        stream_a.finish(EXIT_LIMIT),
        sink_b.finish(EXIT_LIMIT),
        stream_b.finish(EXIT_LIMIT),
    ];
    let [sa, ta, sb, tb] = &outs;
    let mut c = Checks::new(format!("{kind}: two pairs side by side"), &[sa, ta, sb, tb]);
    check_stream_intact(&mut c, sa, ta, COUNT, 1500);
    check_stream_intact(&mut c, sb, tb, COUNT, 64);
    c.done();
}

/// 20,000 packets of 1500 B over `KIND:<dir>/link`, no extra flags,
/// checked intact (the rendezvous tests' pair).
fn plain_pair_intact(what: &str, dir: &TestDir, kind: &str) -> (Outcome, Outcome) {
    let spec = dir.sharenet(kind, "link");
    stream_pair_intact(what, dir, &spec, 20_000, 1500, &[], &[])
}

/// Leftovers of a crashed earlier run (FIFOs nobody reads, a socket file
/// nobody listens on) do not stop a new pair on the same path.
fn stale_rendezvous_leftovers_are_replaced(kind: &str) {
    let _serial = serial();
    let dir = TestDir::new("stale");
    let path = dir.path().join("link");
    if kind == "fifo" {
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
        nix::unistd::mkfifo(&path, mode).expect("mkfifo PATH");
        nix::unistd::mkfifo(&dir.path().join("link_"), mode).expect("mkfifo PATH_");
    } else {
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind stale socket"));
    }
    assert!(
        path.exists(),
        "precondition: stale {} left at {}",
        kind,
        path.display()
    );
    plain_pair_intact(
        &format!("{kind}: pair over stale rendezvous files"),
        &dir,
        kind,
    );
}

/// A finished pair leaves no rendezvous files behind (fifo: PATH and
/// PATH_; sockets: PATH), nor anything else.
fn rendezvous_files_removed_after_pair(kind: &str) {
    let _serial = serial();
    let dir = TestDir::new("cleanup");
    let (sink, stream) =
        plain_pair_intact(&format!("{kind}: pair before cleanup check"), &dir, kind);
    let path = dir.path().join("link");
    let side = dir.path().join("link_");
    let mut c = Checks::new(format!("{kind}: rendezvous cleanup"), &[&sink, &stream]);
    c.that(!path.exists(), format!("{} should be gone", path.display()));
    if kind == "fifo" {
        c.that(!side.exists(), format!("{} should be gone", side.display()));
    }
    let left = dir.leftovers();
    c.that(
        left.is_empty(),
        format!("nothing else should be left in the directory, found {left:?}"),
    );
    c.done();
}

// ------------------------------------------------------------ flow and modes

/// A 4-entry RX ring behind a sink that sleeps 20 us per packet: the
/// stream keeps finding the ring full (`rx_ring_full` counts it) and waits
/// instead of dropping.
fn slow_sink_with_tiny_rx_ring_loses_nothing(kind: &str) {
    let _serial = serial();
    let dir = TestDir::new("slow_sink");
    let (sink, stream) = run_stream_pair(
        &dir,
        &dir.sharenet(kind, "link"),
        3000,
        1500,
        &["--queue-size", "4", "--rx-delay-us", "20"],
        &[],
    );
    let mut c = Checks::new(
        format!("{kind}: slow sink, 4-entry RX ring"),
        &[&sink, &stream],
    );
    check_stream_intact(&mut c, &sink, &stream, 3000, 1500);
    c.gt(&sink, field!(rx_ring_full), 0.0);
    c.done();
}

/// Every notify × writes combination (both sides alike) moves 200,000
/// frames intact, each side runs the mode it asked for, `always` never
/// suppresses a notification and `event-idx` does suppress some.
///
/// How many notifications event-idx saves in these runs depends on how
/// often each side really sleeps, which depends on the machine's load (a
/// sleeping peer needs its kick): see
/// `event_idx_suppresses_notifications_tenfold` for the ratio.
fn mode_matrix_intact(kind: &str) {
    let _serial = serial();
    for writes in ["blocking", "nonblocking"] {
        for notify in ["always", "flags", "event-idx"] {
            let dir = TestDir::new(&format!("matrix_{notify}_{writes}"));
            let modes = ["--notify", notify, "--writes", writes];
            let what = format!("{kind}: --notify {notify} --writes {writes}");
            let (sink, stream) = stream_pair_intact(
                &what,
                &dir,
                &dir.sharenet(kind, "link"),
                COUNT,
                1500,
                &modes,
                &modes,
            );
            let mut c = Checks::new(what, &[&sink, &stream]);
            for o in [&sink, &stream] {
                c.that(
                    o.text(field!(notify)) == notify,
                    format!("{}: notify should be {notify:?}", o.role),
                )
                .that(
                    o.text(field!(writes)) == writes,
                    format!("{}: writes should be {writes:?}", o.role),
                )
                .that(
                    o.text(field!(notify_effective)) == notify,
                    format!(
                        "{}: notify_effective should be {notify:?} when both ask for it",
                        o.role
                    ),
                );
                if notify == "always" {
                    c.eq(o, field!(notifications_suppressed), 0);
                }
            }
            c.gt(&stream, field!(notifications_sent), 0.0);
            if notify == "event-idx" {
                c.gt(&stream, field!(notifications_suppressed), 0.0);
            }
            c.done();
        }
    }
}

/// With event-idx a launcher notifies only a peer that asked for it. Two
/// spinning launchers never ask, so against `always` (one notification
/// per publish) the stream's kicks, and the pair's total, drop at least
/// tenfold. Spinning makes the count independent of scheduling: with
/// `sleep`/`adaptive` a loaded machine puts the peer to sleep for real and
/// its kicks are then needed.
fn event_idx_suppresses_notifications_tenfold(kind: &str) {
    let _serial = serial();
    let mut runs = Vec::new();
    for notify in ["always", "event-idx"] {
        let dir = TestDir::new(&format!("suppress_{notify}"));
        let modes = ["--notify", notify, "--wait", "spin"];
        let (sink, stream) = stream_pair_intact(
            &format!("{kind}: --notify {notify} --wait spin"),
            &dir,
            &dir.sharenet(kind, "link"),
            COUNT,
            1500,
            &modes,
            &modes,
        );
        runs.push((stream, sink));
    }
    let [(always_stream, always_sink), (idx_stream, idx_sink)] = &runs[..] else {
        unreachable!()
    };
    let (a_stream, i_stream) = (
        always_stream.u64(field!(notifications_sent)),
        idx_stream.u64(field!(notifications_sent)),
    );
    let a_pair = a_stream + always_sink.u64(field!(notifications_sent));
    let i_pair = i_stream + idx_sink.u64(field!(notifications_sent));
    let mut c = Checks::new(
        format!(
            "{kind}: notifications for {COUNT} packets: always stream {a_stream} / pair {a_pair}, \
             event-idx stream {i_stream} / pair {i_pair}"
        ),
        &[always_stream, always_sink, idx_stream, idx_sink],
    );
    c.that(a_stream > 0, "with always the stream must notify at all")
        .that(
            i_stream * 10 <= a_stream,
            "event-idx: the stream's notifications_sent should be at most 1/10 of always's",
        )
        .that(
            i_pair * 10 <= a_pair,
            "event-idx: the pair's total notifications_sent should be at most 1/10 of always's",
        );
    c.done();
}

/// One side event-idx + spin, the other flags + sleep (both ways round):
/// they settle on flags and the stream is intact.
fn mixed_modes_interoperate(kind: &str) {
    let _serial = serial();
    let a: &[&str] = &["--notify", "event-idx", "--wait", "spin"];
    let b: &[&str] = &["--notify", "flags", "--wait", "sleep"];
    for (sink_args, stream_args) in [(a, b), (b, a)] {
        let dir = TestDir::new("mixed");
        let what = format!(
            "{kind}: sink {} / stream {}",
            sink_args.join(" "),
            stream_args.join(" ")
        );
        let (sink, stream) = stream_pair_intact(
            &what,
            &dir,
            &dir.sharenet(kind, "link"),
            COUNT,
            1500,
            sink_args,
            stream_args,
        );
        let mut c = Checks::new(what, &[&sink, &stream]);
        for o in [&sink, &stream] {
            c.that(
                o.text(field!(notify_effective)) == "flags",
                format!(
                    "{}: notify_effective should be \"flags\" (the lower mode)",
                    o.role
                ),
            );
        }
        c.done();
    }
}

/// A sink asked for fewer packets than the stream offers takes exactly its
/// `--count` and exits 0; the stream, left with packets nobody will
/// consume, exits 1 naming the sink.
fn sink_stops_at_its_count(kind: &str) {
    let (_serial, dir, spec) = fresh_link(kind, "sink_count");
    let (sink, stream) = run_sink_and_stream(&dir, &spec, "1000", &[], "200000", &[]);
    let mut c = Checks::new(
        format!("{kind}: sink --count 1000 against stream --count 200000"),
        &[&sink, &stream],
    );
    c.exit(&sink, 0)
        .eq(&sink, field!(packets_received), 1000)
        .eq(&sink, field!(bytes_received), 1000 * 1500)
        .eq(&sink, field!(lost), 0)
        .eq(&sink, field!(corrupted), 0)
        .exit(&stream, 1)
        .stderr_has(&stream, &format!("peer {} disconnected", sink.pid));
    c.done();
}

// ------------------------------------------------------------- failing peers

/// Start a pair with `a_args` / `b_args`, wait until both are connected and
/// running, SIGKILL `victim` ("a" or "b") after ~300 ms, and check that the
/// survivor exits 1 within 5 s naming the dead pid, with its stats written.
fn survivor_exits_when_peer_killed(
    kind: &str,
    label: &str,
    a: (&str, &[&str]),
    b: (&str, &[&str]),
    kill_a: bool,
) {
    let (_serial, dir, spec) = fresh_link(kind, label);
    let mut pa = dir.spawn(a.0, &spec, a.1);
    let mut pb = dir.spawn(b.0, &spec, b.1);
    let connected = pa.wait_for_stderr(CONNECTED, CONNECT_LIMIT)
        && pb.wait_for_stderr(CONNECTED, CONNECT_LIMIT);
    std::thread::sleep(Duration::from_millis(300));
    let (victim, survivor) = if kill_a {
        (&mut pa, &mut pb)
    } else {
        (&mut pb, &mut pa)
    };
    let victim_pid = victim.pid();
    victim.signal(Signal::SIGKILL);
    let survived = survivor.finish(NOTICE_DEATH + Duration::from_secs(5));
    let killed = victim.finish(Duration::from_secs(5));
    let mut c = Checks::new(
        format!("{kind}: SIGKILL {} mid-run", killed.role),
        &[&survived, &killed],
    );
    c.that(
        connected,
        "both sides should report the connection before the kill",
    )
    .that(
        killed.status.code().is_none(),
        format!(
            "{} should have died of SIGKILL, not exited on its own",
            killed.role
        ),
    )
    .exit(&survived, 1)
    .that(
        survived.waited <= NOTICE_DEATH,
        format!(
            "{} should exit within {NOTICE_DEATH:?} of the kill, took {:.3} s",
            survived.role,
            survived.waited.as_secs_f64()
        ),
    )
    .stderr_has(&survived, &format!("peer {victim_pid} disconnected"))
    .that(
        survived
            .stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .count()
            == 1,
        format!("{} should print exactly one `error: ` line", survived.role),
    )
    .that(
        survived
            .text(field!(result))
            .contains(&format!("peer {victim_pid} disconnected")),
        format!(
            "{}: stats result should hold the error naming pid {victim_pid}",
            survived.role
        ),
    );
    c.done();
}

/// The endless sink and stream whose link the kill tests break.
const ENDLESS_SINK: (&str, &[&str]) = ("sink", &["--workload", "sink", "--count", ENDLESS]);
const ENDLESS_STREAM: (&str, &[&str]) = ("stream", &["--workload", "stream", "--count", ENDLESS]);

fn stream_exits_when_sink_is_killed(kind: &str) {
    survivor_exits_when_peer_killed(kind, "kill_sink", ENDLESS_SINK, ENDLESS_STREAM, true);
}

fn sink_exits_when_stream_is_killed(kind: &str) {
    survivor_exits_when_peer_killed(kind, "kill_stream", ENDLESS_SINK, ENDLESS_STREAM, false);
}

fn sleeping_idle_side_exits_when_peer_is_killed(kind: &str) {
    let idle: &[&str] = &["--workload", "idle", "--wait", "sleep"];
    survivor_exits_when_peer_killed(kind, "idle_sleep", ("idle_a", idle), ("idle_b", idle), true);
}

fn spinning_idle_side_exits_when_peer_is_killed(kind: &str) {
    let idle: &[&str] = &["--workload", "idle", "--wait", "spin"];
    survivor_exits_when_peer_killed(kind, "idle_spin", ("idle_a", idle), ("idle_b", idle), true);
}

/// SIGSTOP the sink mid-stream: the stream cannot finish, must not hang,
/// and leaves by its own `--timeout 3` within ~3 + 2 s with "timed out" on
/// stderr and its stats written.
fn stream_times_out_when_sink_is_stopped(kind: &str, writes: &str, label: &str) {
    let (_serial, dir, spec) = fresh_link(kind, label);
    let mut sink = dir.sink(&spec, ENDLESS, &["--writes", writes]);
    let mut stream = dir.stream(&spec, ENDLESS, &["--writes", writes, "--timeout", "3"]);
    let connected = sink.wait_for_stderr(CONNECTED, CONNECT_LIMIT)
        && stream.wait_for_stderr(CONNECTED, CONNECT_LIMIT);
    std::thread::sleep(Duration::from_millis(300));
    sink.signal(Signal::SIGSTOP);
    let stream = stream.finish(Duration::from_secs(10));
    sink.signal(Signal::SIGCONT);
    sink.signal(Signal::SIGKILL);
    let sink = sink.finish(Duration::from_secs(5));
    let limit = Duration::from_millis(5500);
    let mut c = Checks::new(
        format!("{kind}: sink SIGSTOPped, --writes {writes}"),
        &[&stream, &sink],
    );
    c.that(
        connected,
        "both sides should report the connection before the stop",
    )
    .exit(&stream, 1)
    .that(
        stream.lifetime <= limit,
        format!(
            "stream should give up within {limit:?} of starting, took {:.3} s",
            stream.lifetime.as_secs_f64()
        ),
    )
    .that(
        stream.lifetime >= Duration::from_millis(2900),
        format!(
            "stream should keep trying until its 3 s timeout, left after {:.3} s",
            stream.lifetime.as_secs_f64()
        ),
    )
    .stderr_has(&stream, "timed out")
    .gt(&stream, field!(packets_sent), 0.0)
    .that(
        stream.text(field!(result)).contains("timed out"),
        "stream stats result should say it timed out",
    );
    c.done();
}

fn stream_times_out_when_sink_is_stopped_nonblocking(kind: &str) {
    stream_times_out_when_sink_is_stopped(kind, "nonblocking", "stopped_nb");
}

fn stream_times_out_when_sink_is_stopped_blocking(kind: &str) {
    stream_times_out_when_sink_is_stopped(kind, "blocking", "stopped_b");
}

// One suite, three transports: `transport_suite!` (in common) makes
/// `--share exchange`: the peer maps a memfd with only our TX ring and TX
/// buffers, never the guest memory itself; streams arrive intact between
/// two exchange sides and from an exchange side to a guest side. The
/// guest-side launcher's memory *is* in the other's maps, so the check can
/// tell the two apart.
fn share_exchange_offers_only_tx_and_streams_intact(kind: &str) {
    let _serial = serial();
    let dir = TestDir::new("share_exchange");
    let x: &[&str] = &["--share", "exchange"];
    stream_pair_intact(
        &format!("{kind}: stream, both --share exchange"),
        &dir,
        &dir.sharenet(kind, "both"),
        COUNT,
        1500,
        x,
        x,
    );
    stream_pair_intact(
        &format!("{kind}: stream, exchange to guest"),
        &dir,
        &dir.sharenet(kind, "mixed"),
        COUNT,
        1500,
        &["--share", "guest"],
        x,
    );
    let spec = dir.sharenet(kind, "idle");
    let (a_name, b_name) = (format!("sx-{kind}-a"), format!("sx-{kind}-b"));
    let mut a = dir.spawn(
        "a",
        &spec,
        &[
            "--workload",
            "idle",
            "--name",
            &a_name,
            "--share",
            "exchange",
        ],
    );
    let mut b = dir.spawn("b", &spec, &["--workload", "idle", "--name", &b_name]);
    assert!(
        a.wait_for_stderr(CONNECTED, CONNECT_LIMIT) && b.wait_for_stderr(CONNECTED, CONNECT_LIMIT),
        "{kind}: idle pair did not link: {} / {}",
        a.stderr(),
        b.stderr()
    );
    let maps = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let (in_b, in_a) = (maps(b.pid()), maps(a.pid()));
    let memfd = |name: &str| format!("/memfd:sharenet-{name} (deleted)");
    assert!(
        in_b.contains(&memfd(&format!("{a_name}-exchange"))),
        "{kind}: the peer does not map A's exchange area:\n{in_b}"
    );
    assert!(
        !in_b.contains(&memfd(&a_name)),
        "{kind}: the peer maps A's guest memory despite --share exchange:\n{in_b}"
    );
    assert!(
        in_a.contains(&memfd(&b_name)),
        "{kind}: A does not map B's guest memory (--share guest):\n{in_a}"
    );
    a.signal(Signal::SIGTERM);
    b.signal(Signal::SIGTERM);
    let _ = (a.finish(EXIT_LIMIT), b.finish(EXIT_LIMIT));
}

// `mod fifo`, `mod unix` and `mod eventfd` with one `#[test]` per body.
crate::transport_suite! {
    stream_1500_intact,
    stream_64_intact,
    ping_echo_round_trips,
    pair_forms_when_sink_starts_first,
    pair_forms_when_stream_starts_first,
    slow_sink_with_tiny_rx_ring_loses_nothing,
    two_pairs_in_one_directory_are_independent,
    stale_rendezvous_leftovers_are_replaced,
    mode_matrix_intact,
    event_idx_suppresses_notifications_tenfold,
    mixed_modes_interoperate,
    sink_stops_at_its_count,
    stream_exits_when_sink_is_killed,
    sink_exits_when_stream_is_killed,
    sleeping_idle_side_exits_when_peer_is_killed,
    spinning_idle_side_exits_when_peer_is_killed,
    stream_times_out_when_sink_is_stopped_nonblocking,
    stream_times_out_when_sink_is_stopped_blocking,
    rendezvous_files_removed_after_pair,
    share_exchange_offers_only_tx_and_streams_intact,
}
