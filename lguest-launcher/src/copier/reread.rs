//! Reading a frame back after a poll, for a capture tap: what
//! [`Copier::frame_bytes`] returns. Not on the copying path: the tap
//! calls it only for drops and for frames whose kept bytes do not lie in
//! the first piece of the RX chain.

use super::{Copier, Event};
use crate::virtq::Seg;
use transport::Transport;

impl<T: Transport> Copier<T> {
    /// For a capture tap ([`crate::capture`]): the bytes of the frame
    /// `ev` names, skipping the first `skip` (the `virtio_net_hdr`), at most
    /// `snap` of them, appended to `out`; returns the chain's length (0 when it
    /// cannot be read again). A delivered frame is read back from our RX
    /// buffer, a dropped one from the peer's chain, walked and bounds-checked
    /// again (a malformed chain yields nothing).
    pub fn frame_bytes(
        &mut self,
        ev: &Event,
        skip: usize,
        snap: usize,
        segs: &mut Vec<Seg>,
        out: &mut Vec<u8>,
    ) -> u32 {
        let base = out.len();
        let (queue, mem, head, writable) = match *ev {
            Event::Delivered { rx_head, .. } => (&mut self.own_rx, &self.own_mem, rx_head, true),
            Event::Dropped { peer_head, .. } => {
                (&mut self.peer_tx, &self.peer_mem, peer_head, false)
            }
        };
        let Ok(chain) = queue.read_chain(head, writable, segs) else {
            return 0;
        };
        let len = match *ev {
            Event::Delivered { len, .. } => len.min(chain),
            Event::Dropped { .. } => chain,
        };
        let want = base + (len as usize).saturating_sub(skip).min(snap);
        let mut at = 0usize; // offset in the chain
        for s in segs.iter() {
            if out.len() >= want {
                break;
            }
            let (start, end) = (at, at + s.len as usize);
            at = end;
            let from = start.max(skip);
            if from >= end {
                continue;
            }
            let n = (end - from).min(want - out.len());
            let old = out.len();
            out.resize(old + n, 0);
            if mem
                .read("capture", s.addr + (from - start) as u64, &mut out[old..])
                .is_err()
            {
                out.truncate(old);
                break;
            }
        }
        len
    }
}
