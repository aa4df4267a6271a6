//! Switch members, the switch itself, and CPU time.

use super::{Checks, Outcome, Proc, TestDir};
use nix::sys::signal::Signal;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A member's MAC address: `02:00:00:00:00:NN`.
pub fn mac(n: u8) -> String {
    format!("02:00:00:00:00:{n:02x}")
}

/// A switch on `dir/sw` with 4 ports, stopping itself after `timeout_s`
/// seconds, its stats in `dir/switch.json` (`extra` flags follow); returns
/// it once it says members may join, with its `--sharenet` and stats path.
pub fn start_switch(
    dir: &TestDir,
    kind: &str,
    timeout_s: &str,
    extra: &[&str],
) -> (Proc, String, PathBuf) {
    let path = dir.path().join("sw");
    let stats = dir.path().join("switch.json");
    let spec = format!("{kind}:{}", path.display());
    let stats_s = stats.display().to_string();
    let mut args = vec!["switch", "--sharenet", &spec, "--ports", "4"];
    args.extend(["--timeout", timeout_s, "--stats-json", &stats_s]);
    args.extend_from_slice(extra);
    let mut p = dir.spawn_raw("switch", &args);
    assert!(
        p.wait_for_stderr("members join on", Duration::from_secs(10)),
        "switch did not start:\n{}",
        p.stderr()
    );
    (p, spec, stats)
}

/// Wait until the switch `sw` has said ` joined` `n` times (30 s at most).
pub fn wait_joined(sw: &mut Proc, n: usize) {
    let end = Instant::now() + Duration::from_secs(30);
    while sw.stderr().matches(" joined").count() < n {
        assert!(
            Instant::now() < end,
            "members did not join:\n{}",
            sw.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stop the switch `sw` with SIGINT; its outcome and its stats file.
pub fn stop_switch(
    mut sw: Proc,
    stats: &Path,
) -> (Outcome, lguest_launcher::switch::stats::SwitchStats) {
    sw.signal(Signal::SIGINT);
    let out = sw.finish(Duration::from_secs(10));
    let text = fs::read_to_string(stats).unwrap_or_default();
    let st = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("switch stats {}: {e}\n{text}", stats.display()));
    (out, st)
}

/// User + system CPU time of a live process, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 here.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// The switch's own bookkeeping: frames in = unicast + flooded + frames
/// dropped where they came in; copies = frames out + dropped for room.
pub fn check_counters_add_up(c: &mut Checks<'_>, s: &lguest_launcher::switch::stats::SwitchStats) {
    let rx: u64 = s.ports.iter().map(|p| p.rx_packets).sum();
    let tx: u64 = s.ports.iter().map(|p| p.tx_packets).sum();
    let in_drops: u64 = s
        .ports
        .iter()
        .map(|p| p.drops.same_port + p.drops.unknown_port)
        .sum();
    let no_room: u64 = s.ports.iter().map(|p| p.drops.no_room).sum();
    c.that(
        rx == s.unicast + s.flooded + in_drops,
        format!(
            "frames in {rx} should be unicast {} + flooded {} + dropped at their port {in_drops}",
            s.unicast, s.flooded
        ),
    );
    c.that(
        tx + no_room == s.copies,
        format!(
            "frames out {tx} + no_room {no_room} should be the copies asked, {}",
            s.copies
        ),
    );
}
