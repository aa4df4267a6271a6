//! The push fast path, a burst at a time: the copier's burst shape on
//! the switch (`copier/burst.rs`).
//!
//! A stream's frames all go from one member to one other: same addresses,
//! one descriptor each, a plain `virtio_net_hdr`. [`Switch::push_burst`]
//! moves a run of them from member `i`'s TX ring into the destination's RX
//! ring (a push port) in two passes:
//!
//! 1. **Check.** It takes the first chain off `i`'s ring
//!    ([`Taker::one_at`]: index, one descriptor, direction, not indirect,
//!    a non-zero length, the buffer inside memory, kept as a [`Span`]),
//!    reads its header's flags and its two addresses (two 16-byte loads)
//!    and routes it once:
//!    unicast, learned on another member's push port that takes no
//!    `num_buffers` and has posted a buffer. Then it takes up to that many
//!    more chains, as long as each carries the same two addresses and a
//!    plain header, asking for each frame's first line (a prefetch). With
//!    each frame it takes the destination's next RX chain the same way
//!    and asks for that buffer's first line for writing (PREFETCHW): the
//!    line the destination's member read last time round, so on the
//!    other CPU, and the copy's first stores would wait for it in turn.
//! 2. **Copy.** It copies each frame span to span (no range checked
//!    again: the spans are the proof, and a member that rewrites a
//!    descriptor meanwhile cannot move the copy), writing both used
//!    entries as it goes; a frame whose header asks for an offload, or
//!    that does not fit the buffer, ends the pass; a run for which the
//!    destination posted fewer single-buffer chains ends where they do.
//!
//! The source is learned and its counters are added once per run. Both
//! rings are published with the turn's ([`Switch::publish`]).
//!
//! Anything else stops the run having consumed nothing of that chain, and
//! the general path ([`Switch::route`]) takes it and names what it finds:
//! a chain of several descriptors, a malformed one, a frame too short or
//! too long, a group or unknown destination (flooding), the same port, the
//! TAP, a pull port, `MRG_RXBUF`, no buffer posted (a hold), a full
//! destination, a header that asks for an offload. With a capture running
//! the general path takes every frame (it records each one).
//!
//! Callgrind, 2 and 4 pairs, 1500 B stamped frames: the switch's loop
//! costs 366–370 instructions per forwarded frame, this function 355 of
//! them (the copy 173), against 724–726 for the turn before; see
//! BENCHMARKS.md, "After round 2, session 7: the switch hop". Taking the
//! RX chains in pass 1 with the prefetch made it 397 (2 pairs of 50k
//! frames) and the switch's user CPU per frame 7–10% less (BENCHMARKS.md,
//! "After round 2, session 8: the switch's kicks and copy (second pass)").
//!
//! [`Taker::one_at`]: crate::virtq::Taker::one_at

use super::counts::BurstState;
use super::serve::Switch;
use crate::guest::frame::{is_group, Mac, ETH_HDR};
use crate::guest::plan::{BUF_SIZE, NET_HDR_LEN};
use crate::memory::{Region, Span};
use crate::virtq::{copy_planned, with_plan, Planned};
use std::time::Instant;
use transport::Transport;

/// Frames checked in one pass at most (the plan lives on the stack, of
/// this many entries or, for a short run, `virtq::SMALL_PLAN`).
const RUN: usize = 64;

/// The shortest frame the general path forwards: a `virtio_net_hdr` and
/// an Ethernet header.
const MIN_FRAME: u32 = NET_HDR_LEN as u32 + ETH_HDR as u32;

/// Where the frame's two addresses are read from: the 16 bytes that end
/// with the source address (destination at bytes 4..10 of the load,
/// source at 10..16).
const ADDRS_AT: u64 = NET_HDR_LEN + 12 - 16;

/// The destination and source addresses of the frame in `s` (in `mem`),
/// as the 12 bytes of one value (destination first); `None` for a frame
/// the general path must take: too short or too long, or a header that
/// asks for an offload (flags or `gso_type` set: the copy is checked
/// again after it is made, this look spares it).
#[inline(always)]
fn addrs(mem: &Region, s: &Span<'_>) -> Option<u128> {
    if s.len() < MIN_FRAME || u64::from(s.len()) > BUF_SIZE {
        return None;
    }
    // Bounds: checked again (16 bytes inside the span's mapping); race:
    // one load each, so the addresses compared are the ones routed on.
    if mem.load_u128("frame header", s.offset()).ok()? as u16 != 0 {
        return None;
    }
    let v = mem.load_u128("frame header", s.offset() + ADDRS_AT).ok()?;
    Some(v >> 32)
}

/// The two addresses of [`addrs`]: (destination, source).
fn split(a: u128) -> (Mac, Mac) {
    let b = a.to_le_bytes();
    let mut dst = [0u8; 6];
    let mut src = [0u8; 6];
    dst.copy_from_slice(&b[0..6]);
    src.copy_from_slice(&b[6..12]);
    (dst, src)
}

impl<T: Transport + 'static> Switch<'_, T> {
    /// Forward a run of at most `max` plain frames from member `i` (its
    /// memory `member`) to one push port, as the module docs say: how many
    /// (0: the general path takes the next frame).
    #[inline(never)]
    pub(super) fn push_burst(
        &mut self,
        i: usize,
        member: &Region,
        max: u16,
        now: Instant,
        burst: &mut BurstState,
    ) -> u16 {
        // The first frame: taken, read and routed.
        let Some(Some(p)) = self.ports.get_mut(i) else {
            return 0;
        };
        let Some(mut tx) = p.rings_mut().0.taker(member) else {
            return 0;
        };
        let Some((head, first)) = tx.one_at(0, false) else {
            return 0;
        };
        drop(tx);
        let Some(key) = addrs(member, &first) else {
            return 0;
        };
        let (dst, src) = split(key);
        if is_group(&dst) {
            return 0;
        }
        let j = match self.table.lookup_in(&mut burst.table, &dst, now) {
            // The TAP's index is `ports.len()`: not a member.
            Some(j) if j != i && j < self.ports.len() => j,
            _ => return 0,
        };
        let Ok([Some(from), Some(to)]) = self.ports.get_disjoint_mut([i, j]) else {
            return 0;
        };
        let to_mem = to.member().clone();
        let Some(push) = to.rings_mut().1 else {
            return 0;
        };
        let room = match push.room() {
            Ok(n) => n,
            Err(_) => return 0,
        };
        let Some(rx_ring) = push.plain_ring() else {
            return 0;
        };
        let n = usize::from(max.min(room)).min(RUN);
        if n == 0 {
            return 0;
        }
        let (Some(mut tx), Some(mut rx)) =
            (from.rings_mut().0.taker(member), rx_ring.taker(&to_mem))
        else {
            return 0;
        };
        let (moved, bytes) = with_plan::<_, _, RUN>(n, Planned::EMPTY, |plan| {
            // `n` entries: the loop's index is then known to be inside.
            let plan = &mut plan[..n];
            // Pass 1: the rest of the run, frames with the same two
            // addresses, each with the destination's buffer it goes to.
            let mut taken = 0;
            let mut next = Some((head, first));
            while taken < n {
                let (head, s) = match next.take() {
                    Some(f) => f,
                    None => match tx.one_at(taken as u16, false) {
                        Some((head, s)) if addrs(member, &s) == Some(key) => (head, s),
                        _ => break,
                    },
                };
                let Some((rx_head, d)) = rx.one_at(taken as u16, true) else {
                    break;
                };
                s.prefetch();
                // The buffer's first line is the one its member read
                // (the header and what follows it): on its CPU's cache.
                to_mem.prefetch_for_write(d.offset());
                plan[taken] = Planned {
                    src: s,
                    dst: d,
                    head,
                    rx_head,
                };
                taken += 1;
            }
            // Pass 2: into the destination's buffers, both used entries
            // written as each frame is copied. A frame too small for its
            // buffer, or whose header asks for an offload, ends the run:
            // the general path copies it again and deals with it.
            copy_planned(&plan[..taken], &mut tx, &mut rx, true)
        });
        drop((rx, tx));
        if moved == 0 {
            return 0;
        }
        push.took(moved);
        from.tx_completed();
        if self.table.learn_in(&mut burst.table, src, i, now) {
            super::capture::learned(i, &src);
        }
        let payload = bytes - u64::from(moved) * NET_HDR_LEN;
        burst.forwarded(self, j, u64::from(moved), payload);
        moved
    }
}
