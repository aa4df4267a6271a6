//! The per-packet fast path, a burst at a time: frames in one descriptor
//! into RX buffers of one descriptor that hold them, with a plain header.
//!
//! Every frame of a synthetic guest, and most of a VM's, is that case.
//! [`Copier::burst`] moves up to a burst of them in two passes (first
//! asking for the lines the next chain most likely needs, see
//! [`Taker::prefetch_next`]):
//!
//! 1. **Check.** It reads each of the peer's chains (avail entry and
//!    descriptor, once), then each of our RX chains the same way
//!    ([`Taker::one_at`]: index, one descriptor, direction, not indirect,
//!    a non-zero length, the buffer inside memory), checks that each frame
//!    fits, asks for each frame's first line (a prefetch) and keeps the
//!    two buffers as [`Span`]s in an array on the stack ([`with_plan`]:
//!    of [`SMALL_PLAN`] entries when the poll has that few frames to move
//!    — filling a 64-entry array before the first chain is read was
//!    3.5 KB of stores, which a one-frame poll, a ping, waited behind:
//!    about 0.2 µs a round trip — else of a whole burst). The first chain that is
//!    not the plain case ends the pass, consuming nothing.
//! 2. **Copy.** Each frame is copied from the values kept in pass 1: no
//!    range is checked again (the spans are the proof), and a peer that
//!    rewrites a descriptor meanwhile cannot move the copy. With offloads
//!    on, a frame whose header asks for one ends the pass; the general
//!    path copies it again and deals with it.
//!
//! Pass 2 also writes the used entries of both rings; then the counts, and
//! one event per frame (pushed as one `extend`) when something reads them
//! (see [`Copier::events`]). The line moves overlap: in the machine's slow
//! mode a line from the other CPU takes ~550 ns, and pass 1 has a burst of
//! them in flight before pass 2 waits for the first (pass 1 and 2 over
//! chunks of 8 instead cost a 64 B stream about an eighth of its packets:
//! 23.4 against 26.7 Mpps, pinned, alternating).
//!
//! For any other case (a longer or malformed chain, no RX buffer, a frame
//! that does not fit, a header that asks for an offload, mergeable
//! buffers) the burst stops having consumed nothing of that chain, and the
//! general path (`copy_one`) takes it, finds the same thing and names it.
//!
//! [`Taker::one_at`]: crate::virtq::Taker::one_at
//! [`Taker::prefetch_next`]: crate::virtq::Taker::prefetch_next
//! [`with_plan`]: crate::virtq::with_plan
//! [`SMALL_PLAN`]: crate::virtq::SMALL_PLAN
//! [`Span`]: crate::memory::Span

use super::{Copier, Event, Outcome, POLL_BURST};
use crate::virtq::{copy_planned, with_plan, Planned, Seg, Taker};
use transport::Transport;

/// Descriptors the fast path reads per chain: one on each ring, plus the
/// one each walk stopped at, as the general path counts them (`walked`).
pub(super) const PLAIN_WALKED: usize = 4;

impl<T: Transport> Copier<T> {
    /// Move up to `max` plain frames (see the module docs) from the peer's
    /// ring into ours: both chains completed, the events pushed, `out`'s
    /// counts raised. Returns how many; 0 when the next chain is not the
    /// plain case or our guest posted no RX buffer (`rx_room` as in
    /// `copy_one`: reloaded here only when it is 0).
    ///
    /// Not inlined: in its own frame the loops keep the rings' state in
    /// registers (inlined into `poll`, they reloaded it from the stack).
    #[inline(never)]
    pub(super) fn burst(&mut self, max: u16, rx_room: &mut u16, out: &mut Outcome) -> u16 {
        if self.mergeable() {
            return 0; // num_buffers to write: the general path
        }
        if *rx_room == 0 {
            *rx_room = match self.own_rx.pending() {
                Ok(n) => n,
                Err(_) => return 0, // the general path names it
            };
        }
        let n = max.min(*rx_room).min(POLL_BURST);
        let check_header = self.offload.on;
        let (Some(mut tx), Some(mut rx)) = (
            self.peer_tx.taker(&self.peer_mem),
            self.own_rx.taker(&self.own_mem),
        ) else {
            return 0;
        };
        tx.prefetch_next();
        let events =
            (self.keep_deliveries || crate::capture::tap().is_some()).then_some(&mut self.events);
        let (moved, bytes) =
            with_plan::<_, _, { POLL_BURST as usize }>(usize::from(n), Planned::EMPTY, |plan| {
                plan_and_copy(plan, &mut tx, &mut rx, n, check_header, events)
            });
        drop((tx, rx));
        *rx_room -= moved;
        out.moved += usize::from(moved);
        out.bytes += bytes;
        moved
    }
}

/// Both passes over up to `n` chains, `plan` holding at least that many
/// (see the module docs): how many frames were moved, and their bytes.
/// Events are pushed to `events` when something reads them.
#[inline(always)]
fn plan_and_copy<'p, 'o>(
    plan: &mut [Planned<'p, 'o>],
    tx: &mut Taker<'_, 'p>,
    rx: &mut Taker<'_, 'o>,
    n: u16,
    check_header: bool,
    events: Option<&mut Vec<Event>>,
) -> (u16, u64) {
    // Pass 1: read and check both chains of each frame, once: the peer's
    // chains first, then ours (one ring's state at a time fits the
    // registers; both at once did not).
    let mut taken = 0u16;
    for p in plan.iter_mut().take(usize::from(n)) {
        let Some((head, src)) = tx.one_at(taken, false) else {
            break;
        };
        src.prefetch();
        p.src = src;
        p.head = head;
        taken += 1;
    }
    let mut k = 0u16;
    for p in &mut plan[..usize::from(taken)] {
        let Some((rx_head, dst)) = rx.one_at(k, true) else {
            break;
        };
        if p.src.len() > dst.len() {
            break;
        }
        p.dst = dst;
        p.rx_head = rx_head;
        k += 1;
    }
    // Pass 2: copy from what pass 1 kept, and write both used entries
    // (published by `poll` after the burst).
    let (moved, bytes) = copy_planned(&plan[..usize::from(k)], tx, rx, check_header);
    if let Some(events) = events {
        events.extend(plan[..usize::from(moved)].iter().map(|p| Event::Delivered {
            peer_head: p.head,
            rx_head: p.rx_head,
            len: p.src.len(),
            rx_first: Seg {
                addr: p.dst.offset(),
                len: p.dst.len(),
            },
        }));
    }
    (moved, bytes)
}
