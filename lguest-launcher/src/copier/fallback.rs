//! The copier's offload path: a peer's frame whose `virtio_net_hdr` asks
//! for an offload (see [`crate::offload`] for the story).
//!
//! Off the fast path by construction: [`Copier::copy_one`] copies every
//! frame into our RX buffer as before, then looks at two bytes of *our
//! copy* (flags and `gso_type`; the peer cannot change them under us) and
//! comes here only when they are not zero — or, for a frame larger than
//! our RX buffer, before calling it oversized (a GSO frame may still fit
//! once segmented). Here the header is checked ([`NetHdr::check`]; a bad
//! one drops the chain as `bad_offload`), passed through when our guest
//! accepted what it needs, and otherwise fixed in a scratch copy and
//! delivered as one or more frames, each into its own RX chain.

use super::*;
use crate::offload::{self, NetHdr, OffloadError, NET_HDR};

/// `VIRTIO_NET_F_MRG_RXBUF`: our guest reads `num_buffers`.
const F_MRG_RXBUF: u32 = 15;

/// Longest chain the fallback copies out to fix: a `virtio_net_hdr`, a
/// VLAN-tagged Ethernet header and the largest IP packet. A longer chain
/// is no frame a guest could have built with offloads.
pub const MAX_FIX: u32 = NET_HDR as u32 + 18 + 65535;

/// Read the first `out.len()` bytes of the chain `segs` in `mem`; how many
/// there were (fewer: the chain is shorter, or a piece is out of bounds).
pub(crate) fn read_prefix(mem: &Region, segs: &[Seg], out: &mut [u8]) -> usize {
    let mut got = 0;
    for s in segs {
        if got == out.len() {
            break;
        }
        let n = (s.len as usize).min(out.len() - got);
        if mem
            .read("chain prefix", s.addr, &mut out[got..got + n])
            .is_err()
        {
            break;
        }
        got += n;
    }
    got
}

/// Write `data` over the chain `segs` in `mem` (the caller checked it fits).
pub(crate) fn write_chain(mem: &Region, segs: &[Seg], data: &[u8]) -> Result<(), OutOfBounds> {
    let mut at = 0;
    for s in segs {
        if at == data.len() {
            break;
        }
        let n = (s.len as usize).min(data.len() - at);
        mem.write("chain", s.addr, &data[at..at + n])?;
        at += n;
    }
    Ok(())
}

/// What the copier keeps for the offload path.
#[derive(Debug, Default)]
pub(super) struct OffloadState {
    /// Our guest's features were set: check and fix offload headers. Off
    /// (everything passes as before) until [`Copier::set_guest_features`].
    pub(super) on: bool,
    /// The frame being fixed, copied out of shared memory.
    pub(super) scratch: Vec<u8>,
    /// What the fix produced.
    pub(super) frames: offload::Frames,
    /// Counters, handed to the stats by [`Copier::take_offload_counts`].
    pub(super) counts: offload::OffloadCounts,
}

impl<T: Transport> Copier<T> {
    /// The fast-path test: does our copy of the frame in `self.dst` ask for
    /// no offload (flags and `gso_type` 0)? A chain too short to hold a
    /// header is plain.
    #[inline]
    pub(super) fn plain_header(&self) -> bool {
        if let Some(d) = self.dst.first().filter(|d| d.len >= 2 && d.addr % 2 == 0) {
            // The usual case (our RX buffers start aligned): one load.
            // Relaxed: our own memory, which only our guest and we write,
            // and we wrote these bytes ourselves in this thread.
            return matches!(
                self.own_mem.load_u16(
                    "offload header",
                    d.addr,
                    std::sync::atomic::Ordering::Relaxed
                ),
                Ok(0)
            );
        }
        let mut b = [0u8; 2];
        read_prefix(&self.own_mem, &self.dst, &mut b) < 2 || NetHdr::is_plain(b[0], b[1])
    }

    /// The frame of `len` bytes from the peer's chain `head` is in our RX
    /// chain `rx_head` (`self.dst`) and its header asks for an offload:
    /// check it, deliver it as it is if our guest takes that, else fix it.
    pub(super) fn offload_copied(
        &mut self,
        head: u16,
        rx_head: u16,
        len: u32,
        rx_room: &mut u16,
    ) -> Result<Option<Event>, CopyError> {
        let mut h = [0u8; NET_HDR];
        if read_prefix(&self.own_mem, &self.dst, &mut h) < NET_HDR {
            return Ok(Some(bad_offload(head, OffloadError::NoHeader(len))));
        }
        let hdr = NetHdr::parse(&h);
        let needs = match hdr.check(len - NET_HDR as u32) {
            Ok(n) => n,
            Err(e) => return Ok(Some(bad_offload(head, e))),
        };
        if needs & !self.guest_features == 0 {
            self.offload.counts.passed += 1;
            return self.deliver_copied(head, rx_head, len, rx_room).map(Some);
        }
        if len > MAX_FIX {
            return Ok(Some(bad_offload(head, OffloadError::TooLong(len))));
        }
        // Fix from our own copy: the bytes the header was checked against.
        let mut scratch = std::mem::take(&mut self.offload.scratch);
        scratch.resize(len as usize, 0);
        let got = read_prefix(&self.own_mem, &self.dst, &mut scratch);
        let ev = if got < len as usize {
            Ok(Some(bad_offload(head, OffloadError::NoHeader(len))))
        } else {
            self.fix_and_deliver(head, &mut scratch, &hdr, rx_room)
        };
        self.offload.scratch = scratch;
        ev
    }

    /// The frame of `len` bytes from the peer's chain `head` (in
    /// `self.src`) is larger than our next RX buffer (`room`): a GSO frame
    /// our guest does not take may still fit once segmented. `None` when
    /// there is nothing to fix (a plain header, or one our guest takes
    /// whole): the caller treats it as any frame too large for one buffer
    /// (oversized, or spread over several with mergeable RX buffers).
    pub(super) fn offload_oversized(
        &mut self,
        head: u16,
        len: u32,
        rx_room: &mut u16,
    ) -> Result<Option<Option<Event>>, CopyError> {
        if len > MAX_FIX {
            return Ok(None);
        }
        let mut scratch = std::mem::take(&mut self.offload.scratch);
        scratch.resize(len as usize, 0);
        let got = read_prefix(&self.peer_mem, &self.src, &mut scratch);
        let hdr = NetHdr::parse(
            scratch[..NET_HDR.min(got)]
                .try_into()
                .unwrap_or(&[0; NET_HDR]),
        );
        let ev = if got < len as usize || NetHdr::is_plain(hdr.flags, hdr.gso_type) {
            Ok(None)
        } else {
            match hdr.check(len - NET_HDR as u32) {
                Err(e) => Ok(Some(Some(bad_offload(head, e)))),
                // Our guest takes it whole: nothing to fix here.
                Ok(needs) if needs & !self.guest_features == 0 => Ok(None),
                Ok(_) => self
                    .fix_and_deliver(head, &mut scratch, &hdr, rx_room)
                    .map(Some),
            }
        };
        self.offload.scratch = scratch;
        ev
    }

    /// Fix `chain` (header `hdr`) for our guest and deliver what comes out,
    /// each frame into its own RX chain. All or nothing as far as RX
    /// buffers go: `None` (left for the next poll) until our guest has
    /// posted enough of them.
    fn fix_and_deliver(
        &mut self,
        head: u16,
        chain: &mut [u8],
        hdr: &NetHdr,
        rx_room: &mut u16,
    ) -> Result<Option<Event>, CopyError> {
        let mut frames = std::mem::take(&mut self.offload.frames);
        let fixed = offload::fix(chain, hdr, &mut frames);
        if self.guest_features & 1 << F_MRG_RXBUF != 0 {
            // Each frame fits one RX buffer: a guest with mergeable RX
            // buffers reads `num_buffers` 1.
            frames.set_num_buffers(1);
        }
        let ev = match fixed {
            Err(e) => Ok(Some(bad_offload(head, e))),
            Ok(fixed) => self.deliver_frames(head, &frames, rx_room).inspect(|ev| {
                if matches!(ev, Some(Event::Delivered { .. })) {
                    self.offload.counts.count(fixed);
                }
            }),
        };
        self.offload.frames = frames;
        ev
    }

    /// Deliver each of `frames` into the next RX chain of ours; the events
    /// of all but the last go to `self.events` here, the last is returned.
    fn deliver_frames(
        &mut self,
        head: u16,
        frames: &offload::Frames,
        rx_room: &mut u16,
    ) -> Result<Option<Event>, CopyError> {
        let n = frames.len();
        if (*rx_room as usize) < n {
            *rx_room = self.own_rx.pending().map_err(CopyError::OwnRing)?;
            if (*rx_room as usize) < n {
                if n > self.rx_size as usize {
                    let e = OffloadError::TooManySegments {
                        segments: n as u32,
                        ring: self.rx_size,
                    };
                    return Ok(Some(bad_offload(head, e)));
                }
                // Wait (re-check and RX kicks) until our guest posted all n.
                self.rx_wanted = n as u16;
                return Ok(None);
            }
        }
        let mut last = None;
        for i in 0..n {
            let data = frames.get(i);
            let len = data.len() as u32;
            let rx_head = self.own_rx.peek_head().map_err(CopyError::OwnRing)?;
            self.dst.clear();
            let room = self
                .own_rx
                .read_chain(rx_head, true, &mut self.dst)
                .map_err(|e| CopyError::OwnRing(RingError::OwnChain(e)))?;
            if len > room || write_chain(&self.own_mem, &self.dst, data).is_err() {
                // The segments before this one were delivered.
                return Ok(Some(Event::Dropped {
                    peer_head: head,
                    reason: DropReason::Oversized { len, room },
                }));
            }
            if let Some(ev) = last.take() {
                self.events.push(ev);
            }
            last = Some(self.deliver_copied(head, rx_head, len, rx_room)?);
        }
        Ok(last)
    }

    /// The offload counters since the last call (they move to the stats).
    pub fn take_offload_counts(&mut self) -> offload::OffloadCounts {
        std::mem::take(&mut self.offload.counts)
    }
}

fn bad_offload(head: u16, e: OffloadError) -> Event {
    Event::Dropped {
        peer_head: head,
        reason: DropReason::BadOffload(e),
    }
}
