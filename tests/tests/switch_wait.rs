//! How the switch waits (issue 17's CPU target): a frame held for a full
//! destination is not work.
//!
//! A destination with no room (push: no RX buffer posted; pull: the
//! port's ring full) gets `--hold-ms` to make room while the source's
//! frame waits at the head of its ring. Until session 6 the switch's
//! re-check before sleeping counted that waiting frame as work, so a
//! switch with `--wait sleep` never slept during a hold: it turned, idle,
//! at full speed until the destination's member posted a buffer or the
//! hold ended — on a two-CPU machine taking the CPU that very member
//! needed to make room. Here a sink that reads one frame per ten seconds
//! fills its ring, a stream's next frame is held for three seconds, and
//! the switch must sleep through that hold: its CPU over 1.2 s of it
//! stays a small fraction of the time (the old binary: about all of it,
//! or whatever share of a CPU the machine gave it).

mod common;

use common::{cpu_time, mac, serial, Checks, Switch, TestDir};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

/// A `--wait sleep` switch on `dir/sw` holding frames 3 s for room.
fn start_sleeping_switch(dir: &TestDir, kind: &str, push: &str) -> Switch {
    let hold = ["--wait", "sleep", "--hold-ms", "3000", "--push", push];
    Switch::start(dir, kind, 4, "60", &hold)
}

/// The window of the hold the switch's CPU is measured over.
const WINDOW: Duration = Duration::from_millis(1200);

/// A sink that stopped reading fills its ring; the stream's next frame
/// for it is held. The switch sleeps through the hold (CPU under a fifth
/// of the window, where a spinning switch takes all the CPU it is given),
/// and the frame is still delivered or dropped and counted afterwards.
fn switch_sleeps_while_a_frame_is_held(kind: &str, push: &str) {
    let _g = serial();
    let dir = TestDir::new(&format!("switchhold-{kind}-{push}"));
    let mut sw = start_sleeping_switch(&dir, kind, push);
    let a = ["--name", "slow", "--mac", &mac(5), "--workload", "sink"];
    let mut slow = dir.spawn(
        "slow",
        &sw.spec(0),
        &[
            &a[..],
            &[
                "--count",
                "0",
                "--rx-delay-us",
                "10000000",
                "--timeout",
                "40",
            ],
        ]
        .concat(),
    );
    sw.wait_joined(1);
    std::thread::sleep(Duration::from_millis(300));
    // More frames than the sink's ring (256) and the port's hold can
    // take: the stream's frame after the ring is full waits 3 s.
    let mut stream = dir.spawn(
        "stream",
        &sw.spec(1),
        &[
            "--name",
            "stream",
            "--mac",
            &mac(0x55),
            "--workload",
            "stream",
            "--count",
            "600",
            "--dst",
            &mac(5),
            "--timeout",
            "40",
        ],
    );
    sw.wait_joined(2);
    // The ring fills within milliseconds of the stream's start.
    std::thread::sleep(Duration::from_millis(700));
    let before = cpu_time(sw.proc.pid());
    let t0 = Instant::now();
    std::thread::sleep(WINDOW);
    let spent = cpu_time(sw.proc.pid()).saturating_sub(before);
    let window = t0.elapsed();
    let stream = stream.finish(Duration::from_secs(45));
    slow.signal(Signal::SIGINT);
    let slow = slow.finish(Duration::from_secs(10));
    let (swo, st) = sw.stop();
    let mut c = Checks::new(
        format!("switch sleeps through a hold over {kind}, push {push}"),
        &[&slow, &stream, &swo],
    );
    c.exit(&swo, 0)
        .exit(&stream, 0)
        .eq(&slow, field!(corrupted), 0);
    c.that(
        spent < window / 5,
        format!("the switch used {spent:?} of CPU over {window:?} of a hold: it should sleep"),
    );
    c.that(st.sleeps > 0, format!("the switch never slept: {st:?}"));
    let to_slow = st.ports.iter().find(|p| p.pid == slow.pid);
    match to_slow {
        Some(p) => {
            c.that(
                p.drops.no_room > 0,
                format!("after the hold, frames for the full port drop: {p:?}"),
            );
            c.that(
                p.tx_packets + p.drops.no_room >= 600,
                format!(
                    "every frame for it (and the stream's hello) is delivered or dropped: {p:?}"
                ),
            );
        }
        None => {
            c.that(false, "the slow sink has no port in the stats");
        }
    }
    c.done();
}

fn push_port_sleeps_while_a_frame_is_held(kind: &str) {
    switch_sleeps_while_a_frame_is_held(kind, "on");
}

fn pull_port_sleeps_while_a_frame_is_held(kind: &str) {
    switch_sleeps_while_a_frame_is_held(kind, "off");
}

crate::transport_suite!(
    push_port_sleeps_while_a_frame_is_held,
    pull_port_sleeps_while_a_frame_is_held,
);
