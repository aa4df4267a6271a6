//! The tap [`crate::run::account`] and a switch feed.
//!
//! A launcher's copier takes the encoder once per poll ([`Tap::poll`]:
//! one uncontended lock, and nothing at all for a poll with no event and
//! no change of stall) and gives it each event of the poll; a switch
//! gives it frames one by one ([`Tap::frame`], [`Tap::bytes`],
//! [`Tap::note`]) and ends each forwarding turn with
//! [`Tap::send_batch`].

use super::notes::{drop_flags, FLAG_INBOUND, FLAG_INBOUND_DELIVERED, STALL_NOTE};
use super::out::Out;
use crate::copier::{Copier, Event};
use crate::guest::plan::NET_HDR_LEN;
use crate::memory::Region;
use crate::stats::Stats;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use transport::Transport;

/// The process's capture tap: see the module docs.
pub struct Tap {
    pub(super) out: Arc<Mutex<Out>>,
    /// The writer thread (unparked to write the closing statistics).
    pub(super) writer: std::thread::Thread,
    pub(super) snaplen: usize,
    /// Our guest had no RX buffer at the last poll (a stall is open).
    pub(super) stalled: AtomicBool,
}

/// One copier poll's hold on the encoder: [`Poll::event`] each event,
/// then [`Poll::done`].
pub struct Poll<'a> {
    out: MutexGuard<'a, Out>,
    tap: &'a Tap,
}

impl Tap {
    pub(super) fn lock(&self) -> MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The encoder for a poll with `events` events whose guest has no RX
    /// buffer (`rx_full`); `None` when the poll leaves nothing to record.
    #[inline]
    pub fn poll(&self, events: usize, rx_full: bool) -> Option<Poll<'_>> {
        if events == 0 && rx_full == self.stalled.load(Ordering::Relaxed) {
            return None;
        }
        Some(Poll {
            out: self.lock(),
            tap: self,
        })
    }

    /// One frame of `len` bytes (its `virtio_net_hdr` included) whose
    /// first `avail` bytes lie at `addr` in `mem`, on interface `iface`:
    /// the header is read for its offload note and stripped, at most
    /// `--snaplen` bytes of the rest (and of what is available) are kept.
    /// `comment` (a drop's) replaces the offload note. A read outside
    /// `mem` keeps an empty record.
    #[allow(clippy::too_many_arguments)]
    pub fn frame(
        &self,
        iface: u32,
        mem: &Region,
        addr: u64,
        avail: u32,
        len: u32,
        comment: Option<String>,
        flags: u32,
    ) {
        let mut o = self.lock();
        if comment.is_none() && flags == 0 {
            o.frame(iface, mem, addr, avail, len, self.snaplen)
        } else {
            o.frame_noted(iface, mem, addr, avail, len, self.snaplen, comment, flags)
        }
    }

    /// A frame in a buffer of ours, `virtio_net_hdr` first (a switch's
    /// TAP port): as [`Tap::frame`].
    pub fn bytes(&self, iface: u32, frame: &[u8], comment: Option<String>, flags: u32) {
        self.lock()
            .bytes(iface, frame, self.snaplen, comment, flags)
    }

    /// An empty record with `comment` on `iface` (a stall, a switch's
    /// drop of a frame it could not read).
    pub fn note(&self, iface: u32, comment: String, flags: u32) {
        self.lock().block(iface, &[], 0, Some(comment), flags)
    }

    /// The end of a switch's forwarding turn: add what was written and
    /// skipped to `stats`; the turn's records shared one timestamp.
    pub fn send_batch(&self, stats: &mut Stats) {
        let mut o = self.lock();
        o.report(stats);
        o.poll_over();
    }
}

impl Poll<'_> {
    /// One event of the poll: a delivered frame is read straight from the
    /// first piece of our RX chain when its header and kept bytes lie
    /// there (the common case); otherwise, and for a drop, the chain is
    /// walked.
    #[inline]
    pub fn event<T: Transport>(&mut self, copier: &mut Copier<T>, ev: &Event) {
        let hdr = NET_HDR_LEN as usize;
        let snaplen = self.tap.snaplen;
        if let Event::Delivered { len, rx_first, .. } = *ev {
            let want = (len as usize).saturating_sub(hdr).min(snaplen);
            if rx_first.len as usize >= hdr + want && len as usize >= hdr {
                let mem = copier.own_memory();
                return self
                    .out
                    .frame(0, mem, rx_first.addr, rx_first.len, len, snaplen);
            }
        }
        self.walked(copier, ev);
    }

    /// An event whose bytes are read by walking its chain: a frame
    /// spread over RX pieces (its header's offload note kept), a drop
    /// (with its reason).
    #[cold]
    fn walked<T: Transport>(&mut self, copier: &mut Copier<T>, ev: &Event) {
        let hdr = NET_HDR_LEN as usize;
        let o = &mut *self.out;
        let (mut data, mut segs) = (std::mem::take(&mut o.scratch), std::mem::take(&mut o.segs));
        data.clear();
        let chain_len = copier.frame_bytes(ev, 0, self.tap.snaplen + hdr, &mut segs, &mut data);
        let (comment, flags) = match ev {
            Event::Delivered { .. } => (
                data.first_chunk::<{ NET_HDR_LEN as usize }>()
                    .and_then(super::notes::offload_note),
                FLAG_INBOUND_DELIVERED,
            ),
            Event::Dropped { reason, peer_head } => (
                Some(super::drop_comment(reason, *peer_head)),
                drop_flags(reason),
            ),
        };
        let kept = data.get(hdr..).unwrap_or(&[]);
        let orig = chain_len.saturating_sub(hdr as u32);
        o.block(0, kept, orig, comment, flags);
        (o.scratch, o.segs) = (data, segs);
    }

    /// The end of the poll: note a stall's start (`rx_full`), add what
    /// was written and skipped to `stats`.
    #[inline]
    pub fn done(mut self, rx_full: bool, stats: &mut Stats) {
        let was = self.tap.stalled.swap(rx_full, Ordering::Relaxed);
        if rx_full && !was {
            self.out
                .block(0, &[], 0, Some(STALL_NOTE.into()), FLAG_INBOUND);
        }
        self.out.report(stats);
    }
}

impl Drop for Poll<'_> {
    fn drop(&mut self) {
        self.out.poll_over();
    }
}
