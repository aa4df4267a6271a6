//! The copier: the device half of a launcher, generic over the transport.
//!
//! When the peer's guest has put packets on its TX ring, our copier *pulls*
//! them (the original's direction: the receiver copies). For each available
//! chain on the peer's TX ring it
//!
//! 1. walks and checks the peer's chain (every descriptor read once, every
//!    buffer inside the peer's mapping — see [`DeviceQueue::read_chain`]);
//! 2. takes a buffer from our own RX ring, or, if our guest has posted none,
//!    stops and leaves the peer's chain where it is (nothing is dropped; we
//!    count `rx_ring_full` and continue once our guest posts buffers);
//! 3. gathers the peer's pieces into our RX pieces, never past either;
//! 4. marks both used.
//!
//! After a batch (everything available per wake-up) it publishes both used
//! indexes and tells the peer, if the peer's guest asked to be told, that
//! its TX buffers are free. A malformed chain is dropped, counted by class
//! in `peer_errors`, and returned to the peer as used with length 0; ring
//! state that an honest peer cannot produce (an avail index that jumps by
//! more than the queue size) ends the link with a [`RingError`].
//!
//! Every packet and every drop passes through [`Copier::poll`]: that is the
//! one place a capture tap or per-packet hook would go.

use crate::memory::{GuestMap, Region};
use crate::ring::{ChainError, DeviceQueue, NotifyMode, RingError, Seg};
use crate::stats::Stats;
use std::sync::Arc;
use transport::{Notify, RingInfo, Transport};

/// Why the copier stopped the link.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The peer's ring is in an impossible state.
    #[error("peer ring: {0}")]
    PeerRing(RingError),
    /// Our own ring is broken (our guest's bug, or memory scribbled on).
    #[error("own ring: {0}")]
    OwnRing(String),
    /// The transport failed (peer gone, I/O).
    #[error(transparent)]
    Transport(#[from] transport::Error),
}

/// Pulls packets from the peer's TX ring into our RX ring.
pub struct Copier<T: Transport> {
    transport: Arc<T>,
    peer_mem: Region,
    own_mem: Region,
    peer_tx: DeviceQueue,
    own_rx: DeviceQueue,
    mode: NotifyMode,
    src: Vec<Seg>,
    dst: Vec<Seg>,
    rx_published: Option<(u16, u16)>,
}

/// Send one notification to the peer and count what happened.
pub fn notify<T: Transport>(t: &T, stats: &mut Stats) -> Result<(), transport::Error> {
    match t.notify()? {
        Notify::Sent => stats.notifications_sent += 1,
        Notify::AlreadyPending => stats.notifications_pending += 1,
    }
    Ok(())
}

fn count_chain_error(stats: &mut Stats, e: &ChainError) {
    stats.peer_errors += 1;
    match e {
        ChainError::BadIndex { .. } => stats.peer_bad_index += 1,
        ChainError::OutOfBounds { .. } => stats.peer_out_of_bounds += 1,
        ChainError::Loop { .. } => stats.peer_loop += 1,
        ChainError::WrongDirection { .. } => stats.peer_wrong_direction += 1,
        ChainError::Indirect { .. } => stats.peer_indirect += 1,
        ChainError::BadLength { .. } => stats.peer_bad_length += 1,
    }
}

/// Copy the bytes of `src` pieces (in `src_mem`) into `dst` pieces (in
/// `dst_mem`), in order. The caller checked that `dst` holds at least as
/// much as `src`; every piece was bounds-checked when its chain was read,
/// and [`Region::copy_from`] checks again.
pub fn gather_scatter(
    dst_mem: &Region,
    dst: &[Seg],
    src_mem: &Region,
    src: &[Seg],
) -> Result<u64, crate::memory::OutOfBounds> {
    let (mut di, mut doff) = (0usize, 0u64);
    let mut copied = 0u64;
    for s in src {
        let mut soff = 0u64;
        while soff < s.len as u64 {
            let Some(d) = dst.get(di) else {
                return Ok(copied); // caller guaranteed room; never past dst
            };
            let n = (s.len as u64 - soff).min(d.len as u64 - doff);
            if n > 0 {
                dst_mem.copy_from(d.addr + doff, src_mem, s.addr + soff, n)?;
            }
            soff += n;
            doff += n;
            copied += n;
            if doff == d.len as u64 {
                di += 1;
                doff = 0;
            }
        }
    }
    Ok(copied)
}

impl<T: Transport> Copier<T> {
    /// A copier from the peer's TX ring (`peer_tx` in `peer`) into our RX
    /// ring (`own_rx` in `own`); ring addresses are guest-physical.
    pub fn new(
        transport: Arc<T>,
        peer: &GuestMap,
        peer_tx: &RingInfo,
        own: &GuestMap,
        own_rx: &RingInfo,
        mode: NotifyMode,
    ) -> Result<Self, RingError> {
        Ok(Copier {
            transport,
            peer_tx: DeviceQueue::new(peer, peer_tx)?,
            own_rx: DeviceQueue::new(own, own_rx)?,
            peer_mem: peer.region().clone(),
            own_mem: own.region().clone(),
            mode,
            src: Vec::with_capacity(8),
            dst: Vec::with_capacity(8),
            rx_published: None,
        })
    }

    /// The `(old, new)` used indexes of our RX ring from the last
    /// [`Copier::poll`] that delivered something (for a guest whose
    /// interrupts go elsewhere, such as a VM's call eventfd).
    pub fn take_rx_published(&mut self) -> Option<(u16, u16)> {
        self.rx_published.take()
    }

    /// Does our guest want an interrupt for RX used `old..new`?
    pub fn rx_interrupt_needed(&self, old: u16, new: u16) -> Result<bool, CopyError> {
        self.own_rx
            .interrupt_needed(self.mode, old, new)
            .map_err(|e| CopyError::OwnRing(e.to_string()))
    }

    /// Ask our guest to kick us when it posts RX buffers (or not).
    pub fn set_rx_notifications(&self, enable: bool) -> Result<(), CopyError> {
        self.own_rx
            .set_notifications(self.mode, enable)
            .map_err(|e| CopyError::OwnRing(e.to_string()))
    }

    /// Move every packet we can. Returns how many chains of the peer's we
    /// finished (copied or dropped).
    pub fn poll(&mut self, stats: &mut Stats) -> Result<usize, CopyError> {
        let pending = self.peer_tx.pending().map_err(CopyError::PeerRing)?;
        let mut done = 0usize;
        let mut rx_used = 0usize;
        for _ in 0..pending {
            let head = self.peer_tx.peek_head().map_err(CopyError::PeerRing)?;
            let len = match self.peer_tx.read_chain(head, false, &mut self.src) {
                Ok(len) => len,
                Err(e) => {
                    count_chain_error(stats, &e);
                    self.finish_peer_chain(head)?;
                    done += 1;
                    continue;
                }
            };
            let avail = self
                .own_rx
                .pending()
                .map_err(|e| CopyError::OwnRing(e.to_string()))?;
            if avail == 0 {
                // Our guest has not posted buffers: leave the peer's chain in
                // place; we come back when it does.
                stats.rx_ring_full += 1;
                break;
            }
            let rx_head = self
                .own_rx
                .peek_head()
                .map_err(|e| CopyError::OwnRing(e.to_string()))?;
            let room = self
                .own_rx
                .read_chain(rx_head, true, &mut self.dst)
                .map_err(|e| CopyError::OwnRing(e.to_string()))?;
            if len > room {
                // A frame larger than any buffer we post: drop it, count it.
                count_chain_error(stats, &ChainError::BadLength { total: len as u64 });
                self.finish_peer_chain(head)?;
                done += 1;
                continue;
            }
            match gather_scatter(&self.own_mem, &self.dst, &self.peer_mem, &self.src) {
                Ok(_) => {}
                Err(_) => {
                    count_chain_error(
                        stats,
                        &ChainError::OutOfBounds {
                            addr: 0,
                            len,
                            mem: self.peer_mem.len(),
                        },
                    );
                    self.finish_peer_chain(head)?;
                    done += 1;
                    continue;
                }
            }
            self.own_rx.advance();
            self.own_rx
                .add_used(rx_head, len)
                .map_err(|e| CopyError::OwnRing(e.to_string()))?;
            rx_used += 1;
            self.finish_peer_chain(head)?;
            done += 1;
        }
        if rx_used > 0 {
            // A synthetic guest runs in this thread and polls its used
            // ring, so the publish itself is its "interrupt"; a VM's
            // launcher asks `take_rx_published` whether to signal it.
            let (old, new) = self
                .own_rx
                .publish_used()
                .map_err(|e| CopyError::OwnRing(e.to_string()))?;
            self.rx_published = Some(match self.rx_published {
                Some((first, _)) => (first, new),
                None => (old, new),
            });
        }
        if done > 0 {
            let (old, new) = self.peer_tx.publish_used().map_err(CopyError::PeerRing)?;
            if self
                .peer_tx
                .interrupt_needed(self.mode, old, new)
                .map_err(CopyError::PeerRing)?
            {
                notify(&*self.transport, stats)?;
            } else {
                stats.notifications_suppressed += 1;
            }
        }
        Ok(done)
    }

    fn finish_peer_chain(&mut self, head: u16) -> Result<(), CopyError> {
        self.peer_tx.advance();
        self.peer_tx.add_used(head, 0).map_err(CopyError::PeerRing)
    }

    /// Is there a peer packet we could move right now? Used for the
    /// re-check after re-enabling notifications, before sleeping.
    pub fn has_work(&self) -> Result<bool, CopyError> {
        let pending = self.peer_tx.pending().map_err(CopyError::PeerRing)?;
        if pending == 0 {
            return Ok(false);
        }
        let room = self
            .own_rx
            .pending()
            .map_err(|e| CopyError::OwnRing(e.to_string()))?;
        Ok(room > 0)
    }

    /// Ask the peer to kick us (before sleeping) or not (while busy).
    pub fn set_notifications(&self, enable: bool) -> Result<(), CopyError> {
        self.peer_tx
            .set_notifications(self.mode, enable)
            .map_err(CopyError::PeerRing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::GuestMemory;

    #[test]
    fn gather_scatter_crosses_piece_boundaries_and_stops_at_dst_end() {
        let a = GuestMemory::create("a", 1 << 16).unwrap();
        let b = GuestMemory::create("b", 1 << 16).unwrap();
        let data: Vec<u8> = (0..100u8).collect();
        a.region().write("t", 1000, &data[..30]).unwrap();
        a.region().write("t", 5000, &data[30..]).unwrap();
        let src = [
            Seg {
                addr: 1000,
                len: 30,
            },
            Seg {
                addr: 5000,
                len: 70,
            },
        ];
        let dst = [
            Seg { addr: 0, len: 12 },
            Seg { addr: 800, len: 50 },
            Seg {
                addr: 3000,
                len: 100,
            },
        ];
        let n = gather_scatter(b.region(), &dst, a.region(), &src).unwrap();
        assert_eq!(n, 100);
        let mut out = vec![0u8; 100];
        b.region().read("t", 0, &mut out[..12]).unwrap();
        b.region().read("t", 800, &mut out[12..62]).unwrap();
        b.region().read("t", 3000, &mut out[62..]).unwrap();
        assert_eq!(out, data);
        // Too little room: copies exactly what fits, never beyond.
        let small = [Seg { addr: 0, len: 40 }];
        assert_eq!(
            gather_scatter(b.region(), &small, a.region(), &src).unwrap(),
            40
        );
    }
}
