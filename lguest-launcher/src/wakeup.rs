//! What one blocking wake-up costs on this machine, measured at connect.
//!
//! `--wait adaptive` spins before it sleeps; how long is worth spinning
//! depends on what a sleep costs when work arrives: the time from the
//! peer's kick to our thread running again. On a 2-vCPU KVM guest that is
//! ~20 µs one way across cores and ~2 µs on one core (shared/LIMITS.md),
//! and it differs from machine to machine and hour to hour, so it is
//! measured rather than assumed.
//!
//! [`probe`] measures it the way the link will pay it: this thread and a
//! helper thread — kept off our CPU, so the wake-up crosses cores as the
//! peer's does — bounce a word over a channel of the
//! transport's own kind (a pipe for `fifo`, a `SOCK_SEQPACKET` socketpair
//! for `unix`, two eventfds for `eventfd`) a few dozen times. Each sample
//! is *our* wake-up alone: the helper, once it has the word, waits
//! [`SETTLE`] (so we are asleep), notes the time and kicks us; we note
//! how long after that we ran. The helper's own wake-up is not in it: it
//! runs on the other CPU, where the peer may be busy (a peer polling for
//! us at the rendezvous), and half a round trip then measured waiting for
//! that CPU — 105–180 µs in one start of five, against 28–73 µs in the
//! others and 30–60 µs for the link's real wake-ups — and `adaptive`
//! then spun through every gap of a 10 kpps stream (5x sleep's CPU). The
//! samples go into a histogram ([`WakeupProbe::hist`]) whose lower
//! quartile calibrates the spin budget ([`WakeupProbe::calibration`]) and
//! whose p50/p99 the stats report (`wakeup_p50_us`, `wakeup_p99_us`).
//! The probe takes about `ROUNDS` round trips: a few milliseconds at
//! connect, never during the run.

use crate::cli::config::Kind;
use hdrhistogram::Histogram;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::{pipe2, read, write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Round trips measured (after `WARMUP`).
pub const ROUNDS: u32 = 32;
/// Round trips not recorded: the first wake-ups pay for page faults and
/// cold caches.
const WARMUP: u32 = 4;
/// How long the helper waits, once it has the word, before it notes the
/// time and kicks us: long enough for us to be asleep in our read.
pub const SETTLE: Duration = Duration::from_micros(30);
/// What the spin budget assumes when the probe cannot run (no threads, no
/// fds): the cross-core figure of shared/LIMITS.md, one way.
pub const FALLBACK: Duration = Duration::from_micros(25);

/// One channel each way between the two threads.
struct Channel {
    /// Ours to read, the helper's to write.
    rx: OwnedFd,
    /// Ours to write, the helper's to read.
    tx: OwnedFd,
    /// The helper's ends.
    far: (OwnedFd, OwnedFd),
    word: usize,
}

fn channel(kind: Kind) -> nix::Result<Channel> {
    match kind {
        Kind::Fifo => {
            let (rx, far_tx) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            let (far_rx, tx) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            Ok(Channel {
                rx,
                tx,
                far: (far_rx, far_tx),
                word: 1,
            })
        }
        Kind::Unix => {
            let (mine, theirs) = socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket,
                None,
                SockFlag::SOCK_CLOEXEC,
            )?;
            Ok(Channel {
                rx: mine.try_clone().map_err(|_| nix::Error::EMFILE)?,
                tx: mine,
                far: (theirs.try_clone().map_err(|_| nix::Error::EMFILE)?, theirs),
                word: 1,
            })
        }
        Kind::Eventfd => {
            let to_us = OwnedFd::from(EventFd::from_flags(EfdFlags::EFD_CLOEXEC)?);
            let to_them = OwnedFd::from(EventFd::from_flags(EfdFlags::EFD_CLOEXEC)?);
            Ok(Channel {
                rx: to_us.try_clone().map_err(|_| nix::Error::EMFILE)?,
                tx: to_them.try_clone().map_err(|_| nix::Error::EMFILE)?,
                far: (to_them, to_us),
                word: 8,
            })
        }
    }
}

/// Nanoseconds since `base` (one clock for both threads).
fn nanos(base: Instant) -> u64 {
    base.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64
}

/// One blocking read of one word (an eventfd read resets its counter).
fn take(fd: &OwnedFd, word: usize) -> nix::Result<()> {
    let mut b = [0u8; 8];
    loop {
        match read(std::os::fd::AsRawFd::as_raw_fd(fd), &mut b[..word]) {
            Ok(0) => return Err(nix::Error::EPIPE),
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn give(fd: &OwnedFd, word: usize) -> nix::Result<()> {
    let one = 1u64.to_ne_bytes();
    loop {
        match write(fd.as_fd(), &one[..word]) {
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Keep the helper off `cpu` (the one the measuring thread is pinned to or
/// runs on), so its wake-ups cross cores like the peer's: left alone, the
/// scheduler wakes a helper on the waker's own CPU, a wake-up several times
/// cheaper than the one the link pays.
fn avoid(cpu: Option<usize>) {
    use nix::sched::{sched_getaffinity, sched_setaffinity};
    let Some(cpu) = cpu else { return };
    if crate::cli::online_cpus() < 2 {
        return;
    }
    let me = nix::unistd::Pid::from_raw(0);
    let Ok(mut set) = sched_getaffinity(me) else {
        return;
    };
    // Every CPU the process may use (a pinned parent's mask is one CPU).
    for c in 0..crate::cli::online_cpus() {
        let _ = set.set(c);
    }
    if set.unset(cpu).is_ok() {
        let _ = sched_setaffinity(me, &set);
    }
}

/// The wake-up cost the probe measured.
#[derive(Debug)]
pub struct WakeupProbe {
    /// One-way wake-up latencies, ns (half of each round trip).
    pub hist: Histogram<u64>,
}

impl WakeupProbe {
    /// No measurement (a wait mode that does not use one).
    pub fn none() -> Self {
        WakeupProbe {
            hist: crate::stats::rtt_histogram(),
        }
    }

    /// The median one-way wake-up, or [`FALLBACK`] when nothing was measured.
    pub fn median(&self) -> Duration {
        self.quantile(0.5)
    }

    /// What calibrates `adaptive`: the lower quartile. Both launchers of a
    /// pair probe at once, each with its helper on the other's CPU, so a
    /// part of the samples waits for a CPU the other's probe holds; the
    /// lower quartile is the wake-up the link pays once both run.
    pub fn calibration(&self) -> Duration {
        self.quantile(0.25)
    }

    fn quantile(&self, q: f64) -> Duration {
        if self.hist.is_empty() {
            return FALLBACK;
        }
        Duration::from_nanos(self.hist.value_at_quantile(q))
    }
}

/// Measure [`ROUNDS`] wake-ups over a channel of `kind` between this thread
/// and a helper kept off `pinned_cpu`. Never fails: a probe that cannot run
/// returns an empty histogram (and [`WakeupProbe::median`] the fallback).
pub fn probe(kind: Kind, pinned_cpu: Option<usize>) -> WakeupProbe {
    let mut hist = crate::stats::rtt_histogram();
    let Ok(ch) = channel(kind) else {
        return WakeupProbe { hist };
    };
    let word = ch.word;
    let (far_rx, far_tx) = ch.far;
    let pinned_cpu = pinned_cpu.or_else(|| nix::sched::sched_getcpu().ok());
    let total = WARMUP + ROUNDS;
    // When the helper kicked us, ns after `base`.
    let base = Instant::now();
    let kicked = std::sync::Arc::new(AtomicU64::new(0));
    let kicked_far = kicked.clone();
    let helper = std::thread::Builder::new()
        .name("wakeup-probe".into())
        .spawn(move || {
            avoid(pinned_cpu);
            for _ in 0..total {
                if take(&far_rx, word).is_err() {
                    return;
                }
                let got = Instant::now();
                while got.elapsed() < SETTLE {
                    std::hint::spin_loop();
                }
                kicked_far.store(nanos(base), Ordering::Release);
                if give(&far_tx, word).is_err() {
                    return;
                }
            }
        });
    let Ok(helper) = helper else {
        return WakeupProbe { hist };
    };
    for i in 0..total {
        if give(&ch.tx, word)
            .and_then(|()| take(&ch.rx, word))
            .is_err()
        {
            // The helper may wait on an eventfd forever: leave it detached.
            return WakeupProbe { hist };
        }
        let woke = nanos(base);
        if i >= WARMUP {
            let one_way = woke.saturating_sub(kicked.load(Ordering::Acquire)).max(1);
            hist.saturating_record(one_way);
        }
    }
    // Every round trip completed, so the helper has returned.
    let _ = helper.join();
    WakeupProbe { hist }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_measures_every_kind_of_channel() {
        for kind in Kind::ALL {
            let p = probe(kind, None);
            assert_eq!(p.hist.len(), u64::from(ROUNDS), "{kind:?}");
            let m = p.median();
            assert!(
                m > Duration::ZERO && m < Duration::from_millis(50),
                "{kind:?}: {m:?}"
            );
            let c = p.calibration();
            assert!(c > Duration::ZERO && c <= m, "{kind:?}: {c:?} vs {m:?}");
        }
    }
}
