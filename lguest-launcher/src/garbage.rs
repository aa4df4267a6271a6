//! What the peer's malformed chains may cost us.
//!
//! Every chain the peer publishes is walked before we know it is garbage,
//! and the walk is ours to pay for: a 32768-entry queue whose every chain
//! loops through the whole table costs ~1e9 descriptor reads per batch if
//! nothing stops it, while the peer pays one avail index store. Three
//! bounds make that cost ours to choose:
//!
//! 1. a chain is walked for at most [`MAX_CHAIN`] descriptors (longer is
//!    called a loop: `virtq::DeviceQueue::read_chain`);
//! 2. one `Copier::poll` takes at most [`POLL_CHAINS`] chains and reads at
//!    most about [`POLL_DESCRIPTORS`] descriptors, then returns, so the wait
//!    loop's housekeeping and (vhost-user) the VM's own events come between
//!    two polls;
//! 3. the descriptors spent on chains we *dropped* are charged to a
//!    [`GarbageBudget`] of [`GARBAGE_PER_WINDOW`] per [`GARBAGE_WINDOW`];
//!    once a window's budget is spent, the copier leaves the peer's ring
//!    alone until the window ends (`Outcome::throttled`): the wait loop
//!    sleeps, and in vhost-user mode the backend lock is released.
//!
//! An honest peer sends no malformed chains, so only bounds 1 and 2 ever
//! touch its traffic, and they are far above what it sends: a Linux guest's
//! longest chain is about 20 descriptors, a synthetic guest's 2. A peer
//! flooding garbage costs us at most [`GARBAGE_PER_WINDOW`] descriptor reads
//! (well under a millisecond) per window, whatever it publishes.
//!
//! Only a drop reads the clock, so the packet path pays nothing for this.

use std::time::{Duration, Instant};

/// Longest chain walked before it is dropped as a loop (the virtio limit is
/// the queue size, up to 32768; no honest driver comes near this).
pub const MAX_CHAIN: u16 = 256;
/// Chains one poll takes at most.
pub const POLL_CHAINS: u16 = 1024;
/// Descriptors one poll reads at most (it stops taking chains once past).
pub const POLL_DESCRIPTORS: usize = 16384;
/// The window the garbage budget is counted over.
pub const GARBAGE_WINDOW: Duration = Duration::from_millis(100);
/// Descriptor reads spent on dropped chains per window, at most.
pub const GARBAGE_PER_WINDOW: usize = 32768;

/// Descriptor reads spent on the peer's dropped chains in the current
/// window, and the pause once they pass the budget.
#[derive(Debug, Default)]
pub struct GarbageBudget {
    window_start: Option<Instant>,
    spent: usize,
    paused_until: Option<Instant>,
}

impl GarbageBudget {
    /// Is the peer's ring off limits right now (budget spent)? Reads the
    /// clock only while a pause is on.
    pub fn paused(&mut self) -> bool {
        match self.paused_until {
            None => false,
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                self.paused_until = None;
                self.window_start = None;
                self.spent = 0;
                false
            }
        }
    }

    /// As [`GarbageBudget::paused`], without ending a pause that is over
    /// (for a caller holding `&self`).
    pub fn is_paused(&self) -> bool {
        self.paused_until
            .is_some_and(|until| Instant::now() < until)
    }

    /// Charge `descriptors` read for a chain we dropped. True when that
    /// spent the window's budget: stop taking the peer's chains.
    pub fn charge(&mut self, descriptors: usize) -> bool {
        let now = Instant::now();
        let start = *self.window_start.get_or_insert(now);
        if now.duration_since(start) >= GARBAGE_WINDOW {
            self.window_start = Some(now);
            self.spent = 0;
        }
        self.spent += descriptors;
        if self.spent >= GARBAGE_PER_WINDOW {
            let start = self.window_start.unwrap_or(now);
            self.paused_until = Some(start + GARBAGE_WINDOW);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_budget_pauses_once_spent_and_resumes_after_the_window() {
        let mut b = GarbageBudget::default();
        assert!(!b.paused());
        assert!(!b.charge(GARBAGE_PER_WINDOW - 1));
        assert!(!b.paused());
        assert!(b.charge(1), "the last descriptor of the budget pauses");
        assert!(b.paused());
        std::thread::sleep(GARBAGE_WINDOW + Duration::from_millis(5));
        assert!(!b.paused(), "a new window, a new budget");
        assert!(!b.charge(GARBAGE_PER_WINDOW / 2));
    }
}
