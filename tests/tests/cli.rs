//! The command line contract: usage errors exit 2 naming the flag at
//! fault, `--help` and `--version` exit 0. One process each, no pair.

mod common;

use common::{Checks, Outcome, TestDir};
use std::time::Duration;

/// Run the launcher with `args` and wait (a usage error must not start a
/// run, so it has to be quick; `--timeout` bounds it if it does start).
fn run(label: &str, args: &[&str]) -> (TestDir, Outcome) {
    let dir = TestDir::new(label);
    let out = dir
        .spawn_raw("launcher", args)
        .finish(Duration::from_secs(10));
    (dir, out)
}

/// `args` is refused with exit 2 and every one of `mentions` on stderr, in
/// an `error: ` line, without a panic or a backtrace.
fn usage_error(label: &str, args: &[&str], mentions: &[&str]) {
    let (_dir, out) = run(label, args);
    let mut c = Checks::new(format!("lguest-launcher {}", args.join(" ")), &[&out]);
    c.exit(&out, 2).stderr_has(&out, "error: ");
    for m in mentions {
        c.stderr_has(&out, m);
    }
    c.that(
        !out.stderr.contains("panicked"),
        "no panic on a usage error",
    );
    c.done();
}

#[test]
fn count_not_a_number_is_a_usage_error() {
    usage_error(
        "count_abc",
        &[
            "--sharenet",
            "fifo:/tmp/sharenet-tests-unused",
            "--timeout",
            "5",
            "--count",
            "abc",
        ],
        &["--count"],
    );
}

#[test]
fn size_above_65535_is_a_usage_error() {
    usage_error(
        "size_big",
        &[
            "--sharenet",
            "fifo:/tmp/sharenet-tests-unused",
            "--timeout",
            "5",
            "--size",
            "100000",
        ],
        &["--size"],
    );
}

#[test]
fn unknown_transport_is_a_usage_error_listing_the_known_ones() {
    usage_error(
        "bogus_kind",
        &["--sharenet", "bogus:/x", "--timeout", "5"],
        &["bogus", "fifo"],
    );
}

#[test]
fn queue_size_not_a_power_of_two_is_a_usage_error() {
    usage_error(
        "queue_3",
        &[
            "--sharenet",
            "fifo:/tmp/sharenet-tests-unused",
            "--timeout",
            "5",
            "--queue-size",
            "3",
        ],
        &["--queue-size"],
    );
}

#[test]
fn missing_sharenet_is_a_usage_error() {
    usage_error(
        "no_sharenet",
        &["--workload", "sink", "--timeout", "5"],
        &["--sharenet"],
    );
}

#[test]
fn memory_too_small_for_queue_is_a_usage_error() {
    usage_error(
        "memory_small",
        &[
            "--sharenet",
            "fifo:/tmp/sharenet-tests-unused",
            "--timeout",
            "5",
            "--memory",
            "1",
            "--queue-size",
            "256",
        ],
        &["--memory"],
    );
}

#[test]
fn help_exits_0_and_documents_sharenet() {
    let (_dir, out) = run("help", &["--help"]);
    let mut c = Checks::new("lguest-launcher --help", &[&out]);
    c.exit(&out, 0)
        .that(
            out.stdout.contains("--sharenet"),
            "help should document --sharenet",
        )
        .that(
            out.stdout.contains("--workload"),
            "help should document --workload",
        );
    c.done();
}

#[test]
fn version_exits_0_and_prints_the_version() {
    let (_dir, out) = run("version", &["--version"]);
    let want = format!("lguest-launcher {}", env!("CARGO_PKG_VERSION"));
    let mut c = Checks::new("lguest-launcher --version", &[&out]);
    c.exit(&out, 0).that(
        out.stdout.trim() == want,
        format!("stdout should be {want:?}, got {:?}", out.stdout.trim()),
    );
    c.done();
}
