//! The speed work's flags with real pairs: `--payload stamp` moves every
//! packet intact and in order over every transport, `--cpu` pins or is
//! refused, and the wait loop reports what it did.

mod common;

use common::{fresh_link, run_stream_pair, serial, Checks, TestDir, EXIT_LIMIT};

/// A stamped stream (header only, both sides) over `kind`: every frame
/// arrives once, intact and in order, in spin and in sleep mode, and both
/// sides report the payload mode.
fn stamp_stream_arrives_intact_and_in_order(kind: &str) {
    let _serial = serial();
    for wait in ["spin", "sleep"] {
        let dir = TestDir::new("stamp");
        let spec = dir.sharenet(kind, "link");
        let count = 50_000u64;
        let flags = ["--payload", "stamp", "--wait", wait];
        let (sink, stream) = run_stream_pair(&dir, &spec, count, 1500, &flags, &flags);
        let mut c = Checks::new(
            format!("{kind}: stamped stream, --wait {wait}"),
            &[&sink, &stream],
        );
        c.exit(&sink, 0)
            .exit(&stream, 0)
            .eq(&sink, field!(packets_received), count)
            .eq(&sink, field!(bytes_received), count * 1500)
            .eq(&sink, field!(corrupted), 0)
            .eq(&sink, field!(out_of_order), 0)
            .eq(&sink, field!(lost), 0)
            .eq(&stream, field!(packets_consumed), count)
            .eq(&sink, field!(payload), "stamp".to_string())
            .eq(&stream, field!(payload), "stamp".to_string());
        c.done();
    }
}

/// A sink checking full payloads counts stamped frames as corrupted: the
/// modes must match, and a mismatch is loud, not silent.
fn verify_sink_counts_stamped_frames_as_corrupted(kind: &str) {
    let (_serial, dir, spec) = fresh_link(kind, "stamp_vs_verify");
    let (sink, stream) = run_stream_pair(
        &dir,
        &spec,
        1000,
        256,
        &["--payload", "verify", "--timeout", "5"],
        &["--payload", "stamp"],
    );
    let mut c = Checks::new(
        format!("{kind}: stamp sender, verify sink"),
        &[&sink, &stream],
    );
    c.exit(&sink, 1)
        .eq(&sink, field!(corrupted), 1000)
        .eq(&sink, field!(packets_received), 0);
    c.done();
}

transport_suite!(
    stamp_stream_arrives_intact_and_in_order,
    verify_sink_counts_stamped_frames_as_corrupted,
);

#[test]
fn cpu_out_of_range_is_a_usage_error_naming_the_flag_and_the_cpu_count() {
    let dir = TestDir::new("cpu99");
    let spec = dir.sharenet("unix", "link");
    let out = dir.run_raw("launcher", &["--sharenet", &spec, "--cpu", "99"]);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut c = Checks::new("--cpu 99", &[&out]);
    c.exit(&out, 2)
        .stderr_has(&out, "error: --cpu 99")
        .stderr_has(&out, &format!("this machine has {cpus} CPUs"));
    c.done();
}

#[test]
fn cpu_and_payload_from_a_profile_are_shown_by_print_config() {
    let dir = TestDir::new("cpu_profile");
    let (profile, _) = dir.write_file(
        "p.toml",
        "[guest]\ncpu = 0\n[workload]\npayload = \"stamp\"\n",
    );
    let out = std::process::Command::new(common::launcher())
        .arg("--profile")
        .arg(&profile)
        .arg("--print-config")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("cpu = 0"), "{printed}");
    assert!(printed.contains("payload = \"stamp\""), "{printed}");
}

#[test]
fn pair_pinned_to_cpu_0_and_1_completes() {
    let (_serial, dir, spec) = fresh_link("eventfd", "cpu01");
    let (sink, stream) = run_stream_pair(
        &dir,
        &spec,
        20_000,
        64,
        &["--cpu", "0", "--wait", "spin"],
        &["--cpu", "1", "--wait", "spin"],
    );
    let mut c = Checks::new("--cpu 0 / --cpu 1", &[&sink, &stream]);
    c.exit(&sink, 0)
        .exit(&stream, 0)
        .eq(&sink, field!(packets_received), 20_000);
    c.done();
}

#[test]
fn adaptive_ping_reports_its_wait_loop() {
    let (_serial, dir, spec) = fresh_link("eventfd", "adaptive_stats");
    let mut echo = dir.workload("echo", &spec, "echo", "500", &["--wait", "adaptive"]);
    let mut ping = dir.workload("ping", &spec, "ping", "500", &["--wait", "adaptive"]);
    let ping = ping.finish(EXIT_LIMIT);
    let echo = echo.finish(EXIT_LIMIT);
    let mut c = Checks::new("adaptive ping/echo stats", &[&ping, &echo]);
    c.exit(&ping, 0).exit(&echo, 0);
    for o in [&ping, &echo] {
        let s = o.stats.as_ref();
        // Not one idle period per ping: a side descheduled while the
        // round trip completes finds the answer without idling.
        c.that(
            s.is_some_and(|s| s.spin_hits + s.sleeps > 0 && s.wakeups <= s.sleeps),
            "idle periods ended as spin hits or sleeps, wake-ups counted among the sleeps",
        )
        .that(
            s.is_some_and(|s| s.wakeup_p50_us.is_some_and(|p| p > 0.0)),
            "wakeup_p50_us is reported",
        )
        .that(
            s.is_some_and(|s| s.spin_budget_us.is_some()),
            "spin_budget_us is reported",
        );
    }
    c.done();
}
