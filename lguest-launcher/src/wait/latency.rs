//! Wake-up latency measured during the run: from the peer's kick to our
//! thread running again.
//!
//! The connect-time probe ([`crate::wakeup`]) measures what a wake-up costs
//! over a private channel; this measures what the link's own wake-ups
//! cost while it runs. The two ends are in two processes, so the moment of
//! the kick has to travel: just before a launcher writes a notification
//! that reaches the peer ([`crate::run::notify`], `Notify::Sent`) it
//! stores `CLOCK_MONOTONIC` (one clock for every process of the machine)
//! in its *kick stamp*, an 8-byte word in a small sealed memfd of its own
//! ([`KickStamp`]), found by the peer through the symlink
//! `PATH.kick.PID` → `/proc/PID/fd/N` beside the rendezvous path.
//!
//! When our wait ends with a notification (each one counted in `wakeups`)
//! we read the peer's stamp with one `pread(2)` ([`PeerStamp`]; a read,
//! not a mapping: a peer that truncates its file makes the read come up
//! short, never a SIGBUS) and record `now - max(stamp, sleep start)` in a
//! fixed array of log2 buckets ([`record`]): entry *i* counts latencies in
//! `[2^i, 2^(i+1))` ns. A kick sent before we went to sleep counts from the
//! sleep's start (the wait returned at once); a stamp not newer than the
//! last wake-up's (the kick was already consumed), one from the future, a
//! latency over a second, or a peer without a stamp (a switch, an older
//! build) count as `wakeup_latency_unstamped` instead. So the histogram's
//! counts plus `wakeup_latency_unstamped` equal `wakeups`.
//!
//! When the peer kicked twice while we slept, the stamp is the second
//! kick's: the latency is from the last kick before we ran. The cost is a
//! clock read and a store per notification sent, and a clock read and a
//! `pread` per notified wake-up; nothing per packet.

use crate::memory::{GuestMemory, Region};
use crate::stats::Stats;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Buckets of the histogram: 2^40 ns is 18 minutes.
pub const BUCKETS: usize = 40;
/// A latency longer than this is not a wake-up we measured (a stale stamp).
const MAX_LATENCY_NS: u64 = 1_000_000_000;

/// Nanoseconds of `CLOCK_MONOTONIC`, the clock every process shares.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The symlink naming launcher `pid`'s kick stamp beside rendezvous `path`.
pub fn stamp_link(path: &Path, pid: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".kick.{pid}"));
    PathBuf::from(s)
}

/// Our kick stamp: a sealed memfd the peer reads, and its symlink.
pub struct KickStamp {
    mem: GuestMemory,
    link: PathBuf,
}

static OURS: OnceLock<KickStamp> = OnceLock::new();

impl Drop for KickStamp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
    }
}

/// Publish this process's kick stamp beside rendezvous `path` (before the
/// rendezvous, so the peer finds it once it knows our pid). Without it
/// (no memfd, a read-only directory) the peer's wake-ups count as
/// unstamped; the run goes on.
pub fn publish(path: &Path) {
    let pid = std::process::id();
    let Ok(mem) = GuestMemory::create("kick", 4096) else {
        return;
    };
    let link = stamp_link(path, pid);
    let _ = std::fs::remove_file(&link); // a dead launcher's, same pid
    let target = format!("/proc/{pid}/fd/{}", mem.raw_fd());
    if std::os::unix::fs::symlink(target, &link).is_ok() {
        let _ = OURS.set(KickStamp { mem, link });
    }
}

/// Remove our stamp's symlink (at exit; the memfd goes with the process).
pub fn unpublish() {
    if let Some(k) = OURS.get() {
        let _ = std::fs::remove_file(&k.link);
    }
}

/// Stamp "a kick leaves now": called just before a notification is written.
#[inline]
pub fn mark() {
    if let Some(k) = OURS.get() {
        let _ = write_stamp(k.mem.region(), monotonic_ns());
    }
}

fn write_stamp(r: &Region, ns: u64) -> Result<(), crate::memory::OutOfBounds> {
    r.write("kick stamp", 0, &ns.to_ne_bytes())
}

/// The peer's kick stamp, opened once per link.
pub struct PeerStamp {
    file: File,
    /// The stamp the last wake-up used (a stamp not newer was consumed).
    last: u64,
}

impl PeerStamp {
    /// Open launcher `pid`'s stamp beside rendezvous `path`; `None` when it
    /// has none (a switch, an older build).
    /// Opened without blocking and without taking a terminal, and only a
    /// regular file (a memfd is one) is kept: a hostile peer that points
    /// its link at a FIFO or a tty gets no stamps, and no hang.
    pub fn open(path: &Path, pid: u32) -> Option<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
            .open(stamp_link(path, pid))
            .ok()?;
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        Some(PeerStamp { file, last: 0 })
    }

    fn read(&self) -> Option<u64> {
        let mut b = [0u8; 8];
        self.file.read_exact_at(&mut b, 0).ok()?;
        Some(u64::from_ne_bytes(b))
    }
}

/// A notified wake-up at `woke` (monotonic ns) after a sleep that began at
/// `slept` : count it in `stats` (see the module docs).
pub fn record(stats: &mut Stats, peer: Option<&mut PeerStamp>, slept: u64, woke: u64) {
    let Some(peer) = peer else {
        stats.wakeup_latency_unstamped += 1;
        return;
    };
    let stamp = peer.read().unwrap_or(0);
    if stamp <= peer.last || stamp > woke {
        stats.wakeup_latency_unstamped += 1;
        return;
    }
    peer.last = stamp;
    let ns = woke - stamp.max(slept);
    if ns > MAX_LATENCY_NS {
        stats.wakeup_latency_unstamped += 1;
        return;
    }
    add(&mut stats.wakeup_latency_log2_ns, ns);
}

/// Count `ns` in its log2 bucket.
pub fn add(hist: &mut Vec<u64>, ns: u64) {
    if hist.len() < BUCKETS {
        hist.resize(BUCKETS, 0);
    }
    let i = (63 - ns.max(1).leading_zeros() as usize).min(BUCKETS - 1);
    hist[i] += 1;
}

/// The `q` quantile of a log2 histogram, as the upper bound of its bucket,
/// microseconds; `None` when it is empty.
pub fn quantile_us(hist: &[u64], q: f64) -> Option<f64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let want = ((total as f64 * q).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= want {
            return Some((1u64 << (i + 1)) as f64 / 1000.0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_log2_of_nanoseconds() {
        let mut h = Vec::new();
        for ns in [0, 1, 2, 3, 4, 1023, 1024, 50_000] {
            add(&mut h, ns);
        }
        assert_eq!(h.len(), BUCKETS);
        assert_eq!(h[0], 2); // 0 and 1
        assert_eq!(h[1], 2); // 2, 3
        assert_eq!(h[2], 1); // 4
        assert_eq!(h[9], 1); // 1023
        assert_eq!(h[10], 1); // 1024
        assert_eq!(h[15], 1); // 50 µs: 2^15 = 32768 .. 65535
        assert_eq!(quantile_us(&h, 1.0), Some(65.536));
        assert_eq!(quantile_us(&[], 0.5), None);
    }

    #[test]
    fn a_stamp_is_used_once_and_counts_from_the_later_of_kick_and_sleep() {
        let dir = tempfile_dir();
        let path = dir.join("l");
        publish(&path);
        let mut peer = PeerStamp::open(&path, std::process::id()).expect("our own stamp");
        let mut s = Stats::default();
        let t0 = monotonic_ns();
        write_stamp(OURS.get().unwrap().mem.region(), t0).unwrap();
        // Kicked after we slept: counts from the kick.
        record(&mut s, Some(&mut peer), t0 - 10_000, t0 + 5_000);
        assert_eq!(s.wakeup_latency_log2_ns[12], 1); // 5000 ns
                                                     // The same stamp again: consumed, unstamped.
        record(&mut s, Some(&mut peer), t0, t0 + 9_000);
        assert_eq!(s.wakeup_latency_unstamped, 1);
        // Kicked before we slept: counts from the sleep.
        write_stamp(OURS.get().unwrap().mem.region(), t0 + 10).unwrap();
        record(&mut s, Some(&mut peer), t0 + 1_000_000, t0 + 1_000_100);
        assert_eq!(s.wakeup_latency_log2_ns[6], 1); // 100 ns
                                                    // No peer stamp at all.
        record(&mut s, None, t0, t0 + 1);
        assert_eq!(s.wakeup_latency_unstamped, 2);
        // A link to something other than a regular file is refused.
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let fake = stamp_link(&path, 1);
        std::os::unix::fs::symlink(&fifo, &fake).unwrap();
        assert!(PeerStamp::open(&path, 1).is_none(), "a FIFO is no stamp");
        unpublish();
        assert!(!stamp_link(&path, std::process::id()).exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("sharenet-latency-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
