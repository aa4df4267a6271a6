//! A hostile or broken peer must never crash a launcher, make it touch
//! memory outside its mappings, or hang it: the honest side survives,
//! counts what the peer did wrong by class, and leaves with one clear line.
//!
//! The hostile peer is `hostile-peer` (tests/src/bin): it completes a real
//! handshake over the real transport, then writes garbage into its TX ring,
//! loops chains or jumps its avail index. The scribbler opens a live
//! launcher's memfd through /proc and writes random bytes over it.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

fn hostile_peer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hostile-peer"))
}

fn scribbler() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_scribbler"))
}

/// Run an honest idle launcher against the hostile peer in `mode`.
fn against_hostile(kind: &str, mode: &str) -> (Outcome, Outcome) {
    let dir = TestDir::new(&format!("hostile_{mode}"));
    let spec = dir.sharenet(kind, "link");
    let mut honest = dir.spawn(
        "honest",
        &spec,
        &["--workload", "idle", "--wait", "sleep", "--timeout", "20"],
    );
    let mut hostile = dir.spawn_program("hostile", hostile_peer(), &[&spec, mode, "10"]);
    let honest = honest.finish(Duration::from_secs(25));
    let hostile = hostile.finish(Duration::from_secs(25));
    (honest, hostile)
}

/// The honest side exited 1 (not by a signal or a panic) with exactly one
/// error line naming the hostile peer.
fn survived(c: &mut Checks<'_>, honest: &Outcome, hostile: &Outcome) {
    c.exit(honest, 1);
    let err = honest
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .count();
    c.that(err == 1, format!("want exactly one error line, got {err}"));
    c.that(!honest.stderr.contains("panicked"), "honest side panicked");
    c.stderr_has(honest, &format!("peer {}", hostile.pid));
}

fn garbage_descriptors_are_dropped_and_counted_by_class(kind: &str) {
    let _serial = serial();
    let (honest, hostile) = against_hostile(kind, "garbage");
    let mut c = Checks::new(format!("{kind}: garbage descriptors"), &[&honest, &hostile]);
    survived(&mut c, &honest, &hostile);
    // The policy for bad chains: drop, count, carry on until the peer leaves.
    c.stderr_has(&honest, "disconnected");
    c.gt(&honest, field!(peer_errors), 100.0)
        .gt(&honest, field!(peer_bad_index), 0.0)
        .gt(&honest, field!(peer_out_of_bounds), 0.0)
        .gt(&honest, field!(peer_wrong_direction), 0.0)
        .gt(&honest, field!(peer_indirect), 0.0)
        .eq(&honest, field!(packets_received), 0);
    let classes: u64 = [
        field!(peer_bad_index),
        field!(peer_out_of_bounds),
        field!(peer_loop),
        field!(peer_wrong_direction),
        field!(peer_indirect),
        field!(peer_bad_length),
    ]
    .into_iter()
    .map(|k| honest.u64(k))
    .sum();
    c.that(
        classes == honest.u64(field!(peer_errors)),
        format!(
            "per-class counters add to {classes}, peer_errors is {}",
            honest.u64(field!(peer_errors))
        ),
    );
    c.done();
}

fn looping_chains_are_dropped_and_counted(kind: &str) {
    let _serial = serial();
    let (honest, hostile) = against_hostile(kind, "loop");
    let mut c = Checks::new(format!("{kind}: looping chains"), &[&honest, &hostile]);
    survived(&mut c, &honest, &hostile);
    // 10 rounds of a 64-entry ring, every chain a loop.
    c.eq(&honest, field!(peer_loop), 640)
        .eq(&honest, field!(peer_errors), 640);
    c.done();
}

fn avail_index_jump_disconnects_with_clear_error(kind: &str) {
    let _serial = serial();
    let (honest, hostile) = against_hostile(kind, "jump");
    let mut c = Checks::new(format!("{kind}: avail index jump"), &[&honest, &hostile]);
    survived(&mut c, &honest, &hostile);
    c.stderr_has(&honest, "avail index jumped from 0 to 199 (queue size 64)");
    c.that(
        honest.text(field!(result)).contains("avail index jumped"),
        "stats result names the jump",
    );
    c.done();
}

/// Random bytes written over a streaming sink's memory from outside: the
/// sink may lose its link (its rings are garbage), but it never crashes:
/// it exits 0 or 1 with one clear line, and so does its peer.
fn scribbled_memory_does_not_crash_the_launcher(kind: &str) {
    let _serial = serial();
    let dir = TestDir::new("scribble");
    let spec = dir.sharenet(kind, "link");
    let mut sink = dir.spawn(
        "sink",
        &spec,
        &[
            "--workload",
            "sink",
            "--count",
            "100000000",
            "--timeout",
            "15",
        ],
    );
    let mut stream = dir.spawn(
        "stream",
        &spec,
        &[
            "--workload",
            "stream",
            "--count",
            "100000000",
            "--timeout",
            "15",
        ],
    );
    assert!(
        sink.wait_for_stderr("connected", Duration::from_secs(10)),
        "pair never connected"
    );
    let pid = sink.pid().to_string();
    let mut scrib = dir.spawn_program("scribbler", scribbler(), &[&pid, "1500"]);
    let scrib = scrib.finish(Duration::from_secs(10));
    let sink = sink.finish(Duration::from_secs(20));
    // The stream is either told its peer left, or is still streaming to a
    // sink that scribbles may not have stopped: end it either way.
    stream.signal(nix::sys::signal::Signal::SIGTERM);
    let stream = stream.finish(Duration::from_secs(10));
    let mut c = Checks::new(
        format!("{kind}: scribbled memory"),
        &[&sink, &stream, &scrib],
    );
    c.exit(&scrib, 0);
    c.that(
        matches!(sink.code, Some(0) | Some(1)),
        format!(
            "sink must exit 0 or 1, not by a signal or panic: {:?}",
            sink.code
        ),
    );
    c.that(!sink.stderr.contains("panicked"), "sink panicked");
    c.that(!stream.stderr.contains("panicked"), "stream panicked");
    c.done();
}

crate::transport_suite! {
    garbage_descriptors_are_dropped_and_counted_by_class,
    looping_chains_are_dropped_and_counted,
    avail_index_jump_disconnects_with_clear_error,
    scribbled_memory_does_not_crash_the_launcher,
}
