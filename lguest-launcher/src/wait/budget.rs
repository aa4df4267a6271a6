//! How long `adaptive` spins: the [`SpinBudget`].
//! Spinning costs CPU for as long as it lasts; sleeping costs one wake-up
//! (W: the time from the peer's kick to our thread running again) when
//! work arrives. The classic rule for this choice (ski rental) is to spin
//! about as long as a wake-up costs: then an idle period never costs more
//! than twice what knowing the future would. So the budget starts at W,
//! *measured at connect* for this transport on this machine
//! ([`crate::wakeup::probe`]: the lower quartile of a few dozen wake-ups
//! over a channel of the transport's kind), and then follows the arrival
//! of work. Each idle
//! period ends either while spinning (a *spin hit*, after a gap `g`) or
//! after a sleep (the gap `g` then includes the wake-up, so the work
//! arrived at about `g - W`):
//!
//! * a spin hit late in the budget (`g > budget/2`): grow by 1/4 — work
//!   comes near the edge, a little more margin keeps it a hit;
//! * a spin hit early: keep the budget;
//! * a sleep whose work came within one wake-up cost (`g - W <= W`): grow
//!   by 1/2 — spinning that long costs less than the wake-up it saves (a
//!   busy stream's receiver idles a few microseconds while the sender
//!   refills; from the floor the budget grows until those are spin hits).
//!   When the busy stretch before the idle period woke the peer (it had
//!   asked to be notified, so it was going to sleep), the work it sends
//!   back comes after *its* wake-up as well: the arrival is `g - 2W`.
//!   Without that, two adaptive sides at full rate could hold each other
//!   in a sleeping mode: each one's work came a peer's wake-up late, so
//!   each shrank its budget to the floor and slept again (measured: one
//!   64 B stream in five at 4.8–8.6 Mpps with 5,000–15,000 sleeps, the
//!   budget at its floor);
//! * a sleep whose work came later than one wake-up cost (`g - W > W`), or
//!   never: shrink by 1/4 — spinning until it came would have cost more CPU
//!   than sleeping did, so at a steady low rate (a packet every few
//!   wake-up costs) the spin melts away and `adaptive` costs what `sleep`
//!   costs (measured at 10 kpps: 3x sleep's CPU per packet with a floor of
//!   one wake-up cost, since every gap paid a whole wasted spin).
//!
//! A device that knows when its own next work is due (a paced stream:
//! [`crate::wait::Device::next_work_in`]) does not spin for work further
//! off than the budget; it sleeps until then.
//!
//! The budget stays within `W/8` and `8 W` (and within [`MIN_SPIN`] and
//! [`MAX_SPIN`]): a burst of hits cannot turn `adaptive` into `spin`, and a
//! run of sleeps cannot turn it into `sleep` for the short gaps of a busy
//! link. The floor is not lower because a sleeper asks to be woken later
//! than a spinner would look (a stream asks for half its TX ring back): a
//! pair of sleepers can wake each other in cascades whose long gaps drive
//! the budget down further and further (measured with a floor of 1 µs: a
//! stream's rate halved). `W/8` keeps the floor above nothing, and the
//! first rule above grows the budget back within a few sleeps once gaps
//! are shorter than a wake-up cost (measured: a full-rate 64 B stream's
//! receiver at 95–170 µs, sleeping about once per 5,000 packets).

use std::time::Duration;

/// The least `adaptive` spins before a sleep.
pub const MIN_SPIN: Duration = Duration::from_micros(1);
/// The most `adaptive` spins before a sleep, however slow wake-ups are.
pub const MAX_SPIN: Duration = Duration::from_millis(1);
/// The budget's ceiling, in wake-up costs.
const MAX_SPIN_WAKEUPS: u32 = 8;
/// The budget's floor is a wake-up cost divided by this.
const MIN_SPIN_FRACTION: u32 = 8;

/// How long `adaptive` spins before it sleeps: calibrated from the
/// wake-up cost and adjusted from the arrival of work (the rule is in the
/// module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpinBudget {
    budget: Duration,
    wakeup: Duration,
    floor: Duration,
    ceiling: Duration,
}

impl SpinBudget {
    /// Start at one wake-up cost `wakeup`, bounded by `wakeup / 8` (at
    /// least [`MIN_SPIN`]) and `8 wakeup` (at most [`MAX_SPIN`]).
    pub fn calibrated(wakeup: Duration) -> Self {
        let floor = (wakeup / MIN_SPIN_FRACTION).clamp(MIN_SPIN, MAX_SPIN);
        let ceiling = (wakeup * MAX_SPIN_WAKEUPS).clamp(floor, MAX_SPIN);
        SpinBudget {
            budget: wakeup.clamp(floor, ceiling),
            wakeup,
            floor,
            ceiling,
        }
    }

    /// Spin this long before sleeping.
    pub fn get(&self) -> Duration {
        self.budget
    }

    /// The wake-up cost it was calibrated with.
    pub fn wakeup(&self) -> Duration {
        self.wakeup
    }

    /// The bounds: `(floor, ceiling)`.
    pub fn bounds(&self) -> (Duration, Duration) {
        (self.floor, self.ceiling)
    }

    fn set(&mut self, d: Duration) {
        self.budget = d.clamp(self.floor, self.ceiling);
    }

    /// An idle period ended in work while spinning, `gap` after it began.
    pub fn spin_hit(&mut self, gap: Duration) {
        if gap > self.budget / 2 {
            self.set(self.budget + self.budget / 4);
        }
    }

    /// An idle period ended in work after a sleep, `gap` after it began
    /// (spin, sleep and wake-up included). `woke_peer`: the busy stretch
    /// before it notified a peer that had asked to be woken, so the work
    /// that peer sends back came a wake-up of its own later, too.
    pub fn slept(&mut self, gap: Duration, woke_peer: bool) {
        let wakeups = if woke_peer { 2 } else { 1 };
        let arrival = gap.saturating_sub(self.wakeup * wakeups);
        if arrival <= self.wakeup {
            self.set(self.budget + self.budget / 2);
        } else {
            self.set(self.budget - self.budget / 4);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_micros(20);

    #[test]
    fn spin_budget_starts_at_the_measured_wakeup_cost() {
        let b = SpinBudget::calibrated(W);
        assert_eq!(b.get(), W);
        assert_eq!(b.bounds(), (W / 8, W * 8));
        // Absurd measurements stay bounded.
        assert_eq!(SpinBudget::calibrated(Duration::ZERO).get(), MIN_SPIN);
        assert_eq!(
            SpinBudget::calibrated(Duration::from_secs(1)).get(),
            MAX_SPIN
        );
    }

    #[test]
    fn spin_budget_shrinks_when_spins_never_hit() {
        let mut b = SpinBudget::calibrated(W);
        // Grown first (late hits), so there is room to shrink.
        for _ in 0..20 {
            b.spin_hit(b.get());
        }
        assert_eq!(b.get(), W * 8);
        let mut last = b.get();
        // An idle link: every period sleeps and work comes 10 ms later.
        for _ in 0..100 {
            b.slept(Duration::from_millis(10), false);
            assert!(b.get() <= last, "never grows on long sleeps");
            last = b.get();
        }
        assert_eq!(b.get(), W / 8, "down to the floor, not below");
    }

    #[test]
    fn spin_budget_grows_when_work_comes_just_after_it() {
        let mut b = SpinBudget::calibrated(W);
        for _ in 0..5 {
            b.slept(Duration::from_millis(10), false);
        }
        let before = b.get();
        // Work came 1 µs after the budget ran out (plus the wake-up).
        b.slept(before + Duration::from_micros(1) + W, false);
        assert!(b.get() > before, "{:?} -> {:?}", before, b.get());
        // Hits late in the budget grow it too; early hits leave it.
        let mid = b.get();
        b.spin_hit(mid / 10);
        assert_eq!(b.get(), mid);
        b.spin_hit(mid * 9 / 10);
        assert!(b.get() > mid);
    }

    #[test]
    fn spin_budget_grows_from_the_floor_until_short_gaps_are_spin_hits() {
        let mut b = SpinBudget::calibrated(W);
        for _ in 0..40 {
            b.slept(Duration::from_millis(10), false);
        }
        assert_eq!(b.get(), W / 8);
        // A busy link's gaps: work half a wake-up cost after the idle began.
        let gap = W / 2;
        let mut sleeps = 0;
        while b.get() < gap {
            b.slept(gap + W, false);
            sleeps += 1;
        }
        assert!(sleeps <= 4, "{sleeps} sleeps to grow past {gap:?}");
    }

    #[test]
    fn spin_budget_grows_when_the_work_waited_for_the_woken_peer() {
        // Two adaptive sides at full rate, each at its floor: our work came
        // one wake-up of the peer (which we had just woken) after our own
        // sleep began, plus ours. Counted as late it keeps the floor; as
        // the peer's wake-up it grows until the peer's wake-up is spun
        // through.
        let gap = W * 2 + Duration::from_micros(2);
        let mut b = SpinBudget::calibrated(W);
        for _ in 0..20 {
            b.slept(Duration::from_millis(10), false);
        }
        assert_eq!(b.get(), W / 8);
        for _ in 0..20 {
            b.slept(gap, false);
        }
        assert_eq!(b.get(), W / 8, "late by a wake-up of its own: stays down");
        let mut sleeps = 0;
        while b.get() < W + Duration::from_micros(2) {
            b.slept(gap, true);
            sleeps += 1;
        }
        assert!(
            sleeps <= 6,
            "{sleeps} sleeps to spin past the peer's wake-up"
        );
    }

    #[test]
    fn spin_budget_shrinks_at_a_steady_low_rate() {
        // A packet every 3 wake-up costs: each sleep's work came 2 W after
        // it began (less the wake-up), more than a spin is worth.
        let mut b = SpinBudget::calibrated(W);
        for _ in 0..50 {
            b.slept(W * 3, false);
        }
        assert_eq!(b.get(), W / 8);
    }

    #[test]
    fn spin_budget_is_bounded_above() {
        let mut b = SpinBudget::calibrated(W);
        for _ in 0..100 {
            b.slept(W, false);
            b.spin_hit(b.get());
        }
        assert_eq!(b.get(), W * 8, "capped at 8 wake-ups");
    }
}
