//! Offloads between two real launchers: a `--gso` stream sends 64 KiB TCP
//! GSO frames with partial checksums; the receiving launcher delivers them
//! whole to a guest that takes TSO (`--offloads on`) or segments them and
//! completes every checksum for one that does not (`--offloads off`), and
//! the sink checks every byte and every checksum either way. MTUs are
//! stated at link-up and a mismatch is refused on both sides; bad values
//! are usage errors; a hostile peer's impossible offload headers are
//! dropped as `bad_offload` while the link carries on.

mod common;

use common::*;
use std::path::Path;

/// 64 KiB-class GSO frames: 65000 payload bytes each.
const GSO_SIZE: u64 = 65000;

/// Segments of one GSO frame of `GSO_SIZE` payload bytes at `mss`.
fn segments(mss: u64) -> u64 {
    GSO_SIZE.div_ceil(mss)
}

/// A `--gso` stream of `count` frames to a sink with `sink_args`, checked
/// intact; the sink's outcome.
fn gso_pair(
    label: &str,
    kind: &str,
    count: u64,
    sink_args: &[&str],
    stream_args: &[&str],
) -> (Outcome, Outcome) {
    let dir = TestDir::new(label);
    let spec = dir.sharenet(kind, "link");
    let mut stream = vec!["--gso"];
    stream.extend_from_slice(stream_args);
    stream_pair_intact(
        &format!("{kind}: {label}"),
        &dir,
        &spec,
        count,
        GSO_SIZE,
        sink_args,
        &stream,
    )
}

/// `count` GSO frames over eventfd with `--mtu MTU` on both sides, to a
/// sink taking no offloads, checked intact: the pair and how many segments
/// each frame is cut into (an MSS of the MTU less 40 header bytes).
fn gso_at_mtu(label: &str, count: u64, mtu: u64) -> (Outcome, Outcome, u64) {
    let m = mtu.to_string();
    let sink_args = ["--offloads", "off", "--mtu", &m];
    let (sink, stream) = gso_pair(label, "eventfd", count, &sink_args, &["--mtu", &m]);
    (sink, stream, segments(mtu - 40))
}

/// Expect the sink to have received `count` frames cut into `per`
/// segments each, every segment counted as an offload segment.
fn check_cut<'c, 'a>(
    c: &'c mut Checks<'a>,
    sink: &Outcome,
    count: u64,
    per: u64,
) -> &'c mut Checks<'a> {
    c.eq(sink, field!(tcp_segments_received), count * per).eq(
        sink,
        field!(offload_segments),
        count * per,
    )
}

#[test]
fn gso_stream_to_a_sink_without_offloads_arrives_segmented_every_byte_checked() {
    let _serial = serial();
    let count = 100;
    for kind in ["unix", "eventfd", "fifo"] {
        let (sink, stream) = gso_pair("gso_off", kind, count, &["--offloads", "off"], &[]);
        let per = segments(1460);
        assert_eq!(per, 45);
        let mut c = Checks::new(format!("{kind}: gso to offloads off"), &[&sink, &stream]);
        c.eq(&sink, field!(tcp_segments_received), count * per)
            .eq(&sink, field!(gso_frames_received), 0)
            .eq(&sink, field!(tcp_checksum_errors), 0)
            .eq(&sink, field!(offload_segmented), count)
            .eq(&sink, field!(offload_segments), count * per)
            .eq(&sink, field!(offload_passed), 0)
            .eq(&sink, field!(offload_csum_completed), 0)
            // Every segment one RX frame, plus the end-of-stream frame.
            .eq(&sink, field!(packets_copied), count * per + 1)
            .eq(&sink, field!(offloads), 0)
            .eq(&stream, field!(peer_offloads), 0);
        c.done();
    }
}

#[test]
fn gso_stream_to_a_sink_with_offloads_arrives_whole() {
    let _serial = serial();
    let count = 100;
    let (sink, stream) = gso_pair("gso_on", "unix", count, &["--offloads", "on"], &[]);
    let mut c = Checks::new("gso to offloads on", &[&sink, &stream]);
    c.eq(&sink, field!(gso_frames_received), count)
        .eq(&sink, field!(tcp_segments_received), 0)
        .eq(&sink, field!(tcp_checksum_errors), 0)
        .eq(&sink, field!(offload_passed), count)
        .eq(&sink, field!(offload_segmented), 0)
        .eq(&sink, field!(packets_copied), count + 1)
        // GUEST_CSUM, GUEST_TSO4, GUEST_TSO6, GUEST_ECN, both ways.
        .eq(&sink, field!(offloads), 0x382)
        .eq(&stream, field!(peer_offloads), 0x382);
    c.done();
}

#[test]
fn jumbo_mtu_cuts_gso_frames_at_the_mtu() {
    let _serial = serial();
    let count = 50;
    let (sink, stream, per) = gso_at_mtu("gso_jumbo", count, 9000);
    let mut c = Checks::new("gso at MTU 9000 to offloads off", &[&sink, &stream]);
    check_cut(&mut c, &sink, count, per)
        .eq(&sink, field!(mtu), 9000u32)
        .eq(&stream, field!(mtu), 9000u32);
    c.done();
}

/// A small MTU cuts each GSO frame into more segments (122) than the
/// synthetic guest keeps RX buffers posted (64, `guest::RX_POSTED`): the
/// copier finds too few, the guest posts all of its ring, and every
/// segment arrives checked.
#[test]
fn gso_frames_cut_into_more_segments_than_rx_buffers_posted_all_arrive() {
    let _serial = serial();
    let count = 50;
    let (sink, stream, per) = gso_at_mtu("gso_small_mtu", count, 576);
    assert!(
        per > 64,
        "{per} segments per frame: more than the RX buffers first posted"
    );
    let mut c = Checks::new("gso at MTU 576 to offloads off", &[&sink, &stream]);
    check_cut(&mut c, &sink, count, per)
        .eq(&sink, field!(tcp_checksum_errors), 0)
        .eq(&sink, field!(packets_copied), count * per + 1)
        .gt(&sink, field!(rx_ring_full), 0.0);
    c.done();
}

#[test]
fn plain_frames_are_untouched_and_no_mtu_on_one_side_accepts_any() {
    let (_serial, dir, spec) = fresh_link("unix", "mtu_one_side");
    let (sink, _) = stream_pair_intact(
        "mtu on one side only",
        &dir,
        &spec,
        2000,
        1500,
        &["--mtu", "9000", "--offloads", "off"],
        &[],
    );
    let mut c = Checks::new("plain frames", &[&sink]);
    c.eq(&sink, field!(offload_passed), 0)
        .eq(&sink, field!(offload_segmented), 0)
        .eq(&sink, field!(offload_csum_completed), 0)
        .eq(&sink, field!(packets_copied), 2001);
    c.done();
}

#[test]
fn mismatched_mtu_is_refused_on_both_sides_naming_both_values() {
    let (_serial, dir, spec) = fresh_link("unix", "mtu_mismatch");
    let mut a = dir.spawn("a", &spec, &["--workload", "sink", "--mtu", "9000"]);
    let mut b = dir.spawn("b", &spec, &["--workload", "stream", "--mtu", "1500"]);
    let (a, b) = (a.finish(EXIT_LIMIT), b.finish(EXIT_LIMIT));
    let mut c = Checks::new("mtu 9000 vs 1500", &[&a, &b]);
    c.exit(&a, 1)
        .exit(&b, 1)
        .stderr_has(
            &a,
            "peer's MTU 1500 differs from ours 9000: give both sides the same --mtu",
        )
        .stderr_has(
            &b,
            "peer's MTU 9000 differs from ours 1500: give both sides the same --mtu",
        )
        .eq(&a, field!(packets_received), 0)
        .eq(&b, field!(packets_sent), 0);
    for o in [&a, &b] {
        let errors = o.stderr.lines().filter(|l| l.starts_with("error:")).count();
        c.that(
            errors == 1,
            format!("{}: one error line, got {errors}", o.role),
        );
    }
    c.done();
}

/// `args` is refused with exit 2, naming each of `mentions`.
fn usage_error(label: &str, args: &[&str], mentions: &[&str]) {
    let dir = TestDir::new(label);
    let spec = dir.sharenet("unix", "unused");
    let mut argv = vec!["--sharenet", spec.as_str(), "--timeout", "5"];
    argv.extend_from_slice(args);
    let out = dir.run_raw("launcher", &argv);
    let mut c = Checks::new(format!("lguest-launcher {}", args.join(" ")), &[&out]);
    c.usage_error(&out, mentions);
    c.done();
}

#[test]
fn bad_offload_values_are_usage_errors_naming_the_flag() {
    usage_error("mtu_small", &["--mtu", "67"], &["--mtu", "68..=65535"]);
    usage_error("mtu_big", &["--mtu", "65536"], &["--mtu", "68..=65535"]);
    usage_error("mtu_abc", &["--mtu", "abc"], &["--mtu", "not a number"]);
    usage_error(
        "offloads_maybe",
        &["--offloads", "maybe"],
        &["--offloads", "on", "off"],
    );
    usage_error(
        "gso_sink",
        &["--workload", "sink", "--gso"],
        &["--gso", "only means something for a stream"],
    );
    usage_error(
        "gso_size",
        &["--gso", "--size", "65482"],
        &["--size 65482 with --gso", "65481"],
    );
    usage_error(
        "gso_stamp",
        &["--gso", "--payload", "stamp"],
        &["--gso with --payload stamp"],
    );
    // The same range in a profile, with the file and key named.
    let dir = TestDir::new("mtu_profile");
    let (_, p) = dir.write_file("p.toml", "[net]\nmtu = 10\n");
    usage_error(
        "mtu_profile_run",
        &["--profile", &p],
        &["p.toml:2", "mtu", "68..=65535"],
    );
}

#[test]
fn print_config_shows_mtu_offloads_and_gso_with_their_sources() {
    let dir = TestDir::new("offload_print_config");
    let (_, p) = dir.write_file(
        "p.toml",
        "[net]\noffloads = \"off\"\n\n[workload]\ngso = true\n",
    );
    let out = dir.run_raw(
        "launcher",
        &["--profile", &p, "--mtu", "9000", "--print-config"],
    );
    let mut c = Checks::new("--print-config", &[&out]);
    c.exit(&out, 0);
    let has = |key: &str, src: &str| {
        out.stdout
            .lines()
            .any(|l| l.starts_with(key) && l.contains(src))
    };
    c.that(has("mtu = 9000", "# flag"), "mtu = 9000 from the flag")
        .that(
            has("offloads = \"off\"", "# profile"),
            "offloads from the profile",
        )
        .that(has("gso = true", "# profile"), "gso from the profile");
    c.done();
}

fn hostile_peer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hostile-peer"))
}

#[test]
fn bad_offload_headers_are_dropped_by_name_and_the_link_carries_on() {
    let _serial = serial();
    let rounds = 3u64;
    // Each round: 32 bad headers (six kinds in turn) between 32 good frames.
    let data = rounds * 32;
    for offloads in ["on", "off"] {
        let dir = TestDir::new(&format!("bad_offload_{offloads}"));
        let spec = dir.sharenet("unix", "link");
        let n = data.to_string();
        let mut sink = dir.sink(&spec, &n, &["--size", "64", "--offloads", offloads]);
        let mut hostile = dir.spawn_program(
            "hostile",
            hostile_peer(),
            &[&spec, "bad-offload", &rounds.to_string()],
        );
        let sink = sink.finish(EXIT_LIMIT);
        let hostile = hostile.finish(EXIT_LIMIT);
        let by_reason = sink
            .stats
            .as_ref()
            .and_then(|s| s.drops_by_reason.get("bad_offload").copied());
        let mut c = Checks::new(
            format!("bad offload headers, offloads {offloads}"),
            &[&sink, &hostile],
        );
        c.exit(&sink, 0)
            .received(&sink, data)
            .eq(&sink, field!(peer_bad_offload), data)
            .eq(&sink, field!(peer_errors), data)
            .that(
                by_reason == Some(data),
                format!("drops_by_reason.bad_offload == {data}, got {by_reason:?}"),
            )
            .that(!sink.stderr.contains("panicked"), "no panic");
        c.done();
    }
}
