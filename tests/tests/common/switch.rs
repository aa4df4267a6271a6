//! Switch members, the switch itself, and CPU time.

use super::{Checks, Outcome, Proc, TestDir, EXIT_LIMIT};
use lguest_launcher::switch::stats::SwitchStats;
use nix::sys::signal::Signal;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A member's MAC address: `02:00:00:00:00:NN`.
pub fn mac(n: u8) -> String {
    format!("02:00:00:00:00:{n:02x}")
}

/// A running `lguest-launcher switch` on `dir/sw`, its stats in
/// `dir/switch.json`. Dropping it kills it (its [`Proc`] does).
pub struct Switch {
    /// The switch process (its stderr says who joined).
    pub proc: Proc,
    kind: String,
    path: PathBuf,
    stats: PathBuf,
}

impl Switch {
    /// Start `switch --sharenet KIND:<dir>/sw --ports PORTS --timeout
    /// TIMEOUT_S --stats-json <dir>/switch.json` and then `extra`; returns
    /// once it says members may join (10 s at most).
    pub fn start(
        dir: &TestDir,
        kind: &str,
        ports: usize,
        timeout_s: &str,
        extra: &[&str],
    ) -> Switch {
        let path = dir.path().join("sw");
        let stats = dir.path().join("switch.json");
        let spec = format!("{kind}:{}", path.display());
        let ports = ports.to_string();
        let stats_s = stats.display().to_string();
        let mut args = vec!["switch", "--sharenet", &spec, "--ports", &ports];
        args.extend(["--timeout", timeout_s, "--stats-json", &stats_s]);
        args.extend_from_slice(extra);
        let mut proc = dir.spawn_raw("switch", &args);
        assert!(
            proc.wait_for_stderr("members join on", Duration::from_secs(10)),
            "switch did not start:\n{}",
            proc.stderr()
        );
        Switch {
            proc,
            kind: kind.into(),
            path,
            stats,
        }
    }

    /// The switch's own `--sharenet` (`KIND:<dir>/sw`), as `status` takes it.
    pub fn base_spec(&self) -> String {
        format!("{}:{}", self.kind, self.path.display())
    }

    /// The `--sharenet` of the member on port `n` (the port matters for
    /// `fifo:` only: its path names it, `PATH.N`).
    pub fn spec(&self, n: usize) -> String {
        match self.kind.as_str() {
            "fifo" => format!("fifo:{}.{n}", self.path.display()),
            k => format!("{k}:{}", self.path.display()),
        }
    }

    /// Wait until the switch has said ` joined` `n` times in all (30 s at
    /// most; the failure says how many did).
    pub fn wait_joined(&mut self, n: usize) {
        let end = Instant::now() + Duration::from_secs(30);
        while self.proc.stderr().matches(" joined").count() < n {
            assert!(
                Instant::now() < end,
                "only {} of {n} members joined:\n{}",
                self.proc.stderr().matches(" joined").count(),
                self.proc.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait for each of `members` in turn ([`EXIT_LIMIT`] each), then stop
    /// the switch: the members' outcomes in that order, the switch's, and
    /// its stats.
    pub fn finish_members<'p>(
        self,
        members: impl IntoIterator<Item = &'p mut Proc>,
    ) -> (Vec<Outcome>, Outcome, SwitchStats) {
        let outs: Vec<Outcome> = members.into_iter().map(|p| p.finish(EXIT_LIMIT)).collect();
        let (swo, st) = self.stop();
        (outs, swo, st)
    }

    /// Stop it with SIGINT (exit 0, stats written) and read its stats.
    pub fn stop(mut self) -> (Outcome, SwitchStats) {
        self.proc.signal(Signal::SIGINT);
        let out = self.proc.finish(Duration::from_secs(10));
        let text = fs::read_to_string(&self.stats).unwrap_or_default();
        let st = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("switch stats {}: {e}\n{text}", self.stats.display()));
        (out, st)
    }
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
pub fn check_counters_add_up(c: &mut Checks<'_>, s: &SwitchStats) {
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
