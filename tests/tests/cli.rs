//! The command line contract: usage errors exit 2 naming the flag at
//! fault, `--help` and `--version` exit 0. One process each, no pair.

mod common;

use common::{fresh_link, serial, stream_pair_intact, Checks, Outcome, TestDir};
use std::time::Duration;

/// Run the launcher with `args` and wait (a usage error must not start a
/// run, so it has to be quick; `--timeout` bounds it if it does start).
fn run(label: &str, args: &[&str]) -> (TestDir, Outcome) {
    let dir = TestDir::new(label);
    let out = dir.run_raw("launcher", args);
    (dir, out)
}

/// `args` is refused with exit 2 and every one of `mentions` on stderr, in
/// an `error: ` line, without a panic or a backtrace.
fn usage_error(label: &str, args: &[&str], mentions: &[&str]) {
    let (_dir, out) = run(label, args);
    let mut c = Checks::new(format!("lguest-launcher {}", args.join(" ")), &[&out]);
    c.usage_error(&out, mentions);
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

/// `--count 0` is a sink's "until the end of stream"; any other workload
/// (here the default, stream) needs at least 1.
#[test]
fn count_zero_is_for_a_sink_only() {
    usage_error(
        "count_0",
        &[
            "--sharenet",
            "fifo:/tmp/sharenet-tests-unused",
            "--timeout",
            "5",
            "--count",
            "0",
        ],
        &[
            "--count 0",
            "only means something for a sink",
            "a stream needs at least 1",
        ],
    );
    let (_dir, out) = run(
        "count_0_no_u64_max",
        &[
            "--sharenet",
            "fifo:/tmp/sharenet-tests-unused",
            "--count",
            "0",
        ],
    );
    let mut c = Checks::new("--count 0", &[&out]);
    c.that(
        !out.stderr.contains("18446744073709551615"),
        "no u64::MAX in the message",
    );
    c.done();
}

#[test]
fn rendezvous_in_a_missing_directory_is_a_usage_error() {
    usage_error(
        "missing_dir",
        &["--sharenet", "fifo:/nonexistent-dir/x", "--timeout", "5"],
        &["error: --sharenet fifo:/nonexistent-dir/x: the directory /nonexistent-dir does not exist"],
    );
    usage_error(
        "missing_dir_unix",
        &[
            "--sharenet",
            "unix:/nonexistent-dir/sub/x",
            "--timeout",
            "5",
        ],
        &[
            "unix:/nonexistent-dir/sub/x",
            "/nonexistent-dir/sub does not exist",
        ],
    );
}

#[test]
fn rendezvous_in_an_unwritable_directory_names_the_users_path() {
    let (_dir, out) = run(
        "proc_dir",
        &["--sharenet", "fifo:/proc/nope", "--timeout", "5"],
    );
    let mut c = Checks::new("--sharenet fifo:/proc/nope", &[&out]);
    c.exit(&out, 2).stderr_has(
        &out,
        "error: --sharenet fifo:/proc/nope: cannot create the rendezvous in /proc: not a writable directory",
    );
    c.that(
        !out.stderr.contains(".tmp") && !out.stderr.contains("/proc/nope."),
        "no internal temporary name in the message",
    );
    c.done();
    usage_error(
        "file_as_dir",
        &["--sharenet", "unix:/etc/passwd/x", "--timeout", "5"],
        &["unix:/etc/passwd/x", "/etc/passwd is not a directory"],
    );
}

/// `--queue-size 1024` needs 129 MiB; without `--memory` the default
/// grows to fit, and a pair runs.
#[test]
fn default_memory_follows_queue_size() {
    let (_dir, out) = run(
        "queue_1024_config",
        &[
            "--sharenet",
            "fifo:/tmp/sharenet-tests-unused",
            "--queue-size",
            "1024",
            "--print-config",
        ],
    );
    let mut c = Checks::new("--queue-size 1024 --print-config", &[&out]);
    c.exit(&out, 0).that(
        out.stdout
            .lines()
            .any(|l| l.starts_with("memory_mib = 129") && l.contains("# default")),
        "memory_mib defaults to 129 for queue_size 1024",
    );
    c.done();

    let (_serial, dir, spec) = fresh_link("unix", "queue_1024_pair");
    let q = ["--queue-size", "1024"];
    let (sink, _) = stream_pair_intact("queue 1024 pair", &dir, &spec, 5000, 1500, &q, &q);
    let mut c = Checks::new("queue 1024 pair", &[&sink]);
    c.exit(&sink, 0);
    c.done();
}

#[test]
fn print_config_works_without_sharenet_and_does_not_freeze_the_name() {
    let (_dir, out) = run("print_config_bare", &["--print-config"]);
    let mut c = Checks::new("--print-config", &[&out]);
    c.exit(&out, 0)
        .that(
            out.stdout
                .lines()
                .any(|l| l == "# name = (default: derived from the pid)"),
            "name shown as a comment",
        )
        .that(
            out.stdout
                .lines()
                .any(|l| l.starts_with("# sharenet = (unset")),
            "sharenet shown as unset",
        )
        .that(!out.stdout.contains("guest-"), "no pid-derived name")
        .that(
            out.stdout
                .lines()
                .any(|l| l.starts_with("count = 100000") && l.ends_with("# default")),
            "defaults printed",
        );
    c.done();
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
        )
        .that(
            out.stdout.contains("129 for --queue-size 1024"),
            "help should say the --memory default follows --queue-size",
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

#[test]
fn demo_help_explains_every_column_and_its_modes() {
    let (_dir, out) = run("demo-help", &["demo", "--help"]);
    let mut c = Checks::new("lguest-launcher demo --help", &[&out]);
    c.exit(&out, 0);
    for col in [
        "transport",
        "packets",
        "Mpps",
        "Gbit/s",
        "lost",
        "notif/packet",
        "ping p50 adaptive",
        "ping p50 sleep",
    ] {
        c.that(
            out.stdout.lines().any(|l| l.trim_start().starts_with(col)),
            format!("demo --help should explain the `{col}` column"),
        );
    }
    c.that(
        out.stdout.contains("--wait adaptive") && out.stdout.contains("--wait sleep"),
        "demo --help should say which wait mode each ping figure uses",
    )
    .that(
        out.stdout.contains("--notify event-idx"),
        "demo --help should name the stream's modes",
    );
    c.done();
}

#[test]
fn bench_help_gives_the_runs_the_code_uses_and_quick_includes_adaptive() {
    let (_dir, out) = run("bench-help", &["bench", "--help"]);
    let mut c = Checks::new("lguest-launcher bench --help", &[&out]);
    c.exit(&out, 0)
        .that(
            out.stdout.contains("with or without --quick [default: 3]"),
            "bench --help should give one runs default, 3, for quick and full",
        )
        .that(
            !out.stdout.contains("with --quick 2"),
            "bench --help still says --quick runs twice",
        )
        .that(
            out.stdout.contains("adaptive (the default)"),
            "bench --help should say --quick includes adaptive",
        )
        .that(
            out.stdout.contains("about 1 minute") && out.stdout.contains("about 3 minutes"),
            "bench --help should give the durations README and BENCHMARKS.md give",
        );
    c.done();
}

/// CPUs this process may run on, from `Cpus_allowed_list` ("0-1,4").
fn allowed_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or("")
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
            cpus.extend(a..=b);
        }
    }
    cpus
}

/// `demo` itself, small: the table's row for the transport asked for, every
/// frame intact, both ping columns in µs; and its pairs pinned to CPUs 1 and
/// 0 when this process may use both (unpinned, an adaptive ping p50 moved
/// between 1 and 15 µs from run to run), saying so on stderr either way.
#[test]
fn demo_runs_its_pairs_pinned_and_prints_one_row_per_transport() {
    let _g = serial();
    let dir = TestDir::new("demo-run");
    let out = dir
        .spawn_raw(
            "demo",
            &[
                "demo",
                "--count",
                "3000",
                "--pings",
                "40",
                "--transports",
                "eventfd",
            ],
        )
        .finish(Duration::from_secs(120));
    let mut c = Checks::new("lguest-launcher demo (eventfd, small)", &[&out]);
    c.exit(&out, 0);
    let row: Vec<&str> = out
        .stdout
        .lines()
        .find(|l| l.starts_with("eventfd"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    c.that(
        row.get(1) == Some(&"3000") && row.get(4) == Some(&"0"),
        format!("eventfd row: 3000 packets, 0 lost: {row:?}"),
    )
    .that(
        row.iter().filter(|w| **w == "µs").count() == 2,
        format!("both ping columns in µs: {row:?}"),
    );
    let cpus = allowed_cpus();
    if cpus.contains(&0) && cpus.contains(&1) {
        c.stderr_has(
            &out,
            "demo: each pair's two sides run pinned, on CPUs 1 and 0",
        );
    } else {
        c.stderr_has(&out, "demo: pairs run unpinned");
    }
    c.done();
}
