//! `lguest-launcher status`: asks the launchers of a live pair over their
//! control sockets (`PATH.status.PID`, mode 0600, SO_PEERCRED-checked).

mod common;

use common::*;
use lguest_launcher::status::Reply;
use nix::sys::signal::Signal;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use std::time::Duration;

/// `nobody` on Debian.
const NOBODY: u32 = 65534;

fn status(args: &[&str]) -> Output {
    Command::new(launcher())
        .arg("status")
        .args(args)
        .output()
        .expect("run lguest-launcher status")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Parse `status --json`: one reply per launcher; each port also reads as
/// the typed stats (the same keys as the stats JSON).
fn replies(o: &Output) -> Result<Vec<Reply>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).map_err(|e| format!("not JSON: {e}\n{}", text(o)))?;
    for r in v.as_array().into_iter().flatten() {
        for p in r["ports"].as_array().into_iter().flatten() {
            serde_json::from_value::<Stats>(p.clone())
                .map_err(|e| format!("a port does not read as Stats: {e}"))?;
            for key in [
                "packets_received",
                "packets_sent",
                "packets_copied",
                "link_up",
                "rx_pps",
            ] {
                if p.get(key).is_none() {
                    return Err(format!("port has no `{key}`: {p}"));
                }
            }
        }
    }
    serde_json::from_value(v).map_err(|e| format!("not a list of replies: {e}"))
}

/// A live stream/sink pair: two `status --json` calls half a second apart
/// get one reply per side, the link up with the other side's pid as peer,
/// and the sink's received counters (and the stream's sent ones) moved
/// between the calls; the human table names both sides; `--watch` redraws.
fn status_of_a_live_pair_moves_between_calls(kind: &str) {
    let (_serial, dir, spec) = fresh_link(kind, "status_pair");
    let mut sink = dir.sink(&spec, ENDLESS, &[]);
    let mut stream = dir.stream(&spec, ENDLESS, &["--size", "512", "--wait", "sleep"]);
    let connected = stream.wait_for_stderr("connected to peer pid", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let first = status(&["--sharenet", &spec, "--json"]);
    std::thread::sleep(Duration::from_millis(500));
    let second = status(&["--sharenet", &spec, "--json"]);
    let table = status(&["--sharenet", &spec]);
    let watch = Command::new("timeout")
        .args(["-s", "INT", "1.5"])
        .arg(launcher())
        .args(["status", "--sharenet", &spec, "--watch", "0.3"])
        .output()
        .expect("run status --watch");
    let (sink_pid, stream_pid) = (sink.pid(), stream.pid());
    sink.signal(Signal::SIGINT);
    stream.signal(Signal::SIGINT);
    let sink = sink.finish(Duration::from_secs(10));
    let stream = stream.finish(Duration::from_secs(10));
    let mut c = Checks::new(format!("{kind}: status of a live pair"), &[&sink, &stream]);
    c.that(connected, "the pair connected");
    c.that(
        first.status.code() == Some(0),
        format!("first call: {}", text(&first)),
    );
    match (replies(&first), replies(&second)) {
        (Ok(a), Ok(b)) => {
            let side = |rs: &[Reply], pid: u32| rs.iter().find(|r| r.pid == pid).cloned();
            c.that(a.len() == 2, format!("one reply per side, got {}", a.len()));
            match (
                side(&a, sink_pid),
                side(&b, sink_pid),
                side(&a, stream_pid),
                side(&b, stream_pid),
            ) {
                (Some(s1), Some(s2), Some(t1), Some(t2)) => {
                    let (s1, s2) = (&s1.ports[0], &s2.ports[0]);
                    let (t1, t2) = (&t1.ports[0], &t2.ports[0]);
                    c.that(s1.link_up && t1.link_up, "both links up")
                        .that(
                            s1.stats.peer_pid == stream_pid,
                            "the sink's peer is the stream",
                        )
                        .that(
                            t1.stats.peer_pid == sink_pid,
                            "the stream's peer is the sink",
                        )
                        .grew(
                            "sink packets_received",
                            s1.stats.packets_received,
                            s2.stats.packets_received,
                        )
                        .grew(
                            "sink packets_copied",
                            s1.stats.packets_copied,
                            s2.stats.packets_copied,
                        )
                        .grew(
                            "stream packets_sent",
                            t1.stats.packets_sent,
                            t2.stats.packets_sent,
                        )
                        .that(s2.rx_pps > 0.0, format!("sink rx rate {} > 0", s2.rx_pps))
                        .that(
                            t2.stats.notifications_sent > 0,
                            "the sleeping stream's notifications show",
                        );
                }
                _ => {
                    c.that(
                        false,
                        format!("both pids answer: {}\n{}", text(&first), text(&second)),
                    );
                }
            }
        }
        (a, b) => {
            c.that(false, format!("parse: {:?} / {:?}", a.err(), b.err()));
        }
    }
    let t = String::from_utf8_lossy(&table.stdout);
    c.that(
        table.status.code() == Some(0)
            && t.contains(&format!("(pid {sink_pid})"))
            && t.contains(&format!("(pid {stream_pid})"))
            && t.contains("rx packets"),
        format!("the table names both sides: {}", text(&table)),
    );
    let redraws = String::from_utf8_lossy(&watch.stdout)
        .matches("\x1b[2J")
        .count();
    c.that(
        redraws >= 3,
        format!("--watch 0.3 redrew {redraws} times in 1.5 s, want >= 3"),
    );
    c.done();
}

/// No launcher on the path: exit 1 with a line naming the sockets looked
/// for. A socket its launcher left behind (killed): exit 1, "is gone".
#[test]
fn status_without_a_launcher_exits_1_with_a_clear_error() {
    let dir = TestDir::new("status_none");
    let spec = dir.sharenet("unix", "link");
    let none = status(&["--sharenet", &spec]);
    let stale_path = dir.path().join("link.status.4194000");
    drop(std::os::unix::net::UnixListener::bind(&stale_path).expect("bind"));
    let stale = status(&["--sharenet", &spec, "--json"]);
    let usage = status(&["--json"]);
    let e = String::from_utf8_lossy(&none.stderr);
    let s = String::from_utf8_lossy(&stale.stderr);
    assert_eq!(none.status.code(), Some(1), "{}", text(&none));
    assert!(
        e.contains("no launcher answers on unix:") && e.contains("link.status.PID"),
        "{e}"
    );
    assert_eq!(stale.status.code(), Some(1), "{}", text(&stale));
    assert!(
        s.contains("link.status.4194000") && s.contains("is gone"),
        "{s}"
    );
    assert_eq!(usage.status.code(), Some(2), "{}", text(&usage));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("--sharenet"));
}

/// Another uid is refused: through the socket's mode 0600 first, and when
/// the mode is opened up (as root could do, or a umask mistake), by the
/// SO_PEERCRED check; the launcher's own uid is answered throughout.
#[test]
fn control_socket_refuses_another_uid() {
    let _serial = serial();
    let dir = TestDir::new("status_uid");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let spec = dir.sharenet("unix", "link");
    let mut lone = dir.spawn("lone", &spec, &["--workload", "idle", "--timeout", "20"]);
    let waiting = lone.wait_for_stderr("waiting for peer", Duration::from_secs(10));
    let socket = dir.path().join(format!("link.status.{}", lone.pid()));
    let mode = std::fs::metadata(&socket).map(|m| m.permissions().mode() & 0o777);
    let as_nobody = || {
        Command::new(launcher())
            .args(["status", "--sharenet", &spec])
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .expect("run status as nobody")
    };
    let by_mode = as_nobody();
    let _ = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666));
    let by_cred = as_nobody();
    let own = status(&["--sharenet", &spec, "--json"]);
    lone.signal(Signal::SIGTERM);
    let lone = lone.finish(Duration::from_secs(5));
    let mut c = Checks::new("control socket and another uid", &[&lone]);
    c.that(waiting, "the launcher started")
        .that(
            mode.as_ref().ok() == Some(&0o600),
            format!("socket mode {mode:?}, want 0600"),
        )
        .that(
            by_mode.status.code() == Some(1)
                && String::from_utf8_lossy(&by_mode.stderr).contains("Permission denied"),
            format!("mode 0600 keeps nobody out: {}", text(&by_mode)),
        )
        .that(
            by_cred.status.code() == Some(1)
                && String::from_utf8_lossy(&by_cred.stderr).contains(&format!(
                    "refused: uid {NOBODY} is not this launcher's uid 0"
                )),
            format!("SO_PEERCRED refuses nobody: {}", text(&by_cred)),
        )
        .that(
            own.status.code() == Some(0) && replies(&own).is_ok_and(|r| r.len() == 1),
            format!("root, the launcher's uid, is answered: {}", text(&own)),
        )
        .that(
            !socket.exists(),
            "the launcher removed its control socket at exit",
        );
    c.done();
}

crate::transport_tests! {
    unix: [
        status_of_a_live_pair_moves_between_calls,
    ],
    eventfd: [
        status_of_a_live_pair_moves_between_calls,
    ],
}
