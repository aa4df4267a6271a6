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
//! for `unix`, two eventfds for `eventfd`) a few dozen times. Half of each
//! round trip is one wake-up; the samples go into a histogram
//! ([`WakeupProbe::hist`]) whose median calibrates the spin budget and
//! whose p50/p99 the stats report (`wakeup_p50_us`, `wakeup_p99_us`).
//! The probe takes about `ROUNDS` round trips: a few milliseconds at
//! connect, never during the run.

use crate::cli::config::Kind;
use hdrhistogram::Histogram;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::{pipe2, read, write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// Round trips measured (after `WARMUP`).
pub const ROUNDS: u32 = 32;
/// Round trips not recorded: the first wake-ups pay for page faults and
/// cold caches.
const WARMUP: u32 = 4;
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
        if self.hist.is_empty() {
            return FALLBACK;
        }
        Duration::from_nanos(self.hist.value_at_quantile(0.5))
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
    let helper = std::thread::Builder::new()
        .name("wakeup-probe".into())
        .spawn(move || {
            avoid(pinned_cpu);
            for _ in 0..total {
                if take(&far_rx, word)
                    .and_then(|()| give(&far_tx, word))
                    .is_err()
                {
                    return;
                }
            }
        });
    let Ok(helper) = helper else {
        return WakeupProbe { hist };
    };
    for i in 0..total {
        let t = Instant::now();
        if give(&ch.tx, word)
            .and_then(|()| take(&ch.rx, word))
            .is_err()
        {
            // The helper may wait on an eventfd forever: leave it detached.
            return WakeupProbe { hist };
        }
        if i >= WARMUP {
            let one_way = (t.elapsed().as_nanos() / 2).clamp(1, u64::MAX as u128) as u64;
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
        }
    }
}
