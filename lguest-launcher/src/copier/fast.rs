//! The per-packet fast path: a frame in one descriptor into an RX buffer
//! of one descriptor that holds it, with a plain header.
//!
//! Every frame of a synthetic guest, and most of a VM's, is that case.
//! [`Copier::copy_plain`] moves it with the checks of the general path
//! (`copy_one`): both chains are read with [`DeviceQueue::walk_one`]
//! (index, direction, length, buffer inside memory), the copy goes through
//! [`Region::copy_from`]. What it saves is the general path's plumbing:
//! it returns the frame's length, not a `Result<Option<Event>, _>` moved
//! through the stack per packet (the profile showed those moves stalling
//! on store forwarding: a third of `poll`'s samples at 64 B).
//!
//! It decides before it changes anything: for any other case (a longer or
//! malformed chain, no RX buffer, a frame that does not fit, a header that
//! asks for an offload, mergeable buffers) it returns `None` having
//! consumed nothing, and the general path takes the same chain, finds the
//! same thing and names it. A header it finds not plain after the copy
//! means the general path copies the frame again: offload frames are not
//! the fast case.
//!
//! [`DeviceQueue::walk_one`]: crate::virtq::DeviceQueue::walk_one
//! [`Region::copy_from`]: crate::memory::Region::copy_from

use super::{Copier, Event};
use std::sync::atomic::Ordering;
use transport::Transport;

/// Descriptors the fast path reads per chain: one on each ring, plus the
/// one each walk stopped at, as the general path counts them (`walked`).
pub(super) const PLAIN_WALKED: usize = 4;

impl<T: Transport> Copier<T> {
    /// Move the peer's chain `head` into our next RX buffer if it is the
    /// plain case (see the module docs): its length, with our RX chain
    /// marked used and the [`Event::Delivered`] pushed. The peer's chain
    /// is left for the caller to complete. `None`: nothing was consumed.
    #[inline(always)]
    pub(super) fn copy_plain(&mut self, head: u16, rx_room: &mut u16) -> Option<u32> {
        if self.mergeable() {
            return None; // num_buffers to write: the general path
        }
        let s = self.peer_tx.walk_one(head, false)?;
        if *rx_room == 0 {
            *rx_room = self.own_rx.pending().ok()?;
            if *rx_room == 0 {
                return None;
            }
        }
        let rx_head = self.own_rx.peek_head().ok()?;
        let d = self.own_rx.walk_one(rx_head, true)?;
        let len = s.len;
        if len > d.len {
            return None;
        }
        self.own_mem
            .copy_from(d.addr, &self.peer_mem, s.addr, u64::from(len))
            .ok()?;
        if self.offload.on && !(d.len >= 2 && d.addr % 2 == 0 && self.plain_at(d.addr)) {
            return None;
        }
        self.own_rx.add_used(rx_head, len).ok()?;
        self.own_rx.advance();
        *rx_room -= 1;
        self.events.push(Event::Delivered {
            peer_head: head,
            rx_head,
            len,
            rx_first: d,
        });
        Some(len)
    }

    /// The `virtio_net_hdr` at `addr` (2-aligned, the start of our RX
    /// buffer of at least 2 bytes) asks for no offload: flags and
    /// `gso_type` are 0 (the general path's `plain_header`, usual case).
    #[inline(always)]
    fn plain_at(&self, addr: u64) -> bool {
        // Relaxed: our own memory, written by us in this thread just now.
        matches!(
            self.own_mem
                .load_u16("offload header", addr, Ordering::Relaxed),
            Ok(0)
        )
    }
}
