//! A burst of stamped frames in one go: the sink's receive and the
//! stream's send at full rate (`--payload stamp`).
//!
//! The general path takes each frame alone: a completion into a list, then
//! per frame the sender switch, the length, the Ethernet header, the stamp,
//! the sequence per sender and four counters, each through memory. A sink
//! of one sender's stamps sees the same thing 64 times a turn: frames for
//! us, each stamped with the next sequence number. So here the expected
//! stamp is built in registers and compared whole with the frame's, the
//! Ethernet filter is one masked compare, and the counters are added once
//! per burst ([`DriverQueue::recycle_while`]). Anything else — a first
//! frame, a new sender, a gap, another length, a foreign or corrupt frame, the end of
//! stream — stops the burst, and the general path ([`Guest::receive`])
//! judges that frame and names what it found, exactly as before.
//!
//! The stream's side is [`DriverQueue::add_slots`]: a burst of descriptors
//! and avail entries with each stamp stored from registers.
//!
//! [`DriverQueue::recycle_while`]: crate::virtq::DriverQueue::recycle_while
//! [`DriverQueue::add_slots`]: crate::virtq::DriverQueue::add_slots

use super::*;
use crate::virtq::{Accept, Heads};

/// The bytes of a frame's first 16 (its Ethernet header and two more) that
/// the receive filter looks at, in a little-endian load: the destination
/// (bytes 0..6) and the EtherType (12..14).
const ETH_FILTER: u128 = ((1u128 << 48) - 1) | (0xFFFF << 96);

/// What [`ETH_FILTER`] keeps of a frame to `dst` of type `ethertype`.
pub(super) fn eth_key(dst: &Mac, ethertype: u16) -> u128 {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(dst);
    b[12..14].copy_from_slice(&ethertype.to_be_bytes());
    u128::from_le_bytes(b)
}

/// A burst's test of each frame ([`Guest::receive_stamps`]).
struct NextStamps {
    /// The length of every frame, as its used entry gives it.
    len: u32,
    /// [`ETH_FILTER`] of the frames for us.
    key: u128,
    /// The sequence number of the burst's first frame.
    next: u64,
    /// The frame's length after the `virtio_net_hdr` and Ethernet header.
    flen: u32,
}

impl Accept for NextStamps {
    /// For us (the filter `receive` applied to the sender's last frame), of
    /// the length of that frame, and with the stamp `check_stamp` accepts
    /// for the next sequence number at this length, compared whole.
    #[inline(always)]
    fn accept(&mut self, i: usize, _: u16, len: u32, (eth, stamp): (u128, u128)) -> bool {
        len == self.len
            && eth & ETH_FILTER == self.key
            && stamp == stamp_word(self.next + i as u64, self.flen)
    }
}

/// Bytes before a frame's stamp in an RX or TX slot.
const BEFORE: u64 = NET_HDR_LEN + ETH_HDR as u64;

impl Guest {
    /// A sink of stamps without `rx_delay`: its frames go through
    /// [`Guest::receive_stamps`] first.
    pub(super) fn stamps_in(&self) -> bool {
        self.workload == Workload::Sink && self.payload == Payload::Stamp && self.rx_delay.is_zero()
    }

    /// Take at most `max` RX completions while each is the next stamped
    /// data frame of the current sender, for us, and post each buffer
    /// again (unpublished). Returns how many, and whether a completion
    /// that is not such a frame stopped the burst (the caller takes it the
    /// general way). The counters, the sender's record and `received` move
    /// as [`Guest::receive`] would have moved them frame by frame.
    ///
    /// A call of its own, not inlined into [`Guest::step`]: there the
    /// loop's values did not fit the registers left and went through the
    /// stack every frame.
    #[inline(never)]
    pub(super) fn receive_stamps(
        &mut self,
        max: u64,
        stats: &mut Stats,
    ) -> Result<(usize, bool), RingError> {
        let pid = self.sender.map_or(0, |(p, _)| p);
        // A sender we have a record of (its first frame went the general
        // way), far from the end-of-stream sequence number.
        let next = match self.senders.last() {
            Some(s) if s.pid == pid && s.last_seq < END_SEQ - (1 << 20) => s.last_seq + 1,
            _ => return Ok((0, true)),
        };
        let mut max = usize::try_from(max).unwrap_or(usize::MAX);
        // Not into the frames of the next peer (see `switch_sender`).
        if let Some(&(from, _)) = self.switches.front() {
            max = max.min(usize::from(from.wrapping_sub(self.rx.last_used())));
        }
        if max == 0 {
            return Ok((0, true));
        }
        // Frames of the length of the last one the filter let through
        // (a stream's frames are all alike; another length goes the
        // general way once and is the length from then on), whose payload
        // fits the slot after its stamp.
        let (key, len) = (self.rx_key, self.rx_len);
        let Some(flen) = u64::from(len)
            .checked_sub(BEFORE)
            .filter(|f| (FRAME_HDR as u64..=BUF_SIZE - BEFORE).contains(f))
        else {
            return Ok((0, true));
        };
        let heads = Heads {
            base: self.layout.rx_bufs,
            stride: BUF_SIZE,
            at: [NET_HDR_LEN, BEFORE],
        };
        let take = NextStamps {
            len,
            key,
            next,
            flen: flen as u32,
        };
        let (n, left) = self.rx.recycle_while(max, heads, take)?;
        if n > 0 {
            if let Some(s) = self.senders.last_mut() {
                s.received += n as u64;
                s.last_seq = next + n as u64 - 1;
            }
            self.received += n as u64;
            stats.packets_received += n as u64;
            stats.bytes_received += n as u64 * flen;
        }
        Ok((n, left))
    }

    /// A stamped stream's next `n` frames (sequence numbers from
    /// `self.sent` on), posted in one burst while every TX slot holds what
    /// `prefill_tx` wrote (`tx_only_stamps`): one descriptor (when it
    /// changed), one avail entry and one 16-byte stamp store each, as
    /// [`Guest::send_seq`] does one at a time. Fewer are posted when the
    /// ring is full; `self.sent` moves by as many as were posted.
    pub(super) fn send_stamps(&mut self, n: u64) -> Result<(), RingError> {
        let size = self.pattern.size() as u32;
        let first = self.sent;
        let (done, result) = self.tx.add_slots(
            usize::try_from(n).unwrap_or(usize::MAX),
            (self.layout.tx_bufs, self.tx_stride),
            BEFORE as u32 + size,
            false,
            (BEFORE, |i| stamp_word(first + i as u64, size)),
        );
        self.sent += done as u64;
        result
    }
}
