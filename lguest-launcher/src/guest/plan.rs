//! Where things live in a launcher's guest memory.
//!
//! ```text
//! 0x0       TX ring: descriptors | avail (+used_event) | used (+avail_event)
//!           RX ring: the same, page aligned
//!           TX buffers: queue_size slots of BUF_SIZE bytes (slot i = desc i)
//!           RX buffers: queue_size slots of BUF_SIZE bytes
//! ```
//! A slot holds a 12-byte `virtio_net_hdr` and a frame of up to 65535
//! bytes, so any packet size fits one descriptor. The avail and used parts
//! of each ring start on separate cache lines: the driver writes one, the
//! device the other.

use transport::RingInfo;

/// Bytes of `virtio_net_hdr` (virtio 1.x, with `num_buffers`) before each frame.
pub const NET_HDR_LEN: u64 = 12;
/// Largest frame (`--size`) we carry.
pub const MAX_FRAME: u64 = 65535;
/// Size of one packet buffer slot: header + largest frame, 64-byte aligned.
pub const BUF_SIZE: u64 = (NET_HDR_LEN + MAX_FRAME).div_ceil(64) * 64;

/// The plan of one launcher's memory.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Our guest's TX ring (the peer's copier pulls from it).
    pub tx: RingInfo,
    /// Our guest's RX ring (our copier fills it).
    pub rx: RingInfo,
    /// Offset of TX buffer slot 0.
    pub tx_bufs: u64,
    /// Offset of RX buffer slot 0.
    pub rx_bufs: u64,
    /// Bytes the plan needs.
    pub needed: u64,
}

fn align(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

fn ring_at(start: u64, size: u32) -> (RingInfo, u64) {
    let probe = RingInfo {
        size,
        ..RingInfo::default()
    };
    let desc = align(start, 4096);
    let avail = desc + probe.desc_bytes();
    let used = align(avail + probe.avail_bytes(), 64);
    let end = used + probe.used_bytes();
    (
        RingInfo {
            desc,
            avail,
            used,
            size,
        },
        end,
    )
}

impl Layout {
    /// Plan rings and buffers for `queue_size` entries. Returns the plan even
    /// when it does not fit; compare `needed` with the memory size.
    pub fn plan(queue_size: u32) -> Layout {
        let (tx, end) = ring_at(0, queue_size);
        let (rx, end) = ring_at(end, queue_size);
        let tx_bufs = align(end, 4096);
        let rx_bufs = tx_bufs + BUF_SIZE * queue_size as u64;
        let needed = rx_bufs + BUF_SIZE * queue_size as u64;
        Layout {
            tx,
            rx,
            tx_bufs,
            rx_bufs,
            needed,
        }
    }

    /// Smallest `--memory` in MiB that holds this plan.
    pub fn needed_mib(&self) -> u64 {
        self.needed.div_ceil(1 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_fits_64_mib_and_passes_handshake_checks() {
        let l = Layout::plan(256);
        assert!(l.needed <= 64 << 20);
        let h = transport::Handshake::new(1, 0, 64 << 20, 3, l.tx, l.rx);
        h.validate().unwrap();
        assert!(l.tx.used >= l.tx.avail + l.tx.avail_bytes());
        assert!(l.rx.desc >= l.tx.used + l.tx.used_bytes());
        assert!(l.tx_bufs >= l.rx.used + l.rx.used_bytes());
    }

    #[test]
    fn large_queue_needs_more_memory() {
        assert!(Layout::plan(1024).needed_mib() > 64);
    }
}
