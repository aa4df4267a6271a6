//! The driver side of a ring in our own memory (the synthetic guest).

use super::layout::Offsets;
use super::{
    vring_need_event, NotifyMode, RingError, Seg, VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_NEXT,
    VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY,
};
use crate::memory::Region;
use parts::RingParts;
use std::sync::atomic::{fence, Ordering};
use transport::RingInfo;

mod burst;
pub use burst::{Accept, Heads};
mod parts;

/// How many posts ahead [`DriverQueue::add_slot`] prefetches a slot's
/// first line for writing (see `memory/region/prefetch.rs`): far enough
/// that a line crossing between CPUs (60–300 ns here) arrives before the
/// store that needs it.
const PREFETCH_AHEAD: usize = 8;

/// The driver side of a ring in our own memory (our synthetic guest).
pub struct DriverQueue {
    mem: Region,
    off: Offsets,
    /// Free descriptor ids, a stack. [`DriverQueue::reap_used`] pushes a
    /// batch reversed, so a stream that reuses what it reaped posts its
    /// buffers in the order it posted them last time: starting from 0, 1,
    /// 2, ... a buffer tied to its slot keeps walking its slots upwards
    /// (see BENCHMARKS.md, "Spread and adaptive").
    free: Vec<u16>,
    /// Local shadow of the chains we posted: the `next` link of each
    /// descriptor and the length of each in-flight chain by head (0: not in
    /// flight). Chains are freed from this shadow, never from the shared
    /// table, which the peer could scribble on.
    next: Vec<u16>,
    chain_len: Vec<u16>,
    /// What we last wrote to each descriptor (the table starts zeroed).
    /// [`DriverQueue::add_slot`] skips a store that would write the same
    /// 16 bytes again: a buffer tied to its slot with a constant length is
    /// every packet of a stream, and an unwritten descriptor stays shared
    /// in the device's cache instead of moving back and forth per packet.
    /// A peer that scribbles on our table gains nothing from this: it could
    /// scribble just after a store as well, and whoever reads the table as
    /// the device checks every field of every read.
    written: Vec<u128>,
    in_flight: u16,
    next_avail: u16,
    last_used: u16,
    /// The device's used index as last loaded (and checked): entries up to
    /// it are popped without loading the shared index again, so a batch
    /// costs one acquire load, not one per entry.
    used_seen: u16,
    /// The avail index we last published (`None` until our first
    /// publication reads it from the ring): we are its only writer, so
    /// [`DriverQueue::publish`] takes the old value from here rather than
    /// from the shared field, which a peer mapping our memory could have
    /// scribbled on.
    avail_published: Option<u16>,
    /// `new` found the ring's avail and used parts inside `mem`, aligned,
    /// with a power-of-two size: their entries are then accessed without a
    /// bounds check per access ([`RingParts`]). Always the case for the
    /// layouts we make; a ring given otherwise is served with the checks.
    in_bounds: bool,
}

impl DriverQueue {
    /// Take over a zeroed ring at `info` in `mem`.
    pub fn new(mem: Region, info: &RingInfo) -> Self {
        let off = Offsets::new(info);
        let in_bounds = info.size.is_power_of_two()
            && info.size <= 32768
            && mem.contains(info.avail, info.avail_bytes(), 2)
            && mem.contains(info.used, info.used_bytes(), 4);
        DriverQueue {
            mem,
            off,
            free: (0..off.size).rev().collect(),
            next: vec![0; off.size as usize],
            chain_len: vec![0; off.size as usize],
            written: vec![0; off.size as usize],
            in_flight: 0,
            next_avail: 0,
            last_used: 0,
            used_seen: 0,
            avail_published: None,
            in_bounds,
        }
    }

    /// Descriptors not in flight.
    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Chains given to the device and not yet returned.
    pub fn in_flight(&self) -> u16 {
        self.in_flight
    }

    /// Post a chain of `(offset, len)` buffers, all device-readable or all
    /// device-writable, without publishing it. Returns the head id, or
    /// `None` when too few descriptors are free.
    pub fn add(&mut self, bufs: &[Seg], writable: bool) -> Result<Option<u16>, RingError> {
        if bufs.is_empty() || bufs.len() > self.free.len() {
            return Ok(None);
        }
        // The chain takes the top `n` free ids (no allocation per packet).
        let n = bufs.len();
        let top = self.free.len();
        let id_at = |i: usize| self.free[top - 1 - i];
        for (i, b) in bufs.iter().enumerate() {
            let id = id_at(i);
            let mut flags = if writable { VRING_DESC_F_WRITE } else { 0 };
            let next = if i + 1 < n {
                flags |= VRING_DESC_F_NEXT;
                id_at(i + 1)
            } else {
                0
            };
            let mut d = [0u8; 16];
            d[0..8].copy_from_slice(&b.addr.to_le_bytes());
            d[8..12].copy_from_slice(&b.len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..16].copy_from_slice(&next.to_le_bytes());
            self.mem.write("descriptor", self.off.desc(id), &d)?;
            self.written[id as usize] = u128::from_le_bytes(d);
            self.next[id as usize] = next;
        }
        let head = id_at(0);
        self.free.truncate(top - n);
        self.mem.store_u16(
            "avail ring",
            self.off.avail_ring(self.next_avail),
            head,
            Ordering::Relaxed,
        )?;
        self.next_avail = self.next_avail.wrapping_add(1);
        self.chain_len[head as usize] = n as u16;
        self.in_flight += 1;
        Ok(Some(head))
    }

    /// Post a one-descriptor chain.
    pub fn add_one(&mut self, buf: Seg, writable: bool) -> Result<Option<u16>, RingError> {
        self.add(std::slice::from_ref(&buf), writable)
    }

    /// Post a one-descriptor chain whose buffer is tied to its descriptor:
    /// descriptor `id` gets slot `base + id * stride`. Returns `(id, slot)`,
    /// or `None` when the ring is full. The caller fills the slot before
    /// the next [`DriverQueue::publish`].
    ///
    /// The per-packet path of the synthetic guest, so it is [`DriverQueue::add`]
    /// for one buffer without the chain bookkeeping: one avail entry, and
    /// one descriptor store (16 bytes, one volatile store) only when the
    /// descriptor changes (see `written`).
    #[inline(always)]
    pub fn add_slot(
        &mut self,
        base: u64,
        stride: u64,
        len: u32,
        writable: bool,
    ) -> Result<Option<(u16, u64)>, RingError> {
        let Some(id) = self.free.pop() else {
            return Ok(None);
        };
        // The slot a few posts from now and its avail entry: ask for their
        // lines (in the peer's cache since its copier read them) before we
        // write them. Both are free: the peer is done with them.
        let ahead = self.free.len().checked_sub(PREFETCH_AHEAD);
        if let Some(&slot) = ahead.and_then(|i| self.free.get(i)) {
            self.mem.prefetch_for_write(base + slot as u64 * stride);
            let at = self.next_avail.wrapping_add(PREFETCH_AHEAD as u16);
            self.mem.prefetch_for_write(self.off.avail_ring(at));
        }
        let addr = base + id as u64 * stride;
        let flags = if writable { VRING_DESC_F_WRITE } else { 0 };
        // The descriptor as one little-endian value (addr, len, flags,
        // next 0), built and compared in registers: assembled in a byte
        // array it was stored in pieces and reloaded whole, a failed store
        // forward that perf put at a third of a stamped stream's time.
        let d = u128::from(addr) | u128::from(len) << 64 | u128::from(flags) << 96;
        if self.written[id as usize] != d {
            if let Err(e) = self.mem.store_u128("descriptor", self.off.desc(id), d) {
                self.free.push(id);
                return Err(e.into());
            }
            self.written[id as usize] = d;
        }
        self.post_one(id)?;
        Ok(Some((id, addr)))
    }

    /// Put the one-descriptor chain `id` (taken off `free`) on the avail
    /// ring and count it in flight; published by [`DriverQueue::publish`].
    #[inline]
    fn post_one(&mut self, id: u16) -> Result<(), RingError> {
        self.mem.store_u16(
            "avail ring",
            self.off.avail_ring(self.next_avail),
            id,
            Ordering::Relaxed,
        )?;
        self.next[id as usize] = 0;
        self.next_avail = self.next_avail.wrapping_add(1);
        self.chain_len[id as usize] = 1;
        self.in_flight += 1;
        Ok(())
    }

    /// Post again, unchanged, the one-descriptor chain `id` that
    /// [`DriverQueue::pop_used`] just returned: one avail entry, no
    /// descriptor store and no comparison (its descriptor is what
    /// [`DriverQueue::add_slot`] last wrote, as `written` records). For a
    /// buffer tied to its slot whose descriptor never changes, as every RX
    /// buffer of the synthetic guest. False, with nothing posted, when `id`
    /// is not the chain freed last.
    #[inline]
    pub fn repost(&mut self, id: u16) -> Result<bool, RingError> {
        if self.free.last() != Some(&id) {
            return Ok(false);
        }
        self.post_one(id)?;
        self.free.pop();
        Ok(true)
    }

    /// Make everything added since the last publish visible to the device.
    /// Returns `(old, new)` avail indexes for the kick decision.
    pub fn publish(&mut self) -> Result<(u16, u16), RingError> {
        let old = match self.avail_published {
            Some(old) => old,
            None => self
                .mem
                .load_u16("avail idx", self.off.avail_idx(), Ordering::Relaxed)?,
        };
        // Release: descriptors and ring entries written above are visible
        // before the device can see the new index.
        self.mem.store_u16(
            "avail idx",
            self.off.avail_idx(),
            self.next_avail,
            Ordering::Release,
        )?;
        self.avail_published = Some(self.next_avail);
        Ok((old, self.next_avail))
    }

    /// Chains published to the device that it has not returned yet (its
    /// used index, loaded now): what it can still fill. A used index the
    /// device moved past what we published counts as none left; never
    /// more than [`DriverQueue::in_flight`]. For live status, not per packet.
    pub fn device_unused(&self) -> Result<u16, RingError> {
        let used = self
            .mem
            .load_u16("used idx", self.off.used_idx(), Ordering::Acquire)?;
        let published = self.avail_published.unwrap_or(self.next_avail);
        let n = published.wrapping_sub(used);
        Ok(if n > self.off.size {
            0
        } else {
            n.min(self.in_flight)
        })
    }

    /// True when the device has returned something we have not popped.
    pub fn has_used(&self) -> Result<bool, RingError> {
        Ok(self
            .mem
            .load_u16("used idx", self.off.used_idx(), Ordering::Acquire)?
            != self.last_used)
    }

    /// Pop one used chain: `(head id, bytes written)`. The used ring is
    /// written by the peer's copier, so every field is checked.
    ///
    /// The shared used index is loaded only when every entry up to the
    /// last value loaded has been popped: a batch of `n` completions costs
    /// one acquire load and one jump check, not `n`.
    #[inline]
    pub fn pop_used(&mut self) -> Result<Option<(u16, u32)>, RingError> {
        let Some((id, len)) = self.next_used()? else {
            return Ok(None);
        };
        let id = self.in_flight_chain(id)?;
        self.free_chain(id);
        Ok(Some((id, len)))
    }

    /// The next entry the device published, `(id, len)` as read (the id
    /// unchecked), with `last_used` moved past it; `None` when there is
    /// none. The used index is loaded (acquire) and checked against what
    /// is in flight only once every entry up to the last value loaded has
    /// been taken.
    #[inline(always)]
    fn next_used(&mut self) -> Result<Option<(u32, u32)>, RingError> {
        if self.used_ready()? == 0 {
            return Ok(None);
        }
        // Both fields of the entry with one bounds check (`id`, then `len`).
        let (id, len) = self
            .mem
            .load_u32_pair("used entry", self.off.used_ring(self.last_used))?;
        self.last_used = self.last_used.wrapping_add(1);
        Ok(Some((id, len)))
    }

    /// `id` from a used entry, checked: a chain head we have in flight.
    #[inline(always)]
    fn in_flight_chain(&self, id: u32) -> Result<u16, RingError> {
        match self.chain_len.get(id as usize) {
            Some(&n) if n != 0 => Ok(id as u16),
            _ => Err(RingError::BadUsedId { id }),
        }
    }

    /// Give the descriptors of the in-flight chain `id` back to `free`.
    #[inline(always)]
    fn free_chain(&mut self, id: u16) {
        let mut cur = id;
        for _ in 0..std::mem::take(&mut self.chain_len[id as usize]) {
            self.free.push(cur);
            cur = self.next[cur as usize];
        }
        self.in_flight -= 1;
    }

    /// Used entries the device has published that we have not taken: the
    /// used index is loaded (and checked against what is in flight) only
    /// when every entry up to the last value loaded is taken.
    #[inline]
    pub fn used_pending(&mut self) -> Result<u16, RingError> {
        self.used_ready()
    }

    /// Entries the device has published that we have not popped, loading
    /// (and checking) its used index only when every entry up to the last
    /// value loaded is taken: the [`DriverQueue::pop_used`] rule.
    #[inline]
    fn used_ready(&mut self) -> Result<u16, RingError> {
        if self.last_used == self.used_seen {
            // Acquire: the entries (and the data in the buffers) written
            // before the device published this index are visible to the
            // reads that follow, and to those of later pops up to it.
            let used = self
                .mem
                .load_u16("used idx", self.off.used_idx(), Ordering::Acquire)?;
            if used.wrapping_sub(self.last_used) > self.in_flight {
                return Err(RingError::UsedJump {
                    from: self.last_used,
                    to: used,
                    in_flight: self.in_flight,
                });
            }
            self.used_seen = used;
        }
        Ok(self.used_seen.wrapping_sub(self.last_used))
    }

    /// Take up to `max` used chains, appending their `(id, bytes written)`
    /// to `out`, and post each one-descriptor chain again at once,
    /// unchanged, as [`DriverQueue::repost`] does (a ring whose buffers
    /// are tied to their descriptors: every RX buffer of the synthetic
    /// guest). The same checks as [`DriverQueue::pop_used`]. Nothing is
    /// visible to the device before the next [`DriverQueue::publish`], so
    /// the caller reads the buffers first and publishes after.
    ///
    /// A chain of several descriptors is freed, not posted again: returns
    /// how many of those there were (the caller posts replacements).
    pub fn recycle_used(
        &mut self,
        max: usize,
        out: &mut Vec<(u16, u32)>,
    ) -> Result<usize, RingError> {
        let mut freed = 0;
        let mut left = max;
        while left > 0 {
            let ready = usize::from(self.used_ready()?).min(left);
            if ready == 0 {
                break;
            }
            left -= ready;
            // The ring positions in locals for the batch (the stores to
            // shared memory would make the compiler reload them from `self`
            // after each one), written back whatever happens.
            let (mut last_used, mut next_avail) = (self.last_used, self.next_avail);
            let parts = RingParts {
                mem: &self.mem,
                off: &self.off,
                in_bounds: self.in_bounds,
            };
            let (chain_len, free, next) = (&mut self.chain_len, &mut self.free, &self.next);
            let in_flight = &mut self.in_flight;
            let mut batch = || -> Result<(), RingError> {
                for _ in 0..ready {
                    let (id, len) = parts.used(last_used)?;
                    last_used = last_used.wrapping_add(1);
                    let n = match chain_len.get(id as usize) {
                        Some(&n) if n != 0 => n,
                        _ => return Err(RingError::BadUsedId { id }),
                    };
                    let id = id as u16;
                    out.push((id, len));
                    if n == 1 {
                        // In flight again: chain_len and in_flight stay.
                        parts.set_avail(next_avail, id)?;
                        next_avail = next_avail.wrapping_add(1);
                    } else {
                        // Freed as `free_chain` does; the caller posts anew.
                        let mut cur = id;
                        for _ in 0..std::mem::take(&mut chain_len[id as usize]) {
                            free.push(cur);
                            cur = next[cur as usize];
                        }
                        *in_flight -= 1;
                        freed += 1;
                    }
                }
                Ok(())
            };
            let result = batch();
            self.last_used = last_used;
            self.next_avail = next_avail;
            result?;
        }
        Ok(freed)
    }

    /// Ask for (or stop asking for) interrupts when the device uses buffers.
    /// Flags mode clears/sets `VRING_AVAIL_F_NO_INTERRUPT`; event-idx mode
    /// writes `used_event = at` ("interrupt me once used passes `at`").
    pub fn set_interrupts(&self, mode: NotifyMode, enable: bool, at: u16) -> Result<(), RingError> {
        match mode {
            NotifyMode::Always => {}
            NotifyMode::Flags => {
                let f = if enable {
                    0
                } else {
                    VRING_AVAIL_F_NO_INTERRUPT
                };
                self.mem
                    .store_u16("avail flags", self.off.avail_flags(), f, Ordering::Relaxed)?;
            }
            NotifyMode::EventIdx => {
                if enable {
                    self.mem.store_u16(
                        "used_event",
                        self.off.used_event(),
                        at,
                        Ordering::Relaxed,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Index of the next used entry we will pop.
    pub fn last_used(&self) -> u16 {
        self.last_used
    }

    /// After publishing `old..new`, does the device want a kick?
    pub fn kick_needed(&self, mode: NotifyMode, old: u16, new: u16) -> Result<bool, RingError> {
        // Full fence: our avail index store must be visible before we read
        // the device's suppression field; otherwise the device may re-check
        // the ring before our store lands, go to sleep, and we skip the kick.
        fence(Ordering::SeqCst);
        Ok(match mode {
            NotifyMode::Always => true,
            NotifyMode::Flags => {
                self.mem
                    .load_u16("used flags", self.off.used_flags(), Ordering::Relaxed)?
                    & VRING_USED_F_NO_NOTIFY
                    == 0
            }
            NotifyMode::EventIdx => {
                let event =
                    self.mem
                        .load_u16("avail_event", self.off.avail_event(), Ordering::Relaxed)?;
                vring_need_event(event, new, old)
            }
        })
    }
}
