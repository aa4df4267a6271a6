//! Everyday use: signals, end of stream, counts that do not match, and log
//! lines a user can tell apart — over every transport, with real pairs.

mod common;

use common::{
    fresh_link, run_sink_and_stream, serial, vhost_user_args, Checks, TestDir, ENDLESS, EXIT_LIMIT,
};
use nix::sys::signal::Signal;
use std::time::Duration;

const CONNECT_LIMIT: Duration = Duration::from_secs(10);
const CONNECTED: &str = "connected to peer pid";

/// Ctrl-C on a streaming launcher: it stops cleanly (exit 130), writes its
/// stats with an "interrupted" result, prints its summary, and announces
/// how many it sent, so the sink says "received X of N; the peer finished
/// after X" with `peer_sent` and `lost` = 0 (nothing sent was lost).
fn sigint_stops_stream_cleanly_and_sink_learns_what_was_sent(kind: &str) {
    interrupted_stream(kind, Signal::SIGINT, 130, "SIGINT");
}

/// The same for SIGTERM (exit 143).
fn sigterm_stops_stream_cleanly(kind: &str) {
    interrupted_stream(kind, Signal::SIGTERM, 143, "SIGTERM");
}

fn interrupted_stream(kind: &str, sig: Signal, code: i32, name: &str) {
    let (_serial, dir, spec) = fresh_link(kind, "interrupted");
    let mut sink = dir.sink(&spec, ENDLESS, &[]);
    let mut stream = dir.stream(&spec, ENDLESS, &["--name", "streamer"]);
    let connected = stream.wait_for_stderr(CONNECTED, CONNECT_LIMIT);
    std::thread::sleep(Duration::from_millis(300));
    stream.signal(sig);
    let stream = stream.finish(Duration::from_secs(5));
    let sink = sink.finish(EXIT_LIMIT);
    let sent = stream.u64(field!(packets_sent));
    let mut c = Checks::new(
        format!("{kind}: {name} to a streaming launcher"),
        &[&sink, &stream],
    );
    c.that(connected, "the pair connected")
        .that(sent > 0, "the stream sent something before the signal")
        .exit(&stream, code)
        .that(
            stream.text(field!(result)) == format!("interrupted by {name}"),
            format!("stream result names {name}"),
        )
        .stderr_has(&stream, &format!("[streamer] interrupted by {name}"))
        .stderr_has(&stream, "[streamer] stream over")
        .exit(&sink, 1)
        .eq(&sink, field!(peer_sent), Some(sent))
        .eq(&sink, field!(packets_received), sent)
        .eq(&sink, field!(lost), 0)
        .eq(&sink, field!(corrupted), 0)
        .stderr_has(
            &sink,
            &format!("received {sent} of {ENDLESS}; the peer finished after {sent}"),
        );
    c.that(dir.leftovers().is_empty(), "no rendezvous files left");
    c.done();
}

/// A launcher interrupted while it waits for a peer removes the rendezvous
/// files it created and exits 143 with its stats written.
fn sigterm_while_waiting_removes_rendezvous_files(kind: &str) {
    let (_serial, dir, spec) = fresh_link(kind, "waiting");
    let mut lone = dir.workload("lone", &spec, "sink", "10", &[]);
    let waiting = lone.wait_for_stderr("waiting for peer", CONNECT_LIMIT);
    std::thread::sleep(Duration::from_millis(200));
    let present = !dir.leftovers().is_empty();
    lone.signal(Signal::SIGTERM);
    let lone = lone.finish(Duration::from_secs(5));
    let mut c = Checks::new(
        format!("{kind}: SIGTERM while waiting for a peer"),
        &[&lone],
    );
    c.that(waiting, "it said it was waiting")
        .that(present, "the rendezvous path existed while waiting")
        .exit(&lone, 143)
        .that(
            lone.text(field!(result)) == "interrupted by SIGTERM",
            "result says interrupted",
        )
        .that(
            dir.leftovers().is_empty(),
            format!("rendezvous files removed, left: {:?}", dir.leftovers()),
        );
    c.done();
}

/// sink --count 2000 against stream --count 1000: the sink says what it got
/// and that the peer finished, at once, not "peer disconnected" after a wait.
fn sink_names_count_mismatch_from_end_of_stream(kind: &str) {
    let (_serial, dir, spec) = fresh_link(kind, "mismatch");
    let (sink, stream) = run_sink_and_stream(&dir, &spec, "2000", &["--name", "left"], "1000", &[]);
    let mut c = Checks::new(
        format!("{kind}: sink --count 2000 against stream --count 1000"),
        &[&sink, &stream],
    );
    c.exit(&stream, 0)
        .exit(&sink, 1)
        .stderr_has(
            &sink,
            "error: [left] received 1000 of 2000; the peer finished after 1000",
        )
        .eq(&sink, field!(packets_received), 1000)
        .eq(&sink, field!(peer_sent), Some(1000))
        .eq(&sink, field!(expected), 2000)
        .eq(&sink, field!(missing), 1000)
        .eq(&sink, field!(not_sent), 1000)
        .eq(&sink, field!(lost), 0);
    c.done();
}

/// A third launcher on a path where a pair is linked is told the pair's
/// pids when nobody comes, not just that it timed out.
fn third_launcher_is_told_the_path_is_in_use(kind: &str) {
    let (_serial, dir, spec) = fresh_link(kind, "busy");
    let mut sink = dir.sink(&spec, ENDLESS, &[]);
    let mut stream = dir.stream(&spec, ENDLESS, &[]);
    let connected = stream.wait_for_stderr(CONNECTED, CONNECT_LIMIT)
        && sink.wait_for_stderr(CONNECTED, CONNECT_LIMIT);
    std::thread::sleep(Duration::from_millis(200));
    let mut third = dir.spawn("third", &spec, &["--workload", "sink", "--timeout", "2"]);
    let third = third.finish(Duration::from_secs(10));
    let (a, b) = (sink.pid().min(stream.pid()), sink.pid().max(stream.pid()));
    sink.signal(Signal::SIGINT);
    stream.signal(Signal::SIGINT);
    let sink = sink.finish(Duration::from_secs(5));
    let stream = stream.finish(Duration::from_secs(5));
    let mut c = Checks::new(
        format!("{kind}: a third launcher on a linked pair's path"),
        &[&third, &sink, &stream],
    );
    c.that(connected, "the pair connected")
        .exit(&third, 1)
        .stderr_has(&third, "no peer arrived at")
        .stderr_has(&third, &format!("is in use by the pair {a}/{b}"))
        .exit(&stream, 130);
    c.that(
        dir.leftovers().is_empty(),
        format!(
            "the pair's mark is gone after it left: {:?}",
            dir.leftovers()
        ),
    );
    c.done();
}

/// A launcher of the wrong kind is refused at once, and the launcher
/// waiting on the path says so too (FIFO rendezvous vs socket rendezvous).
#[test]
fn waiting_side_is_told_of_a_peer_of_the_wrong_kind() {
    let _serial = serial();
    for (waits, comes) in [("fifo", "unix"), ("eventfd", "fifo")] {
        let dir = TestDir::new("wrong_kind");
        let waiting_spec = dir.sharenet(waits, "link");
        let mut waiting = dir.spawn(
            "waiting",
            &waiting_spec,
            &["--workload", "sink", "--timeout", "3", "--name", "waiter"],
        );
        let ready = waiting.wait_for_stderr("waiting for peer", CONNECT_LIMIT);
        std::thread::sleep(Duration::from_millis(200));
        let mut wrong = dir.spawn(
            "wrong",
            &dir.sharenet(comes, "link"),
            &["--workload", "stream"],
        );
        let wrong = wrong.finish(Duration::from_secs(10));
        let told = waiting.wait_for_stderr("was refused", Duration::from_secs(3));
        let waiting = waiting.finish(Duration::from_secs(10));
        let mut c = Checks::new(
            format!("{comes}: launcher arriving at a {waits}: rendezvous"),
            &[&waiting, &wrong],
        );
        c.that(ready, "the first side waited")
            .exit(&wrong, 1)
            .stderr_has(&wrong, "refusing rendezvous path")
            .that(told, "the waiting side said so while waiting")
            .stderr_has(
                &waiting,
                &format!("[waiter] a `{comes}:` launcher (pid {}) tried", wrong.pid),
            )
            .exit(&waiting, 1);
        c.done();
    }
}

/// `idle` ends successfully when its duration (`--timeout`) is up, and its
/// peer, seeing it leave cleanly, ends successfully too.
fn idle_ends_ok_when_its_duration_is_up(kind: &str) {
    let (_serial, dir, spec) = fresh_link(kind, "idle_duration");
    let mut a = dir.spawn("idle_a", &spec, &["--workload", "idle", "--timeout", "1"]);
    let mut b = dir.spawn("idle_b", &spec, &["--workload", "idle", "--timeout", "20"]);
    let a = a.finish(Duration::from_secs(10));
    let b = b.finish(Duration::from_secs(10));
    let mut c = Checks::new(format!("{kind}: idle --timeout 1 against idle"), &[&a, &b]);
    c.exit(&a, 0)
        .that(a.text(field!(result)) == "ok", "idle_a result ok")
        .exit(&b, 0)
        .that(b.text(field!(result)) == "ok", "idle_b result ok")
        .eq(&b, field!(peer_sent), Some(0));
    c.done();
}

/// An `idle` side whose peer finishes and leaves cleanly ends with exit 0
/// at once (a peer that is killed still ends it with exit 1: pairs.rs).
fn idle_ends_ok_when_peer_leaves_cleanly(kind: &str) {
    let (_serial, dir, spec) = fresh_link(kind, "idle_peer_left");
    let mut idle = dir.spawn("idle", &spec, &["--workload", "idle", "--timeout", "20"]);
    let mut stream = dir.stream(&spec, "100", &[]);
    let stream = stream.finish(Duration::from_secs(10));
    let idle = idle.finish(Duration::from_secs(10));
    let mut c = Checks::new(
        format!("{kind}: idle against a stream of 100"),
        &[&idle, &stream],
    );
    c.exit(&stream, 0)
        .exit(&idle, 0)
        .that(
            idle.lifetime < Duration::from_secs(10),
            "idle ended when its peer left, not at its timeout",
        )
        .eq(&idle, field!(peer_sent), Some(100));
    c.done();
}

/// A `vhost-user` backend stopped by a signal before QEMU connects, and
/// again with "QEMU" (this test, having asked for the features) connected:
/// exit 128 + the signal, stats written with `result` = `interrupted by
/// SIGNAL`, and nothing left behind — not the `--socket`, the control
/// socket, the kick stamp — with the capture file closed and kept.
#[test]
fn vhost_user_backend_stops_cleanly_on_signals() {
    use std::io::{Read, Write};
    let _serial = serial();
    for (kind, sig, code, connect) in [
        ("unix", Signal::SIGTERM, 143, false),
        ("eventfd", Signal::SIGINT, 130, false),
        ("fifo", Signal::SIGHUP, 129, false),
        ("unix", Signal::SIGTERM, 143, true),
    ] {
        let dir = TestDir::new("vhost_signal");
        let (socket, socket_s) = dir.file("vhost.sock");
        let stats = dir.path().join("backend.json").display().to_string();
        let capture = dir.path().join("vm.pcapng").display().to_string();
        let link = dir.sharenet(kind, "link");
        let extra: &[&str] = &[
            "--stats-json",
            &stats,
            "--capture",
            &capture,
            "--timeout",
            "30",
        ];
        let args = vhost_user_args(&socket_s, &link, extra);
        let mut backend = dir.spawn_raw_with_stats("backend", &args);
        let listening = backend.wait_for_stderr("waiting for QEMU", CONNECT_LIMIT);
        let mut qemu = None;
        let mut answered = true;
        if connect {
            // "QEMU" connects and asks for the features (answered: the
            // backend is serving the connection when the signal comes).
            let mut s = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut msg = [0u8; 12];
            msg[0..4].copy_from_slice(&1u32.to_le_bytes()); // GET_FEATURES
            msg[4..8].copy_from_slice(&1u32.to_le_bytes()); // version 1
            s.write_all(&msg).unwrap();
            let mut reply = [0u8; 20];
            answered = s.read_exact(&mut reply).is_ok();
            qemu = Some(s);
        }
        let present = dir.leftovers();
        backend.signal(sig);
        let backend = backend.finish(Duration::from_secs(10));
        drop(qemu);
        let name = format!("{sig:?}");
        let mut c = Checks::new(
            format!("vhost-user over {kind}, {name}, QEMU connected: {connect}"),
            &[&backend],
        );
        c.that(listening, "it listened for QEMU")
            .that(answered, "it answered GET_FEATURES")
            .that(
                present.iter().any(|f| f.starts_with("link.status.")),
                format!("its control socket existed before: {present:?}"),
            )
            .exit(&backend, code)
            .that(
                backend.text(field!(result)) == format!("interrupted by {name}"),
                "result says interrupted",
            )
            .stderr_has(&backend, &format!("interrupted by {name}"))
            .that(
                dir.leftovers() == ["vm.pcapng"],
                format!("only the capture is left: {:?}", dir.leftovers()),
            )
            .that(
                std::fs::metadata(&capture).is_ok_and(|m| m.len() > 0),
                "the capture file was written",
            );
        c.done();
    }
}

transport_suite!(
    idle_ends_ok_when_its_duration_is_up,
    idle_ends_ok_when_peer_leaves_cleanly,
    third_launcher_is_told_the_path_is_in_use,
    sigint_stops_stream_cleanly_and_sink_learns_what_was_sent,
    sigterm_stops_stream_cleanly,
    sigterm_while_waiting_removes_rendezvous_files,
    sink_names_count_mismatch_from_end_of_stream,
);
