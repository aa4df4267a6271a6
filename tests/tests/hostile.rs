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

/// The honest side a hostile peer meets: `idle --wait sleep`, ending
/// after `timeout` seconds.
fn honest_idle(dir: &TestDir, spec: &str, timeout: &str) -> Proc {
    let args = [
        "--workload",
        "idle",
        "--wait",
        "sleep",
        "--timeout",
        timeout,
    ];
    dir.spawn("honest", spec, &args)
}

/// Start the hostile peer with `args` (the `--sharenet` value, the mode,
/// the mode's own) and wait until it says it is ready (10 s at most).
fn ready_hostile(dir: &TestDir, args: &[&str]) -> Proc {
    let mut hostile = dir.spawn_program("hostile", hostile_peer(), args);
    assert!(
        hostile.wait_for_stderr("ready", Duration::from_secs(10)),
        "hostile peer {args:?} never got ready"
    );
    hostile
}

/// Run an honest idle launcher against the hostile peer in `mode`, with
/// the mode's own arguments `args` (rounds, a pid).
fn against_hostile(kind: &str, mode: &str, args: &[&str]) -> (Outcome, Outcome) {
    let dir = TestDir::new(&format!("hostile_{mode}"));
    let spec = dir.sharenet(kind, "link");
    let mut honest = honest_idle(&dir, &spec, "20");
    let hostile_args: Vec<&str> = [spec.as_str(), mode]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    let mut hostile = dir.spawn_program("hostile", hostile_peer(), &hostile_args);
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
    let (honest, hostile) = against_hostile(kind, "garbage", &["10"]);
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
    let (honest, hostile) = against_hostile(kind, "loop", &["10"]);
    let mut c = Checks::new(format!("{kind}: looping chains"), &[&honest, &hostile]);
    survived(&mut c, &honest, &hostile);
    // 10 rounds of a 64-entry ring, every chain a loop.
    c.eq(&honest, field!(peer_loop), 640)
        .eq(&honest, field!(peer_errors), 640);
    c.done();
}

fn avail_index_jump_disconnects_with_clear_error(kind: &str) {
    let _serial = serial();
    let (honest, hostile) = against_hostile(kind, "jump", &["10"]);
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
    let (_serial, dir, spec) = fresh_link(kind, "scribble");
    let mut sink = dir.sink(&spec, "100000000", &["--timeout", "15"]);
    let mut stream = dir.stream(&spec, "100000000", &["--timeout", "15"]);
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
    garbage_flood_costs_bounded_cpu,
    garbage_flood_does_not_stop_our_own_stream,
    hugetlb_memory_from_peer_is_refused_before_mapping,
    ring_misaligned_in_the_memory_fd_is_refused,
}

// ---- Shared file descriptions (issue 15, item 2) ----------------------
//
// An eventfd passed over SCM_RIGHTS is one open file description on both
// sides: the peer can clear its O_NONBLOCK, fill its counter, or read ours.
// None of that may block a thread of ours.

/// The peer fills the counter of the eventfd we kick it through to its
/// maximum and clears O_NONBLOCK on it: a `write(1)` there would block
/// forever. Our stream to it, with a kick per frame after the fill, must
/// still finish.
#[test]
fn eventfd_peer_that_fills_its_counter_and_clears_nonblock_cannot_block_our_kicks() {
    let _serial = serial();
    let _ = launcher(); // built before the hostile peer starts waiting
    let dir = TestDir::new("fill_eventfd");
    let spec = dir.sharenet("eventfd", "link");
    let mut hostile = ready_hostile(&dir, &[&spec, "fill-eventfd", "200"]);
    let mut honest = dir.workload(
        "honest",
        &spec,
        "stream",
        "3000",
        &["--notify", "always", "--wait", "sleep", "--timeout", "15"],
    );
    let honest = honest.finish(Duration::from_secs(25));
    let hostile = hostile.finish(Duration::from_secs(10));
    let mut c = Checks::new("eventfd: peer fills its counter", &[&honest, &hostile]);
    c.stderr_has(&hostile, "O_NONBLOCK cleared");
    c.exit(&honest, 0)
        .eq(&honest, field!(packets_sent), 3000)
        .eq(&honest, field!(packets_consumed), 3000);
    // At most a ring's worth of frames went out before the fill (the peer
    // consumes nothing until it has filled): every later batch was kicked
    // into the full counter.
    c.gt(&honest, field!(notifications_sent), 4.0);
    c.done();
}

/// The peer clears O_NONBLOCK on our eventfd and reads it back in a
/// thread of its own as fast as it can while kicking us, then stops: a
/// launcher that reads its counter after waking would lose that race at
/// some point and block forever in `read(2)`. An idle launcher must still
/// end at its `--timeout`.
#[test]
fn eventfd_peer_that_steals_our_counter_cannot_block_our_sleep() {
    let (_serial, dir, spec) = fresh_link("eventfd", "steal_eventfd");
    let _ = launcher();
    let mut hostile = ready_hostile(&dir, &[&spec, "steal-eventfd", "30"]);
    let mut honest = honest_idle(&dir, &spec, "5");
    let honest = honest.finish(Duration::from_secs(15));
    let hostile = hostile.finish(Duration::from_secs(20));
    let mut c = Checks::new("eventfd: peer steals our counter", &[&honest, &hostile]);
    c.stderr_has(&hostile, "read back by us");
    c.exit(&honest, 0);
    c.gt(&honest, field!(wakeups), 0.0);
    c.that(
        honest.lifetime < Duration::from_secs(9),
        format!("idle --timeout 5 took {:?}", honest.lifetime),
    );
    c.done();
}

// ---- CPU amplification and livelock (issue 15, item 4) ----------------

/// A peer with a 32768-entry queue whose every chain loops through the
/// whole table, republished as soon as we take it and kicked every
/// millisecond: unbounded, each batch is ~1e9 descriptor reads. Our CPU
/// must stay a small fraction of a core while it floods, and the launcher
/// must still end at its `--timeout` (its wait loop keeps turning).
fn garbage_flood_costs_bounded_cpu(kind: &str) {
    let (_serial, dir, spec) = fresh_link(kind, "flood_cpu");
    let _ = launcher();
    let mut honest = honest_idle(&dir, &spec, "6");
    // The flood outlasts the launcher's 6 s: it ends at its timeout, under fire.
    let mut hostile = dir.spawn_program("hostile", hostile_peer(), &[&spec, "flood", "90"]);
    assert!(
        honest.wait_for_stderr("connected", Duration::from_secs(15)),
        "pair never connected"
    );
    // Measure over 3 s of flood, after it got going.
    std::thread::sleep(Duration::from_millis(500));
    let (cpu0, t0) = (cpu_time(honest.pid()), std::time::Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (cpu1, t1) = (cpu_time(honest.pid()), std::time::Instant::now());
    let share = (cpu1 - cpu0).as_secs_f64() / (t1 - t0).as_secs_f64();
    let honest = honest.finish(Duration::from_secs(15));
    let hostile = hostile.finish(Duration::from_secs(15));
    let mut c = Checks::new(format!("{kind}: garbage flood"), &[&honest, &hostile]);
    c.stderr_has(&hostile, "flood over");
    // Unbounded, the copier walks garbage flat out (a whole core); bounded,
    // it spends well under 5% of one. 30% leaves room for a noisy machine.
    c.that(
        share < 0.30,
        format!("the flooded launcher used {:.0}% of a core", share * 100.0),
    );
    // It kept its schedule (ended at its --timeout, not seconds late) and
    // saw the flood for what it was.
    c.exit(&honest, 0);
    c.that(
        honest.lifetime < Duration::from_secs(9),
        format!("idle --timeout 6 took {:?}", honest.lifetime),
    );
    c.gt(&honest, field!(peer_loop), 1000.0)
        .gt(&honest, field!(peer_throttled), 0.0);
    c.done();
}

/// The same flood while our own guest streams to the flooding peer (which
/// consumes our TX ring like an honest device): our guest's traffic goes
/// on and finishes while the peer's garbage is throttled.
fn garbage_flood_does_not_stop_our_own_stream(kind: &str) {
    let (_serial, dir, spec) = fresh_link(kind, "flood_stream");
    let _ = launcher();
    let mut honest = dir.workload(
        "honest",
        &spec,
        "stream",
        "20000",
        &["--wait", "sleep", "--timeout", "20"],
    );
    let mut hostile = dir.spawn_program("hostile", hostile_peer(), &[&spec, "flood", "100"]);
    let honest = honest.finish(Duration::from_secs(30));
    hostile.signal(nix::sys::signal::Signal::SIGTERM);
    let hostile = hostile.finish(Duration::from_secs(10));
    let mut c = Checks::new(format!("{kind}: stream under flood"), &[&honest, &hostile]);
    c.exit(&honest, 0)
        .eq(&honest, field!(packets_sent), 20000)
        .eq(&honest, field!(packets_consumed), 20000)
        .gt(&honest, field!(peer_loop), 0.0)
        .gt(&honest, field!(peer_throttled), 0.0);
    c.done();
}

// ---- Rendezvous (issue 15, item 5) ------------------------------------

/// A FIFO peer names a pseudo-terminal's fd as its memory. We must refuse
/// it without opening it: opened without O_NOCTTY by a session leader (we
/// start the launcher under `setsid`), it becomes the launcher's
/// controlling terminal, which the peer then owns (it can hang it up).
#[test]
fn fifo_peer_naming_a_terminal_as_its_memory_is_refused_unopened() {
    let (_serial, dir, spec) = fresh_link("fifo", "fifo_tty");
    let _ = launcher();
    let mut hostile = ready_hostile(&dir, &[&spec, "fifo-tty"]);
    let launcher_path = launcher().display().to_string();
    let mut honest = dir.spawn_program(
        "honest",
        Path::new("/usr/bin/setsid"),
        &[
            &launcher_path,
            "--sharenet",
            &spec,
            "--workload",
            "idle",
            "--timeout",
            "5",
        ],
    );
    let honest = honest.finish(Duration::from_secs(15));
    let hostile = hostile.finish(Duration::from_secs(15));
    let mut c = Checks::new("fifo: peer names a terminal", &[&honest, &hostile]);
    c.exit(&honest, 1);
    c.stderr_has(&honest, "is a character device (a terminal?), not a memfd");
    c.stderr_has(&hostile, "nobody took our terminal");
    c.that(
        !hostile.stderr.contains("TOOK THE TTY"),
        "the launcher made the peer's terminal its controlling terminal",
    );
    c.done();
}

/// A FIFO peer plays the first side, fills the FIFO our handshake must go
/// into and never reads it. We must give up at `--timeout` with a clear
/// line, not retry forever.
#[test]
fn fifo_peer_that_never_reads_our_handshake_times_out() {
    let (_serial, dir, spec) = fresh_link("fifo", "fifo_full");
    let _ = launcher();
    let mut hostile = ready_hostile(&dir, &[&spec, "fifo-full", "150"]);
    let mut honest = dir.spawn("honest", &spec, &["--workload", "idle", "--timeout", "3"]);
    let honest = honest.finish(Duration::from_secs(12));
    let hostile = hostile.finish(Duration::from_secs(20));
    let mut c = Checks::new("fifo: peer never reads", &[&honest, &hostile]);
    c.exit(&honest, 1);
    c.stderr_has(&honest, "within 3.0 s");
    c.that(
        honest.lifetime < Duration::from_secs(8),
        format!("--timeout 3 took {:?}", honest.lifetime),
    );
    c.done();
}

/// Another user connects to a vhost-user `--socket` first (it is mode 0666
/// here because `--allow-uid` names some other uid): it must be refused
/// with one line, and QEMU (our uid) connecting after it must be served.
#[test]
fn vhost_user_socket_refuses_another_uid_and_still_serves_qemu() {
    use std::io::{Read, Write};
    let (_serial, dir, link) = fresh_link("unix", "vhost_peercred");
    let _ = launcher();
    let (socket, socket_s) = dir.file("vhost.sock");
    let args = vhost_user_args(
        &socket_s,
        &link,
        &["--allow-uid", "4242", "--timeout", "20"],
    );
    let mut backend = dir.spawn_raw("backend", &args);
    assert!(
        backend.wait_for_stderr("waiting for QEMU", Duration::from_secs(15)),
        "backend never listened"
    );
    // uid 65534 (nobody) connects first and asks for the features.
    let mut stranger = dir.spawn_program(
        "stranger",
        hostile_peer(),
        &["--connect-as", "65534", &socket_s],
    );
    let stranger = stranger.finish(Duration::from_secs(10));
    // Then "QEMU", as our own uid: GET_FEATURES must be answered.
    let mut qemu = std::os::unix::net::UnixStream::connect(&socket).expect("connect as QEMU");
    qemu.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut msg = [0u8; 12];
    msg[0..4].copy_from_slice(&1u32.to_le_bytes()); // VHOST_USER_GET_FEATURES
    msg[4..8].copy_from_slice(&1u32.to_le_bytes()); // version 1
    qemu.write_all(&msg).unwrap();
    let mut reply = [0u8; 20];
    let got = qemu.read_exact(&mut reply);
    drop(qemu);
    backend.signal(nix::sys::signal::Signal::SIGTERM);
    let backend = backend.finish(Duration::from_secs(15));
    let mut c = Checks::new("vhost-user: SO_PEERCRED", &[&backend, &stranger]);
    c.stderr_has(&backend, "refused a vhost-user connection on")
        .stderr_has(
            &backend,
            "uid 65534: not our uid 0; if QEMU runs as that user, pass --allow-uid 65534",
        );
    c.that(
        !stranger.stderr.contains("SERVED"),
        "the stranger was served as if it were QEMU",
    );
    c.that(got.is_ok(), format!("QEMU got no reply: {got:?}"));
    let request = u32::from_le_bytes([reply[0], reply[1], reply[2], reply[3]]);
    let flags = u32::from_le_bytes([reply[4], reply[5], reply[6], reply[7]]);
    c.that(
        request == 1 && flags & 0x4 != 0,
        format!("QEMU's GET_FEATURES reply: request {request}, flags {flags:#x}"),
    );
    c.done();
}

// ---- Memory fds (issue 15, item 3) -------------------------------------

/// The peer offers a sealed hugetlbfs memfd: the seals pass, but a hole it
/// punches there cannot be refilled once the free huge pages are gone, and
/// our next touch would be SIGBUS. Refused by filesystem before mapping.
fn hugetlb_memory_from_peer_is_refused_before_mapping(kind: &str) {
    let _serial = serial();
    let _ = launcher();
    let (honest, hostile) = against_hostile(kind, "hugetlb", &[]);
    if hostile.stderr.contains("memfd_create") {
        // No hugetlbfs on this machine: nothing to offer.
        eprintln!("skipped: {}", hostile.stderr.trim());
        return;
    }
    let mut c = Checks::new(format!("{kind}: hugetlb memory"), &[&honest, &hostile]);
    c.exit(&honest, 1);
    c.stderr_has(&honest, "it lives on hugetlbfs");
    c.stderr_has(&honest, "only a plain (tmpfs) memfd is shared");
    c.done();
}

// ---- Small ones (issue 15, item 6) -------------------------------------

/// The peer's ring addresses are aligned, but its one region starts at
/// file offset 1: what we would really access is misaligned. Refused at
/// the handshake, naming the offset.
fn ring_misaligned_in_the_memory_fd_is_refused(kind: &str) {
    let _serial = serial();
    let _ = launcher();
    let (honest, hostile) = against_hostile(kind, "misaligned", &[]);
    let mut c = Checks::new(format!("{kind}: misaligned ring"), &[&honest, &hostile]);
    c.exit(&honest, 1);
    c.stderr_has(&honest, "lands at offset 0x1 of the memory fd");
    c.done();
}

/// A FIFO peer names the honest launcher's own memfd (its pid, its fd
/// number) as "its" memory: mapped, our pages would be mapped twice and
/// its "TX ring" would be ours. Detected by inode and refused.
#[test]
fn fifo_peer_offering_our_own_memory_back_is_refused() {
    let (_serial, dir, spec) = fresh_link("fifo", "mirror");
    let _ = launcher();
    let mut honest = dir.spawn("honest", &spec, &["--workload", "idle", "--timeout", "10"]);
    assert!(
        honest.wait_for_stderr("waiting for peer", Duration::from_secs(15)),
        "honest launcher never waited"
    );
    let pid = honest.pid().to_string();
    let mut hostile = dir.spawn_program("hostile", hostile_peer(), &[&spec, "mirror", &pid]);
    let honest = honest.finish(Duration::from_secs(20));
    let hostile = hostile.finish(Duration::from_secs(20));
    let mut c = Checks::new("fifo: our own memory offered back", &[&honest, &hostile]);
    c.exit(&honest, 1);
    c.stderr_has(&honest, "it is our own memory");
    c.done();
}

/// Something that is not a socket at `--socket` (a user's file): refused,
/// and left exactly as it was. A stale socket there is replaced.
#[test]
fn vhost_user_socket_path_replaces_only_a_socket() {
    let (_serial, dir, link) = fresh_link("unix", "vhost_socket_path");
    let _ = launcher();
    let (socket, socket_s) = dir.file("vhost.sock");
    std::fs::write(&socket, b"precious").unwrap();
    let args = vhost_user_args(&socket_s, &link, &["--timeout", "20"]);
    let mut refused = dir.spawn_raw("refused", &args);
    let refused = refused.finish(Duration::from_secs(15));
    let kept = std::fs::read(&socket).unwrap_or_default();
    // A stale socket (nobody listening) is taken over.
    std::fs::remove_file(&socket).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let mut backend = dir.spawn_raw("backend", &args);
    let up = backend.wait_for_stderr("waiting for QEMU", Duration::from_secs(15));
    let connects = std::os::unix::net::UnixStream::connect(&socket).is_ok();
    backend.signal(nix::sys::signal::Signal::SIGTERM);
    let backend = backend.finish(Duration::from_secs(15));
    let mut c = Checks::new("vhost-user: --socket path", &[&refused, &backend]);
    c.exit(&refused, 2)
        .stderr_has(&refused, "something that is not a socket is already there");
    c.that(kept == b"precious", "the file at --socket was changed");
    c.that(
        up && connects,
        "a stale socket at --socket was not replaced",
    );
    let leftovers: Vec<_> = dir
        .leftovers()
        .into_iter()
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    c.that(
        leftovers.is_empty(),
        format!("temporary sockets left: {leftovers:?}"),
    );
    c.done();
}
