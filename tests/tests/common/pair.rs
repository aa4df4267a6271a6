//! A stream and a sink on one link: run them and check they are intact.

use super::{serial, Checks, Outcome, TestDir, EXIT_LIMIT};
use std::sync::MutexGuard;

/// A `--count` no test reaches: the side runs until stopped.
pub const ENDLESS: &str = "2000000000";

/// What a test on one link starts with: the pair lock (two cores, two busy
/// processes), a fresh directory labelled `label`, and the `--sharenet`
/// `KIND:<dir>/link` both sides meet on.
pub fn fresh_link(kind: &str, label: &str) -> (MutexGuard<'static, ()>, TestDir, String) {
    let serial = serial();
    let dir = TestDir::new(label);
    let spec = dir.sharenet(kind, "link");
    (serial, dir, spec)
}

/// Start a sink (`--count sink_count`, then `sink_extra`) and a stream
/// (`--count stream_count`, then `stream_extra`) on `spec`, sink first, and
/// wait for both ([`EXIT_LIMIT`] each, sink first).
pub fn run_sink_and_stream(
    dir: &TestDir,
    spec: &str,
    sink_count: &str,
    sink_extra: &[&str],
    stream_count: &str,
    stream_extra: &[&str],
) -> (Outcome, Outcome) {
    let mut sink = dir.sink(spec, sink_count, sink_extra);
    let mut stream = dir.stream(spec, stream_count, stream_extra);
    let sink = sink.finish(EXIT_LIMIT);
    let stream = stream.finish(EXIT_LIMIT);
    (sink, stream)
}

/// The checks every successful stream/sink pair must pass: both exit 0,
/// every packet arrived once, intact and in order, nothing blamed on the
/// peer, and each side names the other's pid.
pub fn check_stream_intact(
    c: &mut Checks<'_>,
    sink: &Outcome,
    stream: &Outcome,
    count: u64,
    size: u64,
) {
    c.exit(sink, 0)
        .exit(stream, 0)
        .eq(sink, field!(packets_received), count)
        .eq(sink, field!(bytes_received), count * size)
        .eq(sink, field!(lost), 0)
        .eq(sink, field!(corrupted), 0)
        .eq(sink, field!(out_of_order), 0)
        .eq(sink, field!(peer_errors), 0)
        .eq(stream, field!(packets_sent), count)
        .eq(stream, field!(packets_consumed), count)
        .eq(stream, field!(peer_errors), 0)
        .eq(sink, field!(peer_pid), stream.pid)
        .eq(stream, field!(peer_pid), sink.pid);
    let (sink_result, stream_result) = (sink.text(field!(result)), stream.text(field!(result)));
    c.that(
        sink_result == "ok",
        format!("sink result should be \"ok\", got {sink_result:?}"),
    );
    c.that(
        stream_result == "ok",
        format!("stream result should be \"ok\", got {stream_result:?}"),
    );
}

/// Run a sink and a stream of `count` × `size` on `spec` with extra flags
/// for each side, started together (sink first), and wait for both.
pub fn run_stream_pair(
    dir: &TestDir,
    spec: &str,
    count: u64,
    size: u64,
    sink_args: &[&str],
    stream_args: &[&str],
) -> (Outcome, Outcome) {
    let (n, s) = (count.to_string(), size.to_string());
    let mut b = vec!["--size", &s];
    b.extend_from_slice(stream_args);
    run_sink_and_stream(dir, spec, &n, sink_args, &n, &b)
}

/// Run a stream pair and check it is intact.
pub fn stream_pair_intact(
    what: &str,
    dir: &TestDir,
    spec: &str,
    count: u64,
    size: u64,
    sink_args: &[&str],
    stream_args: &[&str],
) -> (Outcome, Outcome) {
    let (sink, stream) = run_stream_pair(dir, spec, count, size, sink_args, stream_args);
    let mut c = Checks::new(what, &[&sink, &stream]);
    check_stream_intact(&mut c, &sink, &stream, count, size);
    c.done();
    (sink, stream)
}
