//! Mergeable RX buffers (`VIRTIO_NET_F_MRG_RXBUF`): one frame, several RX
//! chains.
//!
//! A guest that accepted MRG_RXBUF posts RX buffers about the size of the
//! frames it usually gets (Linux: 1.5 to 4 KiB, one descriptor each) and
//! expects a larger frame — a 64 KiB TCP segment of a peer with TSO — to
//! arrive spread over as many of them as it takes. The first buffer's
//! `virtio_net_hdr` says how many (`num_buffers`, the little-endian `u16`
//! at byte 10 of the 12-byte header); each buffer is marked used with the
//! bytes written into it, and all of them are published together with the
//! rest of the batch, so the guest never sees part of a frame.
//!
//! The one-chain case stays the copier's fast path (a frame that fits the
//! chain at the head); it only gains the 2-byte `num_buffers = 1` store,
//! which a mergeable guest needs on every frame (Linux reads 0 as "65535
//! buffers" and drops the frame: "rx error: ... buffers missing").
//!
//! Every further chain is walked and checked as the first one is
//! ([`DeviceQueue::read_chain`](crate::virtq::DeviceQueue::read_chain)),
//! only chains the guest made available are taken, and nothing is consumed
//! until the frame fits: when the guest has not posted enough buffers yet,
//! the frame waits at the head of the peer's ring (as with no buffer at
//! all), and [`Copier::rx_wanted`] says how many chains to wait for, so
//! the re-check and the guest's kick (`avail_event`) wait for all of them
//! instead of waking per buffer. A frame larger than every buffer the ring
//! can hold at once is dropped as `oversized`.

use super::{gather_scatter, ChainError, Copier, CopyError, DropReason, Event, RingError, Seg};
use crate::memory::{OutOfBounds, Region};
use transport::Transport;

/// `VIRTIO_NET_F_MRG_RXBUF`.
pub(crate) const MRG_RXBUF: u64 = 1 << 15;
/// Where `num_buffers` sits in the 12-byte `virtio_net_hdr_v1`.
const NUM_BUFFERS_AT: u64 = 10;
/// The header's length (VERSION_1: always 12 bytes).
const HDR_LEN: u32 = 12;

/// Per-copier scratch for frames that span several RX chains.
#[derive(Default)]
pub(super) struct Scratch {
    /// The pieces of one further chain, as `read_chain` walks it.
    more: Vec<Seg>,
    /// The chains of the frame being delivered: `(head, room)`.
    chains: Vec<(u16, u32)>,
}

/// Set `num_buffers` to `n` in the header of a frame of `len` bytes just
/// written into the RX pieces `dst` (in `mem`); a frame shorter than the
/// header has none. The copier's, and a switch's push port's
/// (`switch/push.rs`), for a guest that accepted `MRG_RXBUF`.
pub(crate) fn put_num_buffers(
    mem: &Region,
    dst: &[Seg],
    len: u32,
    n: u16,
) -> Result<(), OutOfBounds> {
    if len < HDR_LEN {
        return Ok(());
    }
    write_at(mem, dst, NUM_BUFFERS_AT, &n.to_le_bytes())
}

/// Write `bytes` at byte `at` of the buffer made of `dst`'s pieces (the
/// header may straddle pieces: a guest's chain can split it anywhere).
fn write_at(mem: &Region, dst: &[Seg], mut at: u64, bytes: &[u8]) -> Result<(), OutOfBounds> {
    let mut done = 0usize;
    for d in dst {
        if done == bytes.len() {
            break;
        }
        let len = d.len as u64;
        if at >= len {
            at -= len;
            continue;
        }
        let n = ((len - at) as usize).min(bytes.len() - done);
        mem.write("num_buffers", d.addr + at, &bytes[done..done + n])?;
        done += n;
        at = 0;
    }
    Ok(())
}

impl<T: Transport> Copier<T> {
    /// Did our guest accept mergeable RX buffers?
    #[inline]
    pub(super) fn mergeable(&self) -> bool {
        self.guest_features & MRG_RXBUF != 0
    }

    /// Set `num_buffers` in the header of the frame (of `len` bytes) just
    /// copied into `self.dst`. A frame shorter than the header has none.
    pub(super) fn write_num_buffers(&self, len: u32, n: u16) -> Result<(), OutOfBounds> {
        put_num_buffers(&self.own_mem, &self.dst, len, n)
    }

    /// Deliver the peer's frame `head` (`len` bytes, in `self.src`) into the
    /// RX chain `rx_head` (`room` bytes, in `self.dst`) and as many of the
    /// following chains as it takes. `None` when our guest has not posted
    /// enough yet (nothing consumed; `rx_wanted` says how many chains).
    pub(super) fn deliver_merged(
        &mut self,
        head: u16,
        len: u32,
        rx_head: u16,
        room: u32,
        rx_room: &mut u16,
    ) -> Result<Option<Event>, CopyError> {
        let own = |e: ChainError| CopyError::OwnRing(RingError::OwnChain(e));
        self.merge.chains.clear();
        self.merge.chains.push((rx_head, room));
        let mut total = u64::from(room);
        let mut k: u16 = 1; // chains taken so far
        while total < u64::from(len) {
            if k >= *rx_room {
                *rx_room = self.own_rx.pending().map_err(CopyError::OwnRing)?;
                if k >= *rx_room {
                    if *rx_room >= self.own_rx.size() {
                        // Every chain the ring can hold is posted and the
                        // frame still does not fit: it never will.
                        return Ok(Some(Event::Dropped {
                            peer_head: head,
                            reason: DropReason::Oversized {
                                len,
                                room: u32::try_from(total).unwrap_or(u32::MAX),
                            },
                        }));
                    }
                    self.rx_wanted = k + 1;
                    return Ok(None);
                }
            }
            let h = self.own_rx.peek_head_at(k).map_err(CopyError::OwnRing)?;
            let r = self
                .own_rx
                .read_chain(h, true, &mut self.merge.more)
                .map_err(own)?;
            self.dst.extend_from_slice(&self.merge.more);
            self.merge.chains.push((h, r));
            total += u64::from(r);
            k += 1;
        }
        if gather_scatter(&self.own_mem, &self.dst, &self.peer_mem, &self.src).is_err() {
            return Ok(Some(Event::Dropped {
                peer_head: head,
                reason: DropReason::Malformed(ChainError::OutOfBounds {
                    addr: 0,
                    len,
                    mem: self.peer_mem.len(),
                }),
            }));
        }
        self.write_num_buffers(len, k)
            .map_err(|e| CopyError::OwnRing(RingError::Memory(e)))?;
        // Each chain used with what it holds of the frame; published with
        // the batch (`poll`), all together.
        let mut left = len;
        for &(h, r) in &self.merge.chains {
            let n = left.min(r);
            self.own_rx.advance();
            self.own_rx.add_used(h, n).map_err(CopyError::OwnRing)?;
            left -= n;
        }
        *rx_room -= k;
        // An offload header that reached here was checked and found to be
        // one our guest takes (`offload_oversized`): it passed unchanged.
        if self.offload.on && !self.plain_header() {
            self.offload.counts.passed += 1;
        }
        Ok(Some(Event::Delivered {
            peer_head: head,
            rx_head,
            len,
            rx_first: self.dst.first().copied().unwrap_or(Seg { addr: 0, len: 0 }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::plan::{Layout, BUF_SIZE};
    use crate::memory::{GuestMap, GuestMemory};
    use crate::virtq::{DriverQueue, NotifyMode};
    use std::os::fd::BorrowedFd;
    use std::time::Duration;
    use transport::{ConnectOptions, Handshake, Notify, PeerInfo, Wakeup};

    /// The copier needs a transport for its type; these tests call `poll`
    /// only, which notifies nobody.
    struct NoLink(std::fs::File);

    impl Transport for NoLink {
        const KIND: &'static str = "none";
        fn connect(
            _: &std::path::Path,
            _: &Handshake,
            _: BorrowedFd<'_>,
            _: &ConnectOptions,
        ) -> transport::Result<(Self, PeerInfo)> {
            Err(transport::Error::NotImplemented("none"))
        }
        fn notify(&self) -> transport::Result<Notify> {
            Ok(Notify::Sent)
        }
        fn wait(&self, _: Option<Duration>) -> transport::Result<Wakeup> {
            Ok(Wakeup::Timeout)
        }
        fn as_fd(&self) -> BorrowedFd<'_> {
            std::os::fd::AsFd::as_fd(&self.0)
        }
        fn peer_pid(&self) -> u32 {
            1
        }
    }

    #[test]
    fn write_at_straddles_pieces() {
        let m = GuestMemory::create("m", 1 << 16).unwrap();
        let dst = [Seg { addr: 100, len: 11 }, Seg { addr: 500, len: 8 }];
        write_at(m.region(), &dst, 10, &[0xaa, 0xbb]).unwrap();
        let (mut a, mut b) = ([0u8; 1], [0u8; 1]);
        m.region().read("t", 110, &mut a).unwrap();
        m.region().read("t", 500, &mut b).unwrap();
        assert_eq!((a[0], b[0]), (0xaa, 0xbb));
    }

    /// A peer (a TX ring we drive in its memory) and our guest (an RX ring
    /// we drive in ours, 64 descriptors), joined by a real copier.
    struct Pair {
        peer: GuestMemory,
        own: GuestMemory,
        layout: Layout,
        peer_tx: DriverQueue,
        own_rx: DriverQueue,
        copier: Copier<NoLink>,
    }

    /// GUEST_CSUM, GUEST_TSO4, GUEST_TSO6, GUEST_ECN.
    const TAKES_OFFLOADS: u64 = (1 << 1) | (1 << 7) | (1 << 8) | (1 << 9);

    fn pair(features: u64) -> Pair {
        let layout = Layout::plan(64);
        let peer = GuestMemory::create("peer", layout.needed).unwrap();
        let own = GuestMemory::create("own", layout.needed).unwrap();
        let mut copier = Copier::new(
            NoLink(std::fs::File::open("/dev/null").unwrap()),
            &GuestMap::identity(peer.region().clone()),
            &layout.tx,
            &GuestMap::identity(own.region().clone()),
            &layout.rx,
            NotifyMode::EventIdx,
        )
        .unwrap();
        // The frames below carry an offload header (NEEDS_CSUM, TCPV4) over
        // a made-up payload: a guest that takes it as it is, so it passes
        // through (a guest that did not would get it fixed, crate::offload).
        copier.set_guest_features(features | TAKES_OFFLOADS);
        Pair {
            peer_tx: DriverQueue::new(peer.region().clone(), &layout.tx),
            own_rx: DriverQueue::new(own.region().clone(), &layout.rx),
            peer,
            own,
            layout,
            copier,
        }
    }

    impl Pair {
        /// The peer sends one frame of `len` bytes: a header with flags
        /// and gso fields set (they must pass through) and num_buffers 0
        /// (as a TX header has it), then bytes `i * 7 + 3`.
        fn send(&mut self, len: u32) -> Vec<u8> {
            let mut f: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(7) + 3) as u8).collect();
            f[..12].copy_from_slice(&[1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0, 0, 0]);
            let (_, addr) = self
                .peer_tx
                .add_slot(self.layout.tx_bufs, BUF_SIZE, len, false)
                .unwrap()
                .unwrap();
            self.peer.region().write("t", addr, &f).unwrap();
            self.peer_tx.publish().unwrap();
            f
        }

        /// Our guest posts `n` RX buffers of `size` bytes, one descriptor
        /// each (Linux's mergeable buffers).
        fn post(&mut self, n: u16, size: u32) {
            for _ in 0..n {
                self.own_rx
                    .add_slot(self.layout.rx_bufs, BUF_SIZE, size, true)
                    .unwrap()
                    .unwrap();
            }
            self.own_rx.publish().unwrap();
        }

        /// Every used RX buffer's bytes, in used-ring order.
        fn received(&mut self) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            while let Some((id, len)) = self.own_rx.pop_used().unwrap() {
                let addr = self.layout.rx_bufs + id as u64 * BUF_SIZE;
                let mut b = vec![0u8; len as usize];
                self.own.region().read("t", addr, &mut b).unwrap();
                out.push(b);
            }
            out
        }
    }

    fn num_buffers(first: &[u8]) -> u16 {
        u16::from_le_bytes([first[10], first[11]])
    }

    /// The frame as the guest reassembles it, checked byte for byte: the
    /// header as sent but for num_buffers, then every payload byte.
    fn check_frame(got: &[Vec<u8>], sent: &[u8]) {
        let joined: Vec<u8> = got.concat();
        assert_eq!(joined.len(), sent.len());
        assert_eq!(joined[..10], sent[..10], "the header passes through");
        assert_eq!(joined[12..], sent[12..], "every payload byte");
    }

    #[test]
    fn frame_larger_than_one_buffer_spans_several_with_num_buffers_set() {
        let mut p = pair(MRG_RXBUF);
        p.post(60, 1536);
        let sent = p.send(12 + 65_000);
        let out = p.copier.poll().unwrap();
        assert_eq!((out.moved, out.dropped), (1, 0));
        assert_eq!(out.rx_used, Some((0, 43)), "43 buffers, published at once");
        let got = p.received();
        assert_eq!(got.len(), 43);
        assert_eq!(num_buffers(&got[0]), 43);
        assert!(
            got[..42].iter().all(|b| b.len() == 1536),
            "full but the last"
        );
        check_frame(&got, &sent);
        assert_eq!(
            p.copier.take_offload_counts().passed,
            1,
            "the GSO frame passed whole is counted as passed"
        );
        // The next, small frame takes one buffer and says so.
        let small = p.send(200);
        assert_eq!(p.copier.poll().unwrap().moved, 1);
        assert_eq!(p.copier.take_offload_counts().passed, 1);
        let got = p.received();
        assert_eq!((got.len(), num_buffers(&got[0])), (1, 1));
        check_frame(&got, &small);
    }

    #[test]
    fn frame_waits_until_the_guest_posted_enough_buffers() {
        let mut p = pair(MRG_RXBUF);
        p.post(20, 1536);
        let sent = p.send(12 + 65_000);
        let out = p.copier.poll().unwrap();
        assert_eq!((out.moved, out.dropped, out.rx_full), (0, 0, true));
        assert_eq!(out.rx_used, None, "nothing taken from the guest");
        assert!(!p.copier.has_work().unwrap(), "20 buffers do not do");
        assert_eq!(p.copier.rx_wanted, 21);
        // 42: worth a look (more than it had), still short by one.
        p.post(22, 1536);
        assert!(p.copier.has_work().unwrap());
        let out = p.copier.poll().unwrap();
        assert_eq!((out.moved, out.rx_full), (0, true));
        assert_eq!(p.copier.rx_wanted, 43);
        assert!(!p.copier.has_work().unwrap());
        p.post(1, 1536);
        assert!(p.copier.has_work().unwrap());
        let out = p.copier.poll().unwrap();
        assert_eq!(out.moved, 1);
        let got = p.received();
        assert_eq!((got.len(), num_buffers(&got[0])), (43, 43));
        check_frame(&got, &sent);
        assert_eq!(p.copier.rx_wanted, 1);
    }

    #[test]
    fn frame_larger_than_every_buffer_the_ring_holds_is_dropped_as_oversized() {
        let mut p = pair(MRG_RXBUF);
        p.post(64, 100);
        p.send(12 + 65_000);
        let out = p.copier.poll().unwrap();
        assert_eq!((out.moved, out.dropped), (0, 1));
        assert!(matches!(
            p.copier.events()[0],
            Event::Dropped {
                reason: DropReason::Oversized { room: 6400, .. },
                ..
            }
        ));
        assert!(p.received().is_empty(), "no buffer of the guest's used");
    }

    #[test]
    fn without_mergeable_buffers_the_header_is_untouched_and_a_big_frame_is_oversized() {
        let mut p = pair(0);
        p.post(10, 1536);
        let sent = p.send(1000);
        assert_eq!(p.copier.poll().unwrap().moved, 1);
        let got = p.received();
        assert_eq!(got, vec![sent], "num_buffers left as the peer wrote it");
        p.send(5000);
        assert_eq!(p.copier.poll().unwrap().dropped, 1);
    }

    #[test]
    fn big_packet_chain_takes_a_64k_frame_in_one_chain() {
        // GUEST_TSO without MRG_RXBUF: Linux posts one chain of a header
        // buffer and 17 pages per frame ("big packets").
        let mut p = pair(1 << 7);
        let base = p.layout.rx_bufs;
        let mut segs = vec![Seg {
            addr: base,
            len: 12,
        }];
        for i in 0..17u64 {
            segs.push(Seg {
                addr: base + 4096 * (1 + i),
                len: 4096,
            });
        }
        p.own_rx.add(&segs, true).unwrap().unwrap();
        p.own_rx.publish().unwrap();
        let sent = p.send(12 + 65_000);
        assert_eq!(p.copier.poll().unwrap().moved, 1);
        let (id, len) = p.own_rx.pop_used().unwrap().unwrap();
        assert_eq!(len, 12 + 65_000);
        let _ = id;
        let mut got = vec![0u8; 12];
        p.own.region().read("t", base, &mut got).unwrap();
        let mut rest = vec![0u8; 65_000];
        p.own.region().read("t", base + 4096, &mut rest).unwrap();
        got.extend(rest);
        assert_eq!(got, sent, "header untouched, every byte in place");
    }
}
