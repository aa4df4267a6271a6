//! A burst of one-descriptor chains in one call: the synthetic guest's
//! per-packet path at full rate.
//!
//! [`DriverQueue::add_slot`] and [`DriverQueue::recycle_used`] serve any
//! caller one chain (or one batch into a list) at a time; a stamped
//! stream and a sink do the same thing 64 times a turn. Here the ring
//! positions and counts stay in registers for the whole burst, the ranges
//! of the buffers' bytes it touches are proven once per call, and the
//! caller's per-frame work (the value of a stamp, the test of one: an
//! [`Accept`]) is inlined into the loop, so nothing goes through memory per
//! frame but the ring entries and the frame itself. The checks are those of the one-at-a-time
//! calls; an entry the burst cannot take (a chain of several descriptors,
//! a frame the caller refuses) is left where it is for them.

use super::{DriverQueue, RingParts, PREFETCH_AHEAD};
use crate::virtq::{RingError, VRING_DESC_F_WRITE};

/// Where the buffers of a ring whose buffers are tied to their
/// descriptors lie (descriptor `id`'s at `base + id * stride`), and the two
/// 16-byte pieces of each that [`DriverQueue::recycle_while`] reads for its
/// caller (at `at[0]` and `at[1]` into the buffer).
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    /// The first buffer.
    pub base: u64,
    /// Bytes from one buffer to the next.
    pub stride: u64,
    /// Where in a buffer the two 16-byte pieces start.
    pub at: [u64; 2],
}

/// What [`DriverQueue::recycle_while`] asks of each frame: take it
/// (`true`) or leave it for the general path. A trait rather than a
/// closure so that its implementation can insist on being inlined into the
/// loop (`#[inline(always)]`; a closure's call was not inlined there).
pub trait Accept {
    /// Take the `i`-th frame of the burst: chain `id`, `len` bytes as the
    /// used entry says, and the two pieces of its buffer that [`Heads`]
    /// names?
    fn accept(&mut self, i: usize, id: u16, len: u32, head: (u128, u128)) -> bool;
}

impl Heads {
    /// The bytes from `base` that the pieces of `n` buffers span: `None`
    /// when that overflows.
    fn span(&self, n: u16) -> Option<u64> {
        let last = u64::from(n.checked_sub(1)?).checked_mul(self.stride)?;
        last.checked_add(self.at[0].max(self.at[1]))?
            .checked_add(16)
    }
}

impl DriverQueue {
    /// Take used one-descriptor chains, in ring order, while `take`
    /// accepts the `i`-th of them ([`Accept::accept`]), and post each again at once, unchanged and
    /// unpublished, as [`DriverQueue::recycle_used`] does; at most `max`,
    /// and at most what the used index loaded once here shows. `head` is
    /// the two 16-byte pieces of the chain's buffer that `heads` names,
    /// each read with one load (the range of every buffer's pieces is
    /// checked once per call, not per frame). The first entry that is not
    /// a one-descriptor chain in flight, or that `take` refuses, is left in
    /// the ring (not consumed) for [`DriverQueue::recycle_used`] to take
    /// and the caller to judge the slow way. Returns `(taken, left)`:
    /// `left` is true when such an entry may be there.
    ///
    /// Only for a ring whose parts `new` proved in bounds (every ring we
    /// lay out) and buffers inside our memory; otherwise it takes nothing
    /// and says an entry may be left, and the caller's general path serves
    /// the ring with its checks.
    #[inline(always)]
    pub fn recycle_while(
        &mut self,
        max: usize,
        heads: Heads,
        mut take: impl Accept,
    ) -> Result<(usize, bool), RingError> {
        let ready = usize::from(self.used_ready()?).min(max);
        if ready == 0 {
            return Ok((0, false));
        }
        let size = self.off.size;
        let buffers_in = heads
            .span(size)
            .is_some_and(|span| self.mem.contains(heads.base, span, 1));
        if !self.in_bounds || !buffers_in {
            return Ok((0, true));
        }
        // In locals, as in `add_slots`.
        let (off, mem) = (self.off, self.mem.clone());
        let parts = RingParts {
            mem: &mem,
            off: &off,
            in_bounds: true,
        };
        let (last_used, next_avail) = (self.last_used, self.next_avail);
        let chain_len = &self.chain_len[..usize::from(size)];
        let mut n = 0;
        let mut left = false;
        while n < ready {
            // In bounds (checked in `new`): these cannot fail.
            let Ok((id, len)) = parts.used(last_used.wrapping_add(n as u16)) else {
                left = true;
                break;
            };
            // A one-descriptor chain we have in flight (a bad id, or a
            // longer chain, goes to `recycle_used`, which names or frees it).
            if chain_len.get(id as usize) != Some(&1) {
                left = true;
                break;
            }
            let at = heads.base + u64::from(id) * heads.stride;
            // SAFETY: `id < size` (it indexes `chain_len`, `size` long), so
            // each piece lies within `[base, base + span)`, which is inside
            // the mapping (`contains` above).
            let head = unsafe {
                (
                    mem.load_u128_in_bounds(at + heads.at[0]),
                    mem.load_u128_in_bounds(at + heads.at[1]),
                )
            };
            if !take.accept(n, id as u16, len, head)
                || parts
                    .set_avail(next_avail.wrapping_add(n as u16), id as u16)
                    .is_err()
            {
                left = true;
                break;
            }
            n += 1;
        }
        self.last_used = last_used.wrapping_add(n as u16);
        self.next_avail = next_avail.wrapping_add(n as u16);
        Ok((n, left))
    }

    /// Pop every used chain the device has published and free it, as
    /// [`DriverQueue::pop_used`] does one at a time (the same checks): how
    /// many. A sender's TX completions, in one call per turn.
    #[inline]
    pub fn reap_used(&mut self) -> Result<u16, RingError> {
        // Nothing new (most turns of a busy stream, every turn of a sink):
        // one look at the used index, no call.
        if self.used_ready()? == 0 {
            return Ok(0);
        }
        self.reap_ready()
    }

    /// [`DriverQueue::reap_used`] once the device has published something.
    #[inline(never)]
    fn reap_ready(&mut self) -> Result<u16, RingError> {
        let mut n = 0u16;
        let start = self.free.len();
        let result = loop {
            match self.used_ready() {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
            if let Err(e) = self.reap_seen(&mut n) {
                break Err(e);
            }
        };
        // Reversed, so that `free` (a stack) hands them out again in the
        // order the device returned them: see `free`.
        self.free[start..].reverse();
        result.map(|()| n)
    }

    /// Free the chains of the used entries up to the used index last
    /// loaded, counting them in `n`. A one-descriptor chain's id is written
    /// into room made on `free` for the whole batch (one entry per chain at
    /// least: never more than the ring, whose ids `free` had room for),
    /// not pushed; a longer chain is freed by `free_chain`.
    #[inline(always)]
    fn reap_seen(&mut self, n: &mut u16) -> Result<(), RingError> {
        // In locals, as in `add_slots`.
        let (off, mem) = (self.off, self.mem.clone());
        let parts = RingParts {
            mem: &mem,
            off: &off,
            in_bounds: self.in_bounds,
        };
        let (mut last_used, seen) = (self.last_used, self.used_seen);
        let mut filled = self.free.len();
        self.free
            .resize(filled + usize::from(seen.wrapping_sub(last_used)), 0);
        let mut chains = 0u16;
        let mut result = Ok(());
        while last_used != seen {
            let id = match parts.used(last_used) {
                Ok((id, _)) => id,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            last_used = last_used.wrapping_add(1);
            match self.chain_len.get_mut(id as usize) {
                Some(c) if *c == 1 => {
                    *c = 0;
                    self.free[filled] = id as u16;
                    filled += 1;
                }
                Some(c) if *c != 0 => {
                    // Several descriptors: pushed by `free_chain`, then room
                    // again for the rest of the batch.
                    self.free.truncate(filled);
                    self.in_flight -= chains;
                    *n += chains;
                    chains = 0;
                    self.free_chain(id as u16);
                    *n += 1;
                    filled = self.free.len();
                    let rest = usize::from(seen.wrapping_sub(last_used));
                    self.free.resize(filled + rest, 0);
                    continue;
                }
                _ => {
                    result = Err(RingError::BadUsedId { id });
                    break;
                }
            }
            chains += 1;
        }
        self.free.truncate(filled);
        self.in_flight -= chains;
        *n += chains;
        self.last_used = last_used;
        result
    }

    /// Post up to `n` one-descriptor chains whose buffers are tied to their
    /// descriptors, as `n` calls of [`DriverQueue::add_slot`] would (the
    /// same descriptors, the same avail entries, the same prefetches), and
    /// store `value(i)` as 16 bytes at `value_at` into the `i`-th chain's buffer
    /// (a stream's stamp) after its descriptor is written; unpublished.
    /// The range of every buffer's 16 bytes is checked once per call, not
    /// per store. Stops when the free descriptors run out. Returns how many
    /// were posted, and the error that stopped it if one did (the chains
    /// posted before it stay posted).
    #[inline(always)]
    pub fn add_slots(
        &mut self,
        n: usize,
        (base, stride): (u64, u64),
        len: u32,
        writable: bool,
        (value_at, mut value): (u64, impl FnMut(usize) -> u128),
    ) -> (usize, Result<(), RingError>) {
        let span = u64::from(self.off.size.saturating_sub(1))
            .checked_mul(stride)
            .and_then(|s| s.checked_add(16));
        let slots_in = span.is_some_and(|span| {
            base.checked_add(value_at)
                .is_some_and(|first| self.mem.contains(first, span, 1))
        });
        if !self.in_bounds || !slots_in {
            // A ring given otherwise: one `add_slot` (with its checks) each.
            let mut done = 0;
            while done < n {
                match self.add_slot(base, stride, len, writable) {
                    Ok(Some((_, slot))) => {
                        let v = value(done);
                        if let Err(e) = self.mem.store_u128("tx slot", slot + value_at, v) {
                            return (done, Err(e.into()));
                        }
                        done += 1;
                    }
                    Ok(None) => break,
                    Err(e) => return (done, Err(e)),
                }
            }
            return (done, Ok(()));
        }
        let top = self.free.len();
        let n = n.min(top);
        let flags = if writable { VRING_DESC_F_WRITE } else { 0 };
        // The descriptor's upper half (len, flags, next 0) is the same for
        // every chain of the burst: only the address differs.
        let high = u128::from(len) << 64 | u128::from(flags) << 96;
        let next_avail = self.next_avail;
        // The offsets and the mapping in locals: the loop's stores to
        // shared memory would otherwise make the compiler reload them
        // from `self` after each one.
        let (off, mem) = (self.off, self.mem.clone());
        let parts = RingParts {
            mem: &mem,
            off: &off,
            in_bounds: true,
        };
        let free = &self.free[..top];
        let size = usize::from(off.size);
        let (written, chain_len) = (&mut self.written[..size], &mut self.chain_len);
        let mut done = 0;
        let result = loop {
            if done == n {
                break Ok(());
            }
            // The chain takes the top free id, as `add_slot`'s pop does.
            let at = top - 1 - done;
            let id = free[at];
            let i = next_avail.wrapping_add(done as u16);
            // The slot PREFETCH_AHEAD posts on, and the line of avail
            // entries it will start (see `add_slot`; the entries are line
            // aligned, 32 to a line).
            if let Some(&ahead) = at.checked_sub(PREFETCH_AHEAD).and_then(|a| free.get(a)) {
                mem.prefetch_for_write(base + u64::from(ahead) * stride);
            }
            let i_ahead = i.wrapping_add(PREFETCH_AHEAD as u16);
            if i_ahead.is_multiple_of(32) {
                mem.prefetch_for_write(off.avail_ring(i_ahead));
            }
            let addr = base + u64::from(id) * stride;
            let d = u128::from(addr) | high;
            let Some(w) = written.get_mut(usize::from(id)) else {
                break Err(RingError::BadUsedId { id: id.into() });
            };
            if *w != d {
                if let Err(e) = mem.store_u128("descriptor", off.desc(id), d) {
                    break Err(e.into());
                }
                *w = d;
            }
            // SAFETY: `id < size` (it indexes `written`, `size` long), so
            // `addr + value_at + 16 <= base + value_at + span`, inside the
            // mapping (`contains` above).
            unsafe { mem.store_u128_in_bounds(addr + value_at, value(done)) };
            if let Err(e) = parts.set_avail(i, id) {
                break Err(e);
            }
            // In flight as a one-descriptor chain (its `next` is never read).
            chain_len[usize::from(id)] = 1;
            done += 1;
        };
        self.free.truncate(top - done);
        self.next_avail = next_avail.wrapping_add(done as u16);
        self.in_flight += done as u16;
        (done, result)
    }
}
