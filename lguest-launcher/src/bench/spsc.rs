//! The SPSC-ring baseline: the least a shared-memory ring can do.
//!
//! One producer process, one consumer process, one memfd between them:
//!
//! ```text
//!   0     head  (u16, producer's; Release after the slot is written)
//!   64    tail  (u16, consumer's; Release after the slot is read)
//!   128   done  (u16, consumer sets 1 after the last packet)
//!   4096  SLOTS slots of `size` bytes rounded up to a cache line
//! ```
//!
//! Both sides busy-poll, with no notifications at all, and each packet is
//! copied twice (into the slot, out of it) — the same work as a sharenet
//! stream's guest write and copier copy, minus descriptors, the second
//! ring, and suppression. Its packets per second are the ceiling for
//! `--wait spin`. Every access goes through [`Region`], so this needs no
//! `unsafe` of its own, and it pays the same bounds checks sharenet pays.
//!
//! ## `baseline-spsc-batched`: the limit
//! [`produce_batched`] / [`consume_batched`] are what a ring can do at
//! best on this machine, the yardstick of issue 13's targets:
//!
//! * **one copy per packet** — the producer fills every slot once at start
//!   and then writes only the 8-byte sequence number (as `--payload stamp`
//!   does); the consumer copies each whole frame out (as the copier does);
//! * **indexes published per batch** — the producer writes up to
//!   [`BATCH`] slots, then stores `head` once; the consumer takes
//!   everything `head` shows, then stores `tail` once;
//! * **each side reads the other's index only when it must** (the
//!   producer when its cached `tail` says full, the consumer when its
//!   cached `head` says empty), and the two indexes live two cache lines
//!   apart ([`BATCHED_TAIL`]) so the adjacent-line prefetcher does not
//!   pair them;
//! * **both sides polling, pinned to different CPUs** (`bench-child
//!   --cpu`, by default lead on CPU 0 and peer on CPU 1).

use crate::memory::Region;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Slots in the ring (as a sharenet ring of 256 entries).
pub const SLOTS: u16 = 256;
const HEAD: u64 = 0;
const TAIL: u64 = 64;
const DONE: u64 = 128;
const SLOTS_AT: u64 = 4096;
/// Spins between deadline checks (a power of two: checked with a mask).
const CHECK_EVERY: u32 = 1 << 14;

/// Bytes per slot for frames of `size` bytes.
pub fn stride(size: u32) -> u64 {
    (u64::from(size) + 63) & !63
}

/// Bytes of shared memory the ring needs, rounded to a page.
pub fn memory_size(size: u32) -> u64 {
    (SLOTS_AT + u64::from(SLOTS) * stride(size) + 4095) & !4095
}

fn slot(index: u16, size: u32) -> u64 {
    SLOTS_AT + u64::from(index % SLOTS) * stride(size)
}

/// Why the ring stopped.
#[derive(Debug, thiserror::Error)]
pub enum SpscError {
    /// An access fell outside the mapping (a bad size).
    #[error(transparent)]
    Bounds(#[from] crate::memory::OutOfBounds),
    /// The deadline passed before the other side moved.
    #[error("the other side stopped moving ({0})")]
    Stalled(&'static str),
    /// The consumer read a packet it did not expect.
    #[error("packet {got} where {want} was expected")]
    OutOfOrder {
        /// Sequence number read.
        got: u64,
        /// Sequence number expected.
        want: u64,
    },
}

/// Spin until `ready` says so, checking `deadline` now and then.
fn spin_until(
    deadline: Instant,
    what: &'static str,
    mut ready: impl FnMut() -> Result<bool, SpscError>,
) -> Result<(), SpscError> {
    let mut n = 0u32;
    while !ready()? {
        std::hint::spin_loop();
        n = n.wrapping_add(1);
        if n & (CHECK_EVERY - 1) == 0 && Instant::now() > deadline {
            return Err(SpscError::Stalled(what));
        }
    }
    Ok(())
}

/// Produce `count` frames of `size` bytes (each starting with its sequence
/// number), then wait until the consumer says it has them all.
pub fn produce(r: &Region, size: u32, count: u64, deadline: Instant) -> Result<(), SpscError> {
    let mut frame = vec![0xa5u8; size as usize];
    let mut head: u16 = 0;
    let mut tail_seen: u16 = r.load_u16("spsc tail", TAIL, Ordering::Acquire)?;
    for seq in 0..count {
        if head.wrapping_sub(tail_seen) >= SLOTS {
            // Full: wait for the consumer to free a slot. Acquire pairs with
            // its Release, so its read of the slot is done before we reuse it.
            spin_until(deadline, "consumer", || {
                tail_seen = r.load_u16("spsc tail", TAIL, Ordering::Acquire)?;
                Ok(head.wrapping_sub(tail_seen) < SLOTS)
            })?;
        }
        frame[..8].copy_from_slice(&seq.to_le_bytes());
        r.write("spsc slot", slot(head, size), &frame)?;
        head = head.wrapping_add(1);
        // Release: the slot's bytes are visible before the new head.
        r.store_u16("spsc head", HEAD, head, Ordering::Release)?;
    }
    spin_until(deadline, "consumer's done flag", || {
        Ok(r.load_u16("spsc done", DONE, Ordering::Acquire)? == 1)
    })
}

/// Consume `count` frames of `size` bytes, checking their order, then set
/// the done flag.
pub fn consume(r: &Region, size: u32, count: u64, deadline: Instant) -> Result<(), SpscError> {
    let mut frame = vec![0u8; size as usize];
    let mut tail: u16 = 0;
    let mut head_seen: u16 = 0;
    for want in 0..count {
        if tail == head_seen {
            // Empty: Acquire pairs with the producer's Release of head.
            spin_until(deadline, "producer", || {
                head_seen = r.load_u16("spsc head", HEAD, Ordering::Acquire)?;
                Ok(head_seen != tail)
            })?;
        }
        r.read("spsc slot", slot(tail, size), &mut frame)?;
        let got = u64::from_le_bytes(frame[..8].try_into().unwrap_or_default());
        if got != want {
            return Err(SpscError::OutOfOrder { got, want });
        }
        tail = tail.wrapping_add(1);
        // Release: our copy out of the slot is done before it is reused.
        r.store_u16("spsc tail", TAIL, tail, Ordering::Release)?;
    }
    r.store_u16("spsc done", DONE, 1, Ordering::Release)?;
    Ok(())
}

/// Slots written (or taken) between two index publications.
pub const BATCH: u16 = 32;
/// Where the batched ring keeps its consumer index: two cache lines after
/// the producer's.
pub const BATCHED_TAIL: u64 = 128;
const BATCHED_DONE: u64 = 256;

/// The limit's producer: fill every slot once, then per packet write its
/// sequence number, publishing `head` every [`BATCH`] slots.
pub fn produce_batched(
    r: &Region,
    size: u32,
    count: u64,
    deadline: Instant,
) -> Result<(), SpscError> {
    let filler = vec![0xa5u8; size as usize];
    for i in 0..SLOTS {
        r.write("spsc slot", slot(i, size), &filler)?;
    }
    let mut head: u16 = 0;
    let mut tail_seen: u16 = r.load_u16("spsc tail", BATCHED_TAIL, Ordering::Acquire)?;
    let mut seq = 0u64;
    while seq < count {
        let mut room = SLOTS - head.wrapping_sub(tail_seen);
        if room == 0 {
            // Acquire pairs with the consumer's Release of tail: its copies
            // out of the slots are done before we overwrite them.
            spin_until(deadline, "consumer", || {
                tail_seen = r.load_u16("spsc tail", BATCHED_TAIL, Ordering::Acquire)?;
                Ok(head.wrapping_sub(tail_seen) < SLOTS)
            })?;
            room = SLOTS - head.wrapping_sub(tail_seen);
        }
        let n = u64::from(room.min(BATCH)).min(count - seq);
        for _ in 0..n {
            r.write("spsc seq", slot(head, size), &seq.to_le_bytes())?;
            head = head.wrapping_add(1);
            seq += 1;
        }
        // Release: every slot of the batch is written before the new head.
        r.store_u16("spsc head", HEAD, head, Ordering::Release)?;
    }
    spin_until(deadline, "consumer's done flag", || {
        Ok(r.load_u16("spsc done", BATCHED_DONE, Ordering::Acquire)? == 1)
    })
}

/// The limit's consumer: take every slot `head` shows, copying each frame
/// out and checking its order, then publish `tail` once.
pub fn consume_batched(
    r: &Region,
    size: u32,
    count: u64,
    deadline: Instant,
) -> Result<(), SpscError> {
    let mut frame = vec![0u8; size as usize];
    let mut tail: u16 = 0;
    let mut want = 0u64;
    while want < count {
        let mut head_seen = tail;
        // Acquire pairs with the producer's Release of head.
        spin_until(deadline, "producer", || {
            head_seen = r.load_u16("spsc head", HEAD, Ordering::Acquire)?;
            Ok(head_seen != tail)
        })?;
        while tail != head_seen {
            r.read("spsc slot", slot(tail, size), &mut frame)?;
            let got = u64::from_le_bytes(frame[..8].try_into().unwrap_or_default());
            if got != want {
                return Err(SpscError::OutOfOrder { got, want });
            }
            tail = tail.wrapping_add(1);
            want += 1;
        }
        // Release: our copies out of the slots are done before they are reused.
        r.store_u16("spsc tail", BATCHED_TAIL, tail, Ordering::Release)?;
    }
    r.store_u16("spsc done", BATCHED_DONE, 1, Ordering::Release)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::GuestMemory;
    use std::time::Duration;

    #[test]
    fn spsc_ring_moves_every_packet_in_order_between_threads() {
        let m = GuestMemory::create("spsc-test", memory_size(1500)).unwrap();
        let (a, b) = (m.region().clone(), m.region().clone());
        let deadline = Instant::now() + Duration::from_secs(20);
        let c = std::thread::spawn(move || consume(&b, 1500, 10_000, deadline));
        produce(&a, 1500, 10_000, deadline).unwrap();
        c.join().unwrap().unwrap();
    }

    #[test]
    fn batched_spsc_ring_moves_every_packet_in_order_between_threads() {
        for size in [64, 1500] {
            let m = GuestMemory::create("spsc-test", memory_size(size)).unwrap();
            let (a, b) = (m.region().clone(), m.region().clone());
            let deadline = Instant::now() + Duration::from_secs(20);
            // A count that is not a multiple of the batch.
            let c = std::thread::spawn(move || consume_batched(&b, size, 10_007, deadline));
            produce_batched(&a, size, 10_007, deadline).unwrap();
            c.join().unwrap().unwrap();
        }
    }
}
