//! The one wait loop: work, then re-arm, fence, re-check, and only then
//! sleep, spin or adapt.
//!
//! Every launcher — a synthetic guest's ([`crate::run`]) and a real VM's
//! ([`crate::vhost_user`]) — drives its data path through [`WaitLoop::run`]
//! over a [`Device`]: something that can do one turn of work, arm or disarm
//! the notifications it waits for, say whether work is pending, and sleep.
//!
//! When a turn made no progress the loop idles as the policy says:
//!
//! * [`Wait::Spin`] polls again (and [`Device::tick`] checks every
//!   [`TICK_EVERY`] that the peer lives);
//! * [`Wait::Sleep`] re-enables notifications, re-checks the rings, and only
//!   then sleeps — the classic race: a peer that published just before we
//!   re-enabled did not kick us, so without the re-check we would sleep on
//!   work that is already there;
//! * [`Wait::Adaptive`] spins for a bounded time — the [`SpinBudget`] —
//!   then sleeps.
//!
//! How long `adaptive` spins, and how that adapts, is told in
//! `wait/budget.rs` ([`SpinBudget`]).
//!
//! The loop counts idle periods that ended in work while spinning
//! (`spin_hits`) and sleeps (`sleeps`); see [`WaitCounters`].
//!
//! A device that sleeps elsewhere (a vhost-user backend returns to its
//! event loop) answers [`Slept::Yield`]: the loop returns with the
//! notifications armed, and the next event calls it again.

mod budget;
pub mod latency;

pub use budget::{SpinBudget, MAX_SPIN, MIN_SPIN};

use crate::cli::config::Wait;
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

/// How long `adaptive` spins before sleeping when nothing was measured
/// ([`WaitLoop::new`]): about the cost of one cross-core wake-up on this
/// kind of machine (BENCHMARKS.md). [`WaitLoop::calibrated`] starts from
/// the measured cost instead.
pub const ADAPTIVE_SPIN: Duration = Duration::from_micros(50);
/// How often a busy or spinning loop calls [`Device::tick`] (liveness,
/// deadlines, live stats).
pub const TICK_EVERY: Duration = Duration::from_millis(1);
/// Busy turns between two looks at the clock: reading it costs as much as
/// moving a small packet.
const CLOCK_EVERY: u32 = 64;
/// Idle turns between two looks at the clock while `adaptive` spins
/// (within its budget, which is at least [`MIN_SPIN`]).
const ADAPTIVE_CLOCK_EVERY: u32 = 8;
/// Longest single sleep, so deadlines and liveness are honoured.
pub const MAX_SLEEP: Duration = Duration::from_millis(100);

/// What one turn of work did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// Something moved: go again.
    Busy,
    /// Nothing to do right now.
    Idle,
    /// The work is finished: leave the loop.
    Done,
}

/// How a [`Device::sleep`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slept {
    /// Woken (or timed out): look at the rings again.
    Woke,
    /// The device sleeps in its caller's event loop: return from
    /// [`WaitLoop::run`] with notifications armed.
    Yield,
}

/// How [`WaitLoop::run`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// A turn said [`Turn::Done`].
    Done,
    /// The device yielded to its event loop.
    Yielded,
}

/// A data path the wait loop can drive.
pub trait Device {
    /// Why the device stops (ends the loop).
    type Error;
    /// Do what can be done now.
    fn turn(&mut self) -> Result<Turn, Self::Error>;
    /// Ask every producer we wait on to notify us (`true`, before sleeping)
    /// or not (`false`, while busy).
    fn arm(&mut self, on: bool) -> Result<(), Self::Error>;
    /// Is there work we could do right now? Called after [`Device::arm`]
    /// and a full fence.
    fn has_work(&mut self) -> Result<bool, Self::Error>;
    /// Housekeeping, at least every [`TICK_EVERY`] while busy or spinning
    /// and before each sleep: notice a dead peer, a passed deadline.
    fn tick(&mut self, now: Instant) -> Result<(), Self::Error>;
    /// Sleep until notified or about `max` passed.
    fn sleep(&mut self, max: Duration) -> Result<Slept, Self::Error>;
    /// Work the device will make itself after this long (a paced stream's
    /// next packet), if it knows: `adaptive` does not spin for work that
    /// far off. Default: it does not know.
    fn next_work_in(&self) -> Option<Duration> {
        None
    }
    /// The loop's counters so far, handed over just before each
    /// [`Device::tick`] (live status). Default: not wanted.
    fn counters(&mut self, _: WaitCounters) {}
    /// Notifications sent so far to a peer that had asked for them (a
    /// count that only grows; `None`: not known, or sent whether asked or
    /// not, as `--notify always` does). When it grew over a busy stretch,
    /// the peer was going to sleep: `adaptive` allows for its wake-up
    /// before the work it sends back ([`SpinBudget::slept`]). Default:
    /// not known.
    fn peer_notifications(&self) -> Option<u64> {
        None
    }
}

/// What the wait loop did, for the stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitCounters {
    /// Idle periods that ended in work while spinning (or at the re-check
    /// before a sleep).
    pub spin_hits: u64,
    /// Sleeps (each after a re-check found nothing).
    pub sleeps: u64,
}

/// The wait policy and its state.
#[derive(Debug)]
pub struct WaitLoop {
    policy: Wait,
    spin: SpinBudget,
    idle_since: Option<Instant>,
    /// The current idle period went to sleep (its end is not a spin hit).
    slept: bool,
    /// [`Device::peer_notifications`] when the current idle period began.
    notified_at_idle: Option<u64>,
    /// The busy stretch before the current idle period woke the peer.
    woke_peer: bool,
    last_tick: Option<Instant>,
    turns: u32,
    /// A spin hit's idle period began then; accounted at the next clock
    /// read (the turn after the one that found the work).
    hit_since: Option<Instant>,
    counters: WaitCounters,
}

impl WaitLoop {
    /// A loop that idles as `policy` says; `adaptive` starts from the
    /// fixed [`ADAPTIVE_SPIN`] as its wake-up cost.
    pub fn new(policy: Wait) -> Self {
        Self::calibrated(policy, ADAPTIVE_SPIN)
    }

    /// A loop whose `adaptive` spin starts from a measured wake-up cost
    /// (see [`crate::wakeup::probe`]).
    pub fn calibrated(policy: Wait, wakeup: Duration) -> Self {
        WaitLoop {
            policy,
            spin: SpinBudget::calibrated(wakeup),
            idle_since: None,
            slept: false,
            notified_at_idle: None,
            woke_peer: false,
            last_tick: None,
            turns: 0,
            hit_since: None,
            counters: WaitCounters::default(),
        }
    }

    /// Spin hits and sleeps so far.
    pub fn counters(&self) -> WaitCounters {
        self.counters
    }

    /// The spin budget as it stands.
    pub fn spin_budget(&self) -> SpinBudget {
        self.spin
    }

    /// Drive `dev` until it is done, fails, or yields.
    pub fn run<D: Device>(&mut self, dev: &mut D) -> Result<Exit, D::Error> {
        loop {
            let busy = match dev.turn()? {
                Turn::Done => {
                    // A spin hit not yet accounted still counts.
                    if self.hit_since.take().is_some() {
                        self.counters.spin_hits += 1;
                    }
                    return Ok(Exit::Done);
                }
                Turn::Busy => true,
                Turn::Idle => false,
            };
            self.turns = self.turns.wrapping_add(1);
            // Work found while spinning (a spin hit): the idle period's
            // length feeds the budget, but its clock read waits a turn, so
            // the work found is done first (one clock read, ~30 ns here,
            // on each side of a ping's round trip). The length then counts
            // one busy turn more: nothing against a budget of microseconds.
            if busy && !self.slept && self.hit_since.is_none() {
                if let Some(since) = self.idle_since.take() {
                    self.hit_since = Some(since);
                    continue;
                }
            }
            // A busy turn reads the clock only now and then, except the
            // first after an idle period (its length feeds the budget).
            if busy
                && self.idle_since.is_none()
                && self.hit_since.is_none()
                && !self.turns.is_multiple_of(CLOCK_EVERY)
            {
                continue;
            }
            // Spinning needs the clock only for `tick`: an idle spin turn
            // reads it now and then too (the read costs as much as a turn).
            if !busy
                && self.policy == Wait::Spin
                && self.hit_since.is_none()
                && !self.turns.is_multiple_of(CLOCK_EVERY)
            {
                std::hint::spin_loop();
                continue;
            }
            // `adaptive` times an idle period it is spinning through, but
            // its budget is microseconds and a turn tens of nanoseconds:
            // a look every ADAPTIVE_CLOCK_EVERY turns is as good, and keeps
            // its idle turn as cheap as `spin`'s (the peer's work is seen
            // as soon as it lands, not one clock read later).
            if !busy
                && self.policy == Wait::Adaptive
                && self.idle_since.is_some()
                && !self.slept
                && !self.turns.is_multiple_of(ADAPTIVE_CLOCK_EVERY)
            {
                std::hint::spin_loop();
                continue;
            }
            let now = Instant::now();
            if let Some(since) = self.hit_since.take() {
                self.counters.spin_hits += 1;
                self.spin.spin_hit(now.duration_since(since));
            }
            let last = *self.last_tick.get_or_insert(now);
            if now.duration_since(last) >= TICK_EVERY {
                self.last_tick = Some(now);
                dev.counters(self.counters);
                dev.tick(now)?;
            }
            if busy {
                // Only a period that slept still has its start here: a spin
                // hit's was handed to `hit_since` at the top of the loop.
                if let Some(since) = self.idle_since.take() {
                    self.slept = false;
                    // A paced stream's own next packet is not the peer's
                    // answer.
                    let woke_peer = self.woke_peer && dev.next_work_in().is_none();
                    self.spin.slept(now.duration_since(since), woke_peer);
                }
                continue;
            }
            let since = match self.idle_since {
                Some(since) => since,
                None => {
                    let notified = dev.peer_notifications();
                    self.woke_peer = notified.is_some() && notified != self.notified_at_idle;
                    self.notified_at_idle = notified;
                    *self.idle_since.insert(now)
                }
            };
            let spin_more = match self.policy {
                Wait::Spin => true,
                Wait::Sleep => false,
                // After one sleep the period is a sleeping one: no new spin
                // until work comes (a timed-out sleep sleeps again).
                Wait::Adaptive => {
                    let budget = self.spin.get();
                    !self.slept
                        && now.duration_since(since) < budget
                        && dev.next_work_in().is_none_or(|d| d <= budget)
                }
            };
            if spin_more {
                std::hint::spin_loop();
                continue;
            }
            if !rearm_and_recheck(dev)? {
                self.counters.sleeps += 1;
                self.slept = true;
                if dev.sleep(MAX_SLEEP)? == Slept::Yield {
                    return Ok(Exit::Yielded);
                }
            }
            dev.arm(false)?;
        }
    }
}

/// Re-enable notifications, fence, then re-check: `true` when work is
/// already there (do not sleep). A producer that published before seeing
/// our re-enable did not notify, so we must look again.
pub fn rearm_and_recheck<D: Device>(dev: &mut D) -> Result<bool, D::Error> {
    dev.arm(true)?;
    // Full fence: the re-enable stores must be visible to the peer before
    // we read its indexes (pairs with its fence between publishing and
    // reading our suppression state).
    fence(Ordering::SeqCst);
    dev.has_work()
}

#[cfg(test)]
mod tests;
