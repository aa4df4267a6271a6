//! Where things live in a launcher's guest memory.
//!
//! ```text
//! 0x0       TX ring: descriptors | avail (+used_event) | used (+avail_event)
//!           RX ring: the same, page aligned
//!           TX buffers: queue_size slots of BUF_SIZE bytes (slot i = desc i)
//!           RX buffers: queue_size slots of BUF_SIZE bytes
//! ```
//! A slot holds a 12-byte `virtio_net_hdr` and a frame of up to 65535
//! bytes, so any packet size fits one descriptor.
//!
//! # Cache lines
//! The driver (our guest) writes the avail part, the device (the peer's
//! copier, on the other CPU) writes the used part, and each polls the
//! other's index. A line written by one side and read by the other moves
//! between the CPUs on every write, and on this kind of machine a move
//! costs 60 to 300 ns (BENCHMARKS.md, "Spread and adaptive"), so each
//! ring is laid out so that no line holds fields of both sides, and no
//! line a side polls holds anything the other side writes often:
//!
//! ```text
//! line  avail header: flags, idx in its last 4 bytes (avail = line + 60)
//! line  avail entries 0..31, then 32..63, ... (line aligned)
//! line  used_event
//! line  used header: flags, idx in its last 4 bytes (used = line + 60)
//! line  used entries 0..7, then 8..15, ... (line aligned)
//! line  avail_event
//! ```
//!
//! The headers sit at the end of their own line (the split ring puts the
//! index right before the entries), so the index a peer polls shares its
//! line with no entry its writer keeps storing: with the index at the
//! start of the entries' first line, a copier polling the avail index
//! pulled that line away from the guest every time the guest wrote one of
//! the 30 entries beside it. Each header line starts a 128-byte pair whose
//! other line is its own side's entries (the adjacent-line prefetcher
//! fetches lines in such pairs), and an entry never straddles two lines.

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

/// A cache line.
const LINE: u64 = 64;
/// Two lines: what the adjacent-line prefetcher fetches together.
const PAIR: u64 = 2 * LINE;

fn align(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// A ring at or after `start`: descriptors page aligned, then the avail
/// and used parts as the module doc draws them. Returns the ring and where
/// it ends.
fn ring_at(start: u64, size: u32) -> (RingInfo, u64) {
    let probe = RingInfo {
        size,
        ..RingInfo::default()
    };
    let desc = align(start, 4096);
    // The split ring's header (flags, idx) is 4 bytes before its entries.
    let avail_header = align(desc + probe.desc_bytes(), PAIR);
    let avail = avail_header + LINE - 4;
    let used_header = align(avail + probe.avail_bytes(), PAIR);
    let used = used_header + LINE - 4;
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
    fn no_cache_line_holds_fields_of_both_sides() {
        for size in [1u32, 2, 64, 256, 1024, 32768] {
            let l = Layout::plan(size);
            for r in [l.tx, l.rx] {
                let line = |at: u64| at / 64;
                let size = u64::from(r.size);
                // Bytes the driver writes, then those the device writes.
                let driver = [(r.avail, 4 + 2 * size + 2), (r.desc, 16 * size)];
                let device = [(r.used, 4 + 8 * size + 2)];
                for (d, dl) in driver {
                    for (v, vl) in device {
                        let (d0, d1) = (line(d) / 2, line(d + dl - 1) / 2);
                        let (v0, v1) = (line(v) / 2, line(v + vl - 1) / 2);
                        assert!(d1 < v0 || v1 < d0, "size {size}: pairs shared");
                    }
                }
                // Each index alone at the end of its line, entries line aligned.
                assert_eq!((r.avail + 4) % 64, 0, "size {size}");
                assert_eq!((r.used + 4) % 64, 0, "size {size}");
                // The header's line starts a 128-byte pair.
                assert_eq!(r.avail / 64 % 2, 0, "size {size}");
                assert_eq!(r.used / 64 % 2, 0, "size {size}");
            }
        }
    }

    #[test]
    fn large_queue_needs_more_memory() {
        assert!(Layout::plan(1024).needed_mib() > 64);
    }
}
