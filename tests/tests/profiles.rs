//! Profiles as users use them: the shipped examples start a pair that
//! streams intact, and a broken profile is refused with exit 2 and the
//! file, line, key and allowed values named.

mod common;

use common::*;
use std::path::PathBuf;

fn profile(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../profiles")
        .join(name)
        .display()
        .to_string()
}

/// The FIFO example pair, moved to a private path and a smaller count by
/// flags (flags override the profile).
#[test]
fn pair_from_example_profiles_streams_intact() {
    let _serial = serial();
    for (left, right) in [
        ("fifo-left.toml", "fifo-right.toml"),
        ("unix-lowcpu-left.toml", "unix-lowcpu-right.toml"),
        (
            "eventfd-throughput-left.toml",
            "eventfd-throughput-right.toml",
        ),
    ] {
        let dir = TestDir::new("profiles");
        let kind = if left.starts_with("fifo") {
            "fifo"
        } else if left.starts_with("unix") {
            "unix"
        } else {
            "eventfd"
        };
        let spec = dir.sharenet(kind, "link");
        let mut sink = dir.spawn(
            "sink",
            &spec,
            &["--profile", &profile(left), "--count", "50000"],
        );
        let mut stream = dir.spawn(
            "stream",
            &spec,
            &["--profile", &profile(right), "--count", "50000"],
        );
        let sink = sink.finish(EXIT_LIMIT);
        let stream = stream.finish(EXIT_LIMIT);
        let mut c = Checks::new(format!("{left} + {right}"), &[&sink, &stream]);
        check_stream_intact(&mut c, &sink, &stream, 50000, 1500);
        c.that(
            sink.text(field!(workload)) == "sink",
            "left profile set the workload",
        );
        c.done();
    }
}

#[test]
fn ping_profiles_report_latency() {
    let (_serial, dir, spec) = fresh_link("eventfd", "ping_profiles");
    let mut ping = dir.spawn(
        "ping",
        &spec,
        &["--profile", &profile("ping-left.toml"), "--count", "2000"],
    );
    let mut echo = dir.spawn(
        "echo",
        &spec,
        &["--profile", &profile("ping-right.toml"), "--count", "2000"],
    );
    let ping = ping.finish(EXIT_LIMIT);
    let echo = echo.finish(EXIT_LIMIT);
    let mut c = Checks::new("ping profiles", &[&ping, &echo]);
    c.exit(&ping, 0)
        .exit(&echo, 0)
        .eq(&ping, field!(packets_received), 2000)
        .eq(&ping, field!(lost), 0);
    c.gt(&ping, field!(rtt_p50_us), 0.0);
    c.done();
}

fn refused(label: &str, text: &str, mentions: &[&str]) {
    let dir = TestDir::new(label);
    let (_, p) = dir.write_file("bad.toml", text);
    let out = dir.run_raw("launcher", &["--profile", &p]);
    let mut c = Checks::new(format!("profile {label}"), &[&out]);
    let mentions: Vec<String> = mentions.iter().map(|m| m.replace("FILE", &p)).collect();
    c.usage_error(&out, &mentions);
    c.done();
}

#[test]
fn unknown_key_names_file_line_and_allowed_keys() {
    refused(
        "unknown_key",
        "[guest]\nname = \"x\"\nmemory_mib = 64\nbogus_key = 1\n",
        &["FILE:4:1: unknown key `bogus_key` in [guest]; expected one of name, memory_mib, queue_size, cpu"],
    );
}

#[test]
fn bad_value_names_file_line_key_and_range() {
    refused(
        "bad_value",
        "[net]\nsharenet = \"fifo:/tmp/x\"\n\n[guest]\nqueue_size = 3\n",
        &["FILE:5:1: [guest] queue_size: 3 is not a power of two"],
    );
    refused(
        "bad_enum",
        "[net]\nsharenet = \"fifo:/tmp/x\"\nwait = \"nap\"\n",
        &["FILE:3:", "nap", "sleep, spin, adaptive"],
    );
}

#[test]
fn wrong_type_names_key_section_and_expected_type() {
    refused(
        "memory_string",
        "[guest]\nname = \"x\"\nmemory_mib = \"64\"\n",
        &["FILE:3:1: [guest] memory_mib: expected an integer (MiB), got the string \"64\""],
    );
    refused(
        "wait_bool",
        "[net]\nsharenet = \"fifo:/tmp/x\"\nwait = true\n",
        &["FILE:3:1: [net] wait: expected one of sleep, spin, adaptive, got the boolean true"],
    );
}

#[test]
fn misspelled_section_lists_the_sections() {
    refused(
        "section_nett",
        "[guest]\nname = \"x\"\n\n[nett]\nsharenet = \"fifo:/tmp/x\"\n",
        &["FILE:4:2: unknown section `nett`; expected one of guest, net, workload"],
    );
}

#[test]
fn key_in_the_wrong_section_names_the_right_one() {
    refused(
        "size_in_guest",
        "[guest]\nsize = 64\n",
        &["FILE:2:1: unknown key `size` in [guest]; `size` belongs in [workload]"],
    );
}

#[test]
fn bad_toml_and_missing_file_are_usage_errors() {
    refused("bad_toml", "[guest\nname = 1\n", &["FILE:1:"]);
    let dir = TestDir::new("missing_profile");
    let out = dir.run_raw("launcher", &["--profile", "/nonexistent/left.toml"]);
    let mut c = Checks::new("missing profile", &[&out]);
    c.exit(&out, 2)
        .stderr_has(&out, "/nonexistent/left.toml: cannot read profile");
    c.done();
}

#[test]
fn print_config_shows_merged_values_and_sources() {
    let dir = TestDir::new("print_config");
    let out = dir.run_raw(
        "launcher",
        &[
            "--profile",
            &profile("fifo-left.toml"),
            "--count",
            "5",
            "--print-config",
        ],
    );
    let mut c = Checks::new("--print-config", &[&out]);
    c.exit(&out, 0);
    c.that(
        out.stdout
            .lines()
            .any(|l| l.starts_with("count = 5") && l.ends_with("# flag")),
        "count from the flag",
    );
    c.that(
        out.stdout
            .lines()
            .any(|l| l.starts_with("kind = \"sink\"") && l.contains("# profile")),
        "kind from the profile",
    );
    c.that(
        out.stdout
            .lines()
            .any(|l| l.starts_with("size = 1500") && l.ends_with("# default")),
        "size from the default",
    );
    c.done();
}
