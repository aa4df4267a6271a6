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
//! frame, a new sender, a gap, a foreign or corrupt frame, the end of
//! stream — stops the burst, and the general path ([`Guest::receive`])
//! judges that frame and names what it found, exactly as before.
//!
//! The stream's side is [`DriverQueue::add_slots`]: a burst of descriptors
//! and avail entries with each stamp stored from registers.
//!
//! [`DriverQueue::recycle_while`]: crate::virtq::DriverQueue::recycle_while
//! [`DriverQueue::add_slots`]: crate::virtq::DriverQueue::add_slots

use super::*;
use crate::virtq::Heads;

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
        let key = self.rx_key;
        let heads = Heads {
            base: self.layout.rx_bufs,
            stride: BUF_SIZE,
            at: [NET_HDR_LEN, BEFORE],
        };
        let (mut seq, mut bytes) = (next, 0u64);
        let (n, left) = self.rx.recycle_while(max, heads, |_, len, (eth, stamp)| {
            // The payload after the stamp: within the slot, or the general
            // path counts the frame corrupt.
            let rest = u64::from(len).wrapping_sub(BEFORE + FRAME_HDR as u64);
            if rest > BUF_SIZE - BEFORE - FRAME_HDR as u64 {
                return false;
            }
            let flen = rest + FRAME_HDR as u64;
            // For us (the filter `receive` applied to the sender's last
            // frame), and the stamp `check_stamp` accepts for `seq` at this
            // length, compared whole.
            if eth & ETH_FILTER != key || stamp != stamp_word(seq, flen as u32) {
                return false;
            }
            seq += 1;
            bytes += flen;
            true
        })?;
        if n > 0 {
            if let Some(s) = self.senders.last_mut() {
                s.received += n as u64;
                s.last_seq = seq - 1;
            }
            self.received += n as u64;
            stats.packets_received += n as u64;
            stats.bytes_received += bytes;
        }
        Ok((n, left))
    }

    /// A stamped stream's next `n` frames (sequence numbers from
    /// `self.sent` on), posted in one burst while every TX slot holds what
    /// `prefill_tx` wrote (`tx_only_stamps`): one descriptor (when it
    /// changed), one avail entry and one 16-byte stamp store each, as
    /// [`Guest::send_seq`] does one at a time. Returns how many were posted
    /// (fewer when the ring is full); `self.sent` moves by that many.
    pub(super) fn send_stamps(&mut self, n: u64) -> Result<(), RingError> {
        let size = self.pattern.size() as u32;
        let (mem, first) = (&self.tx_mem, self.sent);
        let (done, result) = self.tx.add_slots(
            usize::try_from(n).unwrap_or(usize::MAX),
            (self.layout.tx_bufs, self.tx_stride),
            BEFORE as u32 + size,
            false,
            |i, slot| {
                let seq = first + i as u64;
                Ok::<(), RingError>(mem.store_u128("tx stamp", slot + BEFORE, stamp_word(seq, size))?)
            },
        );
        self.sent += done as u64;
        result
    }
}
