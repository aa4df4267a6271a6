//! What the backend offers QEMU (`GET_FEATURES`), and what the VM's
//! negotiated features mean for the peer.
//!
//! # Offloads (`--offloads on`, the default)
//! The virtio-net header travels with every frame, from the VM's TX ring to
//! the peer's RX ring, untouched. So the backend can offer the VM what a
//! NIC with checksum and segmentation offloads offers — the work is done by
//! whoever receives the frame, and a guest that accepted `GUEST_CSUM` and
//! `GUEST_TSO4/6` does none of it either (a partial checksum stays partial,
//! a 64 KiB segment stays one frame):
//!
//! * `CSUM`, `HOST_TSO4/6`, `HOST_ECN`: the VM may send partial checksums
//!   and TCP segments up to 64 KiB;
//! * `GUEST_CSUM`, `GUEST_TSO4/6`, `GUEST_ECN`: it takes them on receive;
//! * `MRG_RXBUF`: a frame larger than one RX buffer spans several, the
//!   first header's `num_buffers` says how many ([`crate::copier`]). A VM
//!   that declines it but takes TSO posts one long chain per frame ("big
//!   packets" in Linux's driver), which the copier fills as any chain.
//! * `MTU` (with `--mtu N`): QEMU's `host_mtu=N` device property is what
//!   the guest reads. QEMU 7.2 offers the guest `VIRTIO_NET_F_MTU` whether
//!   the backend does or not (`x-mtu-bypass-backend`, on by default); a
//!   backend that offers it gets it acked too. QEMU tells the value to a
//!   backend only with `VHOST_USER_PROTOCOL_F_NET_MTU` (`NET_SET_MTU`),
//!   which rust-vmm's `vhost` 0.18 does not handle (it drops the
//!   connection), so we do not offer that protocol feature: `--mtu` states
//!   the same value to the peer, and must match `host_mtu`.
//!
//! Not offered:
//! * `HOST_UFO`/`GUEST_UFO`: Linux has not produced UDP fragmentation
//!   offload since 4.14 (6.1 guests never send it), and a UFO frame would
//!   need IP fragmentation, not segmentation, wherever a receiver declined
//!   it. Nothing to gain, a path nobody could test.
//! * `STATUS`, `CTRL_VQ`, `MAC`, `GUEST_ANNOUNCE`: QEMU's own. Its
//!   virtio-net emulates them for a vhost-user netdev (they are not in its
//!   vhost-user feature list, `user_feature_bits`); `STATUS` reports the
//!   link state QEMU keeps from the chardev connection, which is what
//!   `--carrier follow` works with.
//!
//! `--offloads off` offers exactly what the backend offered before
//! offloads existed (`VERSION_1`, `EVENT_IDX`), so both can be measured in
//! one run.

/// `VIRTIO_NET_F_CSUM`: the device takes partial checksums (VM sends them).
pub(super) const CSUM: u64 = 1 << 0;
/// `VIRTIO_NET_F_GUEST_CSUM`: the driver takes partial checksums.
pub(super) const GUEST_CSUM: u64 = 1 << 1;
/// `VIRTIO_NET_F_MTU`: the device states an MTU.
pub(super) const MTU: u64 = 1 << 3;
/// `VIRTIO_NET_F_GUEST_TSO4`.
pub(super) const GUEST_TSO4: u64 = 1 << 7;
/// `VIRTIO_NET_F_GUEST_TSO6`.
pub(super) const GUEST_TSO6: u64 = 1 << 8;
/// `VIRTIO_NET_F_GUEST_ECN`.
pub(super) const GUEST_ECN: u64 = 1 << 9;
/// `VIRTIO_NET_F_GUEST_UFO` (never offered; masked for the peer).
pub(super) const GUEST_UFO: u64 = 1 << 10;
/// `VIRTIO_NET_F_HOST_TSO4`.
pub(super) const HOST_TSO4: u64 = 1 << 11;
/// `VIRTIO_NET_F_HOST_TSO6`.
pub(super) const HOST_TSO6: u64 = 1 << 12;
/// `VIRTIO_NET_F_HOST_ECN`.
pub(super) const HOST_ECN: u64 = 1 << 13;
/// `VIRTIO_NET_F_MRG_RXBUF`.
pub(super) const MRG_RXBUF: u64 = 1 << 15;

/// What `--offloads on` adds to the offer.
pub(super) const OFFLOADS: u64 = CSUM
    | GUEST_CSUM
    | GUEST_TSO4
    | GUEST_TSO6
    | GUEST_ECN
    | HOST_TSO4
    | HOST_TSO6
    | HOST_ECN
    | MRG_RXBUF;

/// The bits of a VM's negotiated features that say what it accepts on
/// receive: what the handshake tells the peer (`Handshake::offloads`).
pub(super) const RECEIVE: u64 =
    GUEST_CSUM | GUEST_TSO4 | GUEST_TSO6 | GUEST_ECN | GUEST_UFO | MRG_RXBUF;

/// The virtio-net feature bits the backend offers on top of the transport
/// ones (`VERSION_1`, `EVENT_IDX`, protocol features).
pub(super) fn net_offer(offloads: bool, mtu: u32) -> u64 {
    let mut f = 0;
    if offloads {
        f |= OFFLOADS;
    }
    if mtu != 0 {
        f |= MTU;
    }
    f
}

/// What the handshake states as the receive offloads of a VM that
/// negotiated `acked` (0 before it negotiated anything).
pub(super) fn receive_offloads(acked: u64) -> u32 {
    (acked & RECEIVE) as u32
}

/// The negotiated offloads, by name, for the connection line.
pub(super) fn describe(acked: u64) -> String {
    const NAMES: [(u64, &str); 10] = [
        (CSUM, "csum"),
        (GUEST_CSUM, "guest_csum"),
        (HOST_TSO4, "tso4"),
        (HOST_TSO6, "tso6"),
        (HOST_ECN, "ecn"),
        (GUEST_TSO4, "guest_tso4"),
        (GUEST_TSO6, "guest_tso6"),
        (GUEST_ECN, "guest_ecn"),
        (MRG_RXBUF, "mrg_rxbuf"),
        (MTU, "mtu"),
    ];
    let on: Vec<&str> = NAMES
        .iter()
        .filter(|(b, _)| acked & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if on.is_empty() {
        "none".into()
    } else {
        on.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offloads_off_offers_no_net_feature_and_on_offers_csum_tso_and_mergeable_buffers() {
        assert_eq!(net_offer(false, 0), 0);
        assert_eq!(net_offer(false, 9000), MTU);
        let on = net_offer(true, 0);
        for bit in [0, 1, 7, 8, 9, 11, 12, 13, 15] {
            assert_ne!(on & (1 << bit), 0, "bit {bit} offered");
        }
        // Never UFO (10, 14), never QEMU's own STATUS (16) or CTRL_VQ (17).
        for bit in [10, 14, 16, 17] {
            assert_eq!(on & (1 << bit), 0, "bit {bit} not offered");
        }
    }

    #[test]
    fn the_peer_is_told_only_what_the_vm_takes_on_receive() {
        let acked = net_offer(true, 1500) | (1 << 32) | (1 << 29);
        let r = receive_offloads(acked);
        assert_eq!(
            r as u64,
            GUEST_CSUM | GUEST_TSO4 | GUEST_TSO6 | GUEST_ECN | MRG_RXBUF
        );
        assert_eq!(receive_offloads(1 << 32), 0);
        assert_eq!(describe(0), "none");
        assert_eq!(describe(CSUM | MRG_RXBUF), "csum,mrg_rxbuf");
    }
}
