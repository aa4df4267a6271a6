//! Everyday use: signals, end of stream, counts that do not match, and log
//! lines a user can tell apart — over every transport, with real pairs.

mod common;

use common::{serial, Checks, TestDir, EXIT_LIMIT};
use nix::sys::signal::Signal;
use std::time::Duration;

/// A count no pair finishes within a test.
const ENDLESS: &str = "2000000000";
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
    let _serial = serial();
    let dir = TestDir::new("interrupted");
    let spec = dir.sharenet(kind, "link");
    let mut sink = dir.spawn("sink", &spec, &["--workload", "sink", "--count", ENDLESS]);
    let mut stream = dir.spawn(
        "stream",
        &spec,
        &[
            "--workload",
            "stream",
            "--count",
            ENDLESS,
            "--name",
            "streamer",
        ],
    );
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
    let _serial = serial();
    let dir = TestDir::new("waiting");
    let spec = dir.sharenet(kind, "link");
    let mut lone = dir.spawn("lone", &spec, &["--workload", "sink", "--count", "10"]);
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
    let _serial = serial();
    let dir = TestDir::new("mismatch");
    let spec = dir.sharenet(kind, "link");
    let mut sink = dir.spawn(
        "sink",
        &spec,
        &["--workload", "sink", "--count", "2000", "--name", "left"],
    );
    let mut stream = dir.spawn(
        "stream",
        &spec,
        &["--workload", "stream", "--count", "1000"],
    );
    let sink = sink.finish(EXIT_LIMIT);
    let stream = stream.finish(EXIT_LIMIT);
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

transport_suite!(
    sigint_stops_stream_cleanly_and_sink_learns_what_was_sent,
    sigterm_stops_stream_cleanly,
    sigterm_while_waiting_removes_rendezvous_files,
    sink_names_count_mismatch_from_end_of_stream,
);
