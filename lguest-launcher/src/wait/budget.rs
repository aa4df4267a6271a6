//! How long `adaptive` spins: the [`SpinBudget`].
//! Spinning costs CPU for as long as it lasts; sleeping costs one wake-up
//! (W: the time from the peer's kick to our thread running again) when
//! work arrives. The classic rule for this choice (ski rental) is to spin
//! about as long as a wake-up costs: then an idle period never costs more
//! than twice what knowing the future would. So the budget starts at W,
//! *measured at connect* for this transport on this machine
//! ([`crate::wakeup::probe`]: a few dozen round trips over a channel of the
//! transport's kind), and then follows the arrival of work. Each idle
//! period ends either while spinning (a *spin hit*, after a gap `g`) or
//! after a sleep (the gap `g` then includes the wake-up, so the work
//! arrived at about `g - W`):
//!
//! * a spin hit late in the budget (`g > budget/2`): grow by 1/4 — work
//!   comes near the edge, a little more margin keeps it a hit;
//! * a spin hit early: keep the budget;
//! * a sleep whose work came just after the budget (`g - W <= 2 budget`):
//!   grow by 1/2 — a longer spin would have saved a wake-up;
//! * a sleep whose work came later than the most we would ever spin
//!   (`g - W > 8 W`), or never: shrink by 1/4 — the link is idle, the spin
//!   was wasted CPU;
//! * a sleep in between: keep the budget. A sleeper asks to be woken later
//!   than a spinner would look (a stream asks for half its TX ring back),
//!   so a gap that ends in a sleep is longer *because* we slept; shrinking
//!   on it would feed on itself down to the floor (measured: a stream's
//!   budget fell to 1 µs and its rate by half).
//!
//! The budget stays within `W` and `8 W` (and within [`MIN_SPIN`] and
//! [`MAX_SPIN`]): a burst of hits cannot turn `adaptive` into `spin`, and
//! it never spins less than one wake-up costs — below that, a sleep costs
//! more latency than the spin it saves (and, measured, pairs of sleepers
//! wake each other in cascades whose gaps drive a lower floor down to
//! nothing: a stream's rate halved).

use std::time::Duration;

/// The least `adaptive` spins before a sleep.
pub const MIN_SPIN: Duration = Duration::from_micros(1);
/// The most `adaptive` spins before a sleep, however slow wake-ups are.
pub const MAX_SPIN: Duration = Duration::from_millis(1);
/// The budget's ceiling, in wake-up costs.
const MAX_SPIN_WAKEUPS: u32 = 8;

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
    /// Start at one wake-up cost `wakeup`, bounded by that cost (at least
    /// [`MIN_SPIN`]) and `8 wakeup` (at most [`MAX_SPIN`]).
    pub fn calibrated(wakeup: Duration) -> Self {
        let floor = wakeup.clamp(MIN_SPIN, MAX_SPIN);
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
    /// (spin, sleep and wake-up included).
    pub fn slept(&mut self, gap: Duration) {
        let arrival = gap.saturating_sub(self.wakeup);
        if arrival <= self.budget * 2 {
            self.set(self.budget + self.budget / 2);
        } else if arrival > self.ceiling {
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
        assert_eq!(b.bounds(), (W, W * 8));
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
            b.slept(Duration::from_millis(10));
            assert!(b.get() <= last, "never grows on long sleeps");
            last = b.get();
        }
        assert_eq!(b.get(), W, "down to one wake-up cost, not below");
    }

    #[test]
    fn spin_budget_grows_when_work_comes_just_after_it() {
        let mut b = SpinBudget::calibrated(W);
        let before = b.get();
        // Work came 5 µs after the budget ran out (plus the wake-up).
        b.slept(before + Duration::from_micros(5) + W);
        assert!(b.get() > before, "{:?} -> {:?}", before, b.get());
        // Hits late in the budget grow it too; early hits leave it.
        let mid = b.get();
        b.spin_hit(mid / 10);
        assert_eq!(b.get(), mid);
        b.spin_hit(mid * 9 / 10);
        assert!(b.get() > mid);
    }

    #[test]
    fn spin_budget_holds_when_a_sleep_ended_between_budget_and_ceiling() {
        let mut b = SpinBudget::calibrated(W);
        let before = b.get();
        // Work 4 W after the budget: longer than a spin would wait, shorter
        // than an idle link -- the sleep itself may have made it late.
        b.slept(before + W * 4 + W);
        assert_eq!(b.get(), before);
    }

    #[test]
    fn spin_budget_is_bounded_above() {
        let mut b = SpinBudget::calibrated(W);
        for _ in 0..100 {
            let g = b.get();
            b.slept(g + W);
            b.spin_hit(b.get());
        }
        assert_eq!(b.get(), W * 8, "capped at 8 wake-ups");
    }
}
