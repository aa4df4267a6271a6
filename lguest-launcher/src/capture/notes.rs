//! What a record says besides its bytes: EPB flags, the comment of a
//! frame that asks for offloads, of a drop, and the closing line.

use crate::copier::DropReason;
use crate::guest::plan::NET_HDR_LEN;
use crate::stats::Stats;

/// EPB flags: inbound.
pub(super) const FLAG_INBOUND: u32 = 0b01;
/// EPB flags, link-layer error bits: "packet too long".
pub(super) const FLAG_TOO_LONG: u32 = 1 << 25;
/// Flags of a delivered frame: none. (Inbound is implied by the
/// interface's name; a record without flags or comment is encoded on the
/// short path.)
pub(super) const FLAG_INBOUND_DELIVERED: u32 = 0;
/// EPB flags a switch's records use: inbound on the port they entered.
pub const FLAG_IN: u32 = FLAG_INBOUND;
/// EPB flags a switch's records use: outbound from the port they left.
pub const FLAG_OUT: u32 = 0b10;
/// `virtio_net_hdr.flags`: the checksum is partial (`csum_start`/`csum_offset`).
const HDR_F_NEEDS_CSUM: u8 = 1;
/// `virtio_net_hdr.flags`: the checksum was checked.
const HDR_F_DATA_VALID: u8 = 2;

/// The comment for a `virtio_net_hdr` that asks for offloads, `None` for
/// a plain one (all a synthetic guest sends).
pub fn offload_note(hdr: &[u8; NET_HDR_LEN as usize]) -> Option<String> {
    let (flags, gso) = (hdr[0], hdr[1]);
    if flags == 0 && gso == 0 {
        return None;
    }
    let mut s = String::from("offload");
    if flags & HDR_F_NEEDS_CSUM != 0 {
        let start = u16::from_le_bytes([hdr[6], hdr[7]]);
        let off = u16::from_le_bytes([hdr[8], hdr[9]]);
        s += &format!(" needs_csum csum_start={start} csum_offset={off}");
    }
    if flags & HDR_F_DATA_VALID != 0 {
        s += " data_valid";
    }
    let kind = match gso & 0x7f {
        0 => None,
        1 => Some("tcpv4"),
        3 => Some("udp"),
        4 => Some("tcpv6"),
        5 => Some("udp_l4"),
        _ => Some("unknown"),
    };
    if let Some(k) = kind {
        let size = u16::from_le_bytes([hdr[4], hdr[5]]);
        s += &format!(" gso={k} gso_size={size}");
    }
    if gso & 0x80 != 0 {
        s += " ecn";
    }
    Some(s)
}

/// The EPB comment of a dropped chain.
pub fn drop_comment(reason: &DropReason, peer_head: u16) -> String {
    let detail = match reason {
        DropReason::Malformed(e) => format!("malformed chain at head {peer_head}: {e}"),
        DropReason::Oversized { len, room } => format!(
            "frame of {len} bytes (head {peer_head}) larger than our RX buffer ({room} bytes)"
        ),
        DropReason::BadOffload(e) => format!("offload header at head {peer_head}: {e}"),
    };
    format!("drop reason={}: {detail}", reason.name())
}

/// The EPB flags of a dropped chain: inbound, and "packet too long" for
/// an oversized frame.
pub(super) fn drop_flags(reason: &DropReason) -> u32 {
    match reason {
        DropReason::Oversized { .. } => FLAG_INBOUND | FLAG_TOO_LONG,
        _ => FLAG_INBOUND,
    }
}

/// The comment of the empty record that marks the start of a stall.
pub(super) const STALL_NOTE: &str = "stall reason=rx_ring_full: the peer has a frame but our \
     guest has no RX buffer posted; the frame waits in the peer's ring (not lost)";

/// `name=count ...` of the drops by reason, or `none`.
pub fn reasons_line(stats: &Stats) -> String {
    if stats.drops_by_reason.is_empty() {
        return "none".into();
    }
    stats
        .drops_by_reason
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_note_names_gso_and_partial_checksum() {
        let mut h = [0u8; 12];
        assert_eq!(offload_note(&h), None);
        h[0] = HDR_F_NEEDS_CSUM;
        h[1] = 1;
        h[4..6].copy_from_slice(&1448u16.to_le_bytes());
        h[6..8].copy_from_slice(&34u16.to_le_bytes());
        h[8..10].copy_from_slice(&16u16.to_le_bytes());
        assert_eq!(
            offload_note(&h).unwrap(),
            "offload needs_csum csum_start=34 csum_offset=16 gso=tcpv4 gso_size=1448"
        );
    }
}
