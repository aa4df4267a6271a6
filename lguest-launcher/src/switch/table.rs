//! The MAC learning table: which port an address was last seen on.
//!
//! Bounded ([`Table::new`]'s `capacity`) and aged: an entry not refreshed
//! for `aging` is forgotten, so a guest that moved (left one port, came
//! back on another) is found again by flooding. A full table learns
//! nothing new until entries age out or their port leaves; frames to the
//! addresses it could not learn are flooded, never lost.
//!
//! The forwarding thread remembers, per port, the last answer the table
//! gave it ([`Burst`]): a stream's frames all carry the same pair of
//! addresses, so most frames cost two comparisons, not two hash lookups.
//! A remembered answer is used only while the table has not changed since
//! (its [`Table::generation`]: every insert, move and removal counts) and
//! for at most [`REFRESH`]; so a learned address is refreshed, and an aged
//! one noticed, at most that much later than asking every frame would —
//! nothing next to the aging time of minutes.
//!
//! [`Departed`] remembers where the members that left were, so one that
//! comes back gets its port number again (see the module docs of
//! `switch`).

use crate::guest::frame::{is_group, Mac};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a port's remembered answer ([`Burst`]) is used before the
/// table is asked again.
pub const REFRESH: Duration = Duration::from_secs(1);

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
    /// Bumped by every change of where an address lives (insert, move,
    /// removal): a remembered answer older than this is stale.
    pub generation: u64,
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
            generation: 0,
        }
    }

    /// `src` sent a frame on `port` at `now`. Group addresses are never
    /// learned (a forged broadcast source must not capture the broadcast).
    /// True when `src` is new on `port` (first seen, or moved there).
    pub fn learn(&mut self, src: Mac, port: usize, now: Instant) -> bool {
        if is_group(&src) {
            return false;
        }
        if let Some(e) = self.entries.get_mut(&src) {
            let moved = e.0 != port;
            if moved {
                self.learned += 1;
                self.generation += 1;
            }
            *e = (port, now);
            return moved;
        }
        if self.entries.len() >= self.capacity {
            self.expire(now);
            if self.entries.len() >= self.capacity {
                self.full += 1;
                return false;
            }
        }
        self.learned += 1;
        self.generation += 1;
        self.entries.insert(src, (port, now));
        true
    }

    /// The port `dst` was last seen on, unless that is older than the
    /// aging time.
    pub fn lookup(&mut self, dst: &Mac, now: Instant) -> Option<usize> {
        let (port, seen) = *self.entries.get(dst)?;
        if now.saturating_duration_since(seen) > self.aging {
            self.entries.remove(dst);
            self.aged_out += 1;
            self.generation += 1;
            return None;
        }
        Some(port)
    }

    /// Is an answer remembered at `gen`, good `until`, still good at
    /// `now`? (A comparison of instants, not a subtraction: this runs for
    /// every frame.)
    #[inline]
    fn fresh(&self, gen: u64, until: Instant, now: Instant) -> bool {
        gen == self.generation && now < until
    }

    /// [`Table::learn`] `src` on `port`, unless `cache` (that port's)
    /// says it was just learned there and nothing changed since. True
    /// when `src` is new on `port`.
    #[inline]
    pub fn learn_in(&mut self, cache: &mut Burst, src: Mac, port: usize, now: Instant) -> bool {
        if let Some((m, gen, at)) = cache.learned {
            if m == src && self.fresh(gen, at, now) {
                return false;
            }
        }
        let new = self.learn(src, port, now);
        cache.learned = Some((src, self.generation, now + REFRESH));
        new
    }

    /// [`Table::lookup`] `dst`, or the answer `cache` remembers for it.
    #[inline]
    pub fn lookup_in(&mut self, cache: &mut Burst, dst: &Mac, now: Instant) -> Option<usize> {
        if let Some((m, port, gen, at)) = cache.looked_up {
            if m == *dst && self.fresh(gen, at, now) {
                return port;
            }
        }
        let port = self.lookup(dst, now);
        cache.looked_up = Some((*dst, port, self.generation, now + REFRESH));
        port
    }

    /// The addresses learned on `port`.
    pub fn macs_on(&self, port: usize) -> Vec<Mac> {
        self.entries
            .iter()
            .filter(|(_, e)| e.0 == port)
            .map(|(m, _)| *m)
            .collect()
    }

    /// Forget everything learned on `port` (its member left).
    pub fn forget_port(&mut self, port: usize) {
        self.entries.retain(|_, e| e.0 != port);
        self.generation += 1;
    }

    /// Drop every aged entry.
    pub fn expire(&mut self, now: Instant) {
        let aging = self.aging;
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.1) <= aging);
        let gone = (before - self.entries.len()) as u64;
        self.aged_out += gone;
        self.generation += gone;
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

/// The last answers the table gave one port (see the module docs): the
/// source it learned, and the destination it looked up, each with the
/// table's generation and the time it stops being good.
#[derive(Clone, Debug, Default)]
pub struct Burst {
    learned: Option<(Mac, u64, Instant)>,
    looked_up: Option<(Mac, Option<usize>, u64, Instant)>,
}

/// Where members that left were: their addresses and port, kept for the
/// aging time, so a member that comes back can have its port again.
#[derive(Debug)]
pub struct Departed {
    entries: HashMap<Mac, (usize, Instant)>,
    capacity: usize,
    aging: Duration,
}

impl Departed {
    /// At most `capacity` addresses, each kept `aging`.
    pub fn new(capacity: usize, aging: Duration) -> Self {
        Departed {
            entries: HashMap::new(),
            capacity,
            aging,
        }
    }

    /// The member on `port` left at `now`; `macs` were learned there.
    pub fn remember(&mut self, macs: &[Mac], port: usize, now: Instant) {
        let aging = self.aging;
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.1) <= aging);
        for m in macs {
            if self.entries.len() >= self.capacity && !self.entries.contains_key(m) {
                // Full: the oldest record makes room.
                if let Some(old) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.1)
                    .map(|(k, _)| *k)
                {
                    self.entries.remove(&old);
                }
            }
            self.entries.insert(*m, (port, now));
        }
    }

    /// The port `mac` left from, if that is recent; the record is used up.
    pub fn take(&mut self, mac: &Mac, now: Instant) -> Option<usize> {
        let (port, when) = self.entries.remove(mac)?;
        (now.saturating_duration_since(when) <= self.aging).then_some(port)
    }

    /// Is a departed member remembered on `port`?
    pub fn holds(&self, port: usize, now: Instant) -> bool {
        self.entries
            .values()
            .any(|e| e.0 == port && now.saturating_duration_since(e.1) <= self.aging)
    }

    /// Forget the records of `port` (another member has it now).
    pub fn forget_port(&mut self, port: usize) {
        self.entries.retain(|_, e| e.0 != port);
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

    #[test]
    fn a_port_remembers_answers_until_the_table_changes() {
        let t0 = Instant::now();
        let mut t = Table::new(8, Duration::from_secs(10));
        t.learn(mac(1), 0, t0);
        let (mut a, mut b) = (Burst::default(), Burst::default());
        assert_eq!(t.lookup_in(&mut b, &mac(1), t0), Some(0));
        t.learn_in(&mut b, mac(2), 1, t0);
        assert_eq!(t.learned, 2);
        // The same source again: not learned again.
        t.learn_in(&mut b, mac(2), 1, t0);
        assert_eq!(t.learned, 2);
        // Another port's learn that moves the destination is seen.
        t.learn_in(&mut a, mac(1), 3, t0);
        assert_eq!(t.lookup_in(&mut b, &mac(1), t0), Some(3));
        // A remembered miss stays a miss only for the same address.
        assert_eq!(t.lookup_in(&mut b, &mac(9), t0), None);
        assert_eq!(t.lookup_in(&mut b, &mac(2), t0), Some(1));
        // A port that leaves: its addresses are gone for every cache.
        assert_eq!(t.lookup_in(&mut a, &mac(2), t0), Some(1));
        t.forget_port(1);
        assert_eq!(t.lookup_in(&mut a, &mac(2), t0), None);
        // An unchanged table is asked again after REFRESH (aging).
        let later = t0 + Duration::from_secs(11);
        t.learn_in(&mut b, mac(4), 1, t0);
        assert_eq!(t.lookup_in(&mut a, &mac(4), t0), Some(1));
        assert_eq!(t.lookup_in(&mut a, &mac(4), later), None, "aged");
    }

    #[test]
    fn departed_members_are_remembered_for_the_aging_time() {
        let t0 = Instant::now();
        let mut d = Departed::new(2, Duration::from_secs(10));
        d.remember(&[mac(1)], 3, t0);
        assert!(d.holds(3, t0));
        assert!(!d.holds(2, t0));
        assert_eq!(d.take(&mac(1), t0), Some(3));
        assert_eq!(d.take(&mac(1), t0), None, "used up");
        d.remember(&[mac(1), mac(2), mac(3)], 4, t0);
        assert_eq!(d.entries.len(), 2, "bounded");
        let later = t0 + Duration::from_secs(11);
        assert!(!d.holds(4, later));
        assert_eq!(d.take(&mac(3), later), None, "aged");
        d.forget_port(4);
        assert!(!d.holds(4, t0));
    }
}
