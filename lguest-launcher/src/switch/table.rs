//! The MAC learning table: which port an address was last seen on.
//!
//! Bounded ([`Table::new`]'s `capacity`) and aged: an entry not refreshed
//! for `aging` is forgotten, so a guest that moved (left one port, came
//! back on another) is found again by flooding. A full table learns
//! nothing new until entries age out or their port leaves; frames to the
//! addresses it could not learn are flooded, never lost.

use crate::guest::frame::{is_group, Mac};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Where each learned MAC address lives.
#[derive(Debug)]
pub struct Table {
    entries: HashMap<Mac, (usize, Instant)>,
    capacity: usize,
    aging: Duration,
    /// Addresses learned (new or moved).
    pub learned: u64,
    /// Entries forgotten because they aged out.
    pub aged_out: u64,
    /// Addresses not learned because the table was full.
    pub full: u64,
}

impl Table {
    /// An empty table of at most `capacity` entries, each kept `aging`
    /// after it was last seen.
    pub fn new(capacity: usize, aging: Duration) -> Self {
        Table {
            entries: HashMap::with_capacity(capacity.min(4096)),
            capacity,
            aging,
            learned: 0,
            aged_out: 0,
            full: 0,
        }
    }

    /// `src` sent a frame on `port` at `now`. Group addresses are never
    /// learned (a forged broadcast source must not capture the broadcast).
    pub fn learn(&mut self, src: Mac, port: usize, now: Instant) {
        if is_group(&src) {
            return;
        }
        if let Some(e) = self.entries.get_mut(&src) {
            if e.0 != port {
                self.learned += 1;
            }
            *e = (port, now);
            return;
        }
        if self.entries.len() >= self.capacity {
            self.expire(now);
            if self.entries.len() >= self.capacity {
                self.full += 1;
                return;
            }
        }
        self.learned += 1;
        self.entries.insert(src, (port, now));
    }

    /// The port `dst` was last seen on, unless that is older than the
    /// aging time.
    pub fn lookup(&mut self, dst: &Mac, now: Instant) -> Option<usize> {
        let (port, seen) = *self.entries.get(dst)?;
        if now.saturating_duration_since(seen) > self.aging {
            self.entries.remove(dst);
            self.aged_out += 1;
            return None;
        }
        Some(port)
    }

    /// Forget everything learned on `port` (its member left).
    pub fn forget_port(&mut self, port: usize) {
        self.entries.retain(|_, e| e.0 != port);
    }

    /// Drop every aged entry.
    pub fn expire(&mut self, now: Instant) {
        let aging = self.aging;
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.1) <= aging);
        self.aged_out += (before - self.entries.len()) as u64;
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> Mac {
        [2, 0, 0, 0, 0, n]
    }

    #[test]
    fn learns_moves_ages_and_stays_bounded() {
        let t0 = Instant::now();
        let mut t = Table::new(2, Duration::from_secs(10));
        t.learn(mac(1), 0, t0);
        t.learn(mac(2), 1, t0);
        assert_eq!(t.lookup(&mac(1), t0), Some(0));
        t.learn(mac(1), 3, t0);
        assert_eq!(t.lookup(&mac(1), t0), Some(3), "moved");
        t.learn(mac(3), 2, t0);
        assert_eq!((t.len(), t.full), (2, 1), "full: not learned");
        assert_eq!(t.lookup(&mac(3), t0), None);
        let later = t0 + Duration::from_secs(11);
        assert_eq!(t.lookup(&mac(2), later), None, "aged out");
        t.learn(mac(3), 2, later);
        assert_eq!(t.lookup(&mac(3), later), Some(2));
        t.learn([0xff; 6], 1, later);
        assert_eq!(t.lookup(&[0xff; 6], later), None, "broadcast never learned");
        t.forget_port(2);
        assert_eq!(t.lookup(&mac(3), later), None);
    }
}
