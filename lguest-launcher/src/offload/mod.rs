//! Offloads: what a frame's `virtio_net_hdr` asks of the receiving guest,
//! and the software fallbacks when that guest did not accept it.
//!
//! A guest that sends with offloads (a VM with `HOST_TSO4`, `CSUM`, or a
//! synthetic `--gso` stream) hands its device frames of up to 64 KiB whose
//! TCP checksum is only begun: the header says `NEEDS_CSUM` from
//! `csum_start`, and `gso_type`/`gso_size` say how to cut the frame into
//! wire-sized segments. Between two launchers the frame crosses as it is,
//! header and all — that is the whole gain: one copy of 64 KiB instead of
//! 45 frames and 45 checksums.
//!
//! The **receiving** launcher decides, frame by frame, in its copier:
//!
//! 1. A plain header (flags and `gso_type` both 0) is the fast path: one
//!    two-byte look at our copy of the frame and one branch.
//! 2. Otherwise [`NetHdr::check`] reads the header as a hostile peer may
//!    have written it (unknown GSO type, checksum outside the frame, GSO
//!    size 0, `hdr_len` beyond the frame are dropped as `bad_offload`) and
//!    says which receive features the frame needs.
//! 3. If our guest accepted all of them (`Copier::set_guest_features`: a
//!    VM's negotiated `GUEST_CSUM`/`GUEST_TSO4`/..., a synthetic guest's
//!    `--offloads`), the frame is delivered unchanged.
//! 4. If not, [`fix`] completes the checksum (no GSO) or cuts the frame into
//!    segments of `gso_size` payload bytes with complete checksums
//!    ([`tso::segment`]), each delivered into its own RX buffer with a plain
//!    header. A frame is never delivered in a form the guest did not
//!    accept: what cannot be fixed (UFO to a guest without `GUEST_UFO`, a
//!    GSO frame whose headers are not Ethernet/IP/TCP) is dropped.
//!
//! The handshake carries each side's MTU and receive offloads; a switch
//! passes headers through and each member's launcher does step 4 for its
//! own guest.

pub mod csum;
pub mod hdr;
pub mod mtu;
pub mod tso;

pub use hdr::{NetHdr, OffloadError, NET_HDR, SYNTHETIC_OFFLOADS};
pub use tso::Frames;

use hdr::{F_DATA_VALID, F_NEEDS_CSUM, GSO_NONE, GSO_UDP};

/// What a fallback did to one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fixed {
    /// The checksum was completed (or a flag the guest did not accept
    /// cleared): one frame.
    Checksum,
    /// A GSO frame was cut into this many segments.
    Segmented(u32),
}

/// Counters of the offload path, kept by the copier and added to the stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffloadCounts {
    /// Frames with an offload header delivered unchanged (the guest took it).
    pub passed: u64,
    /// Checksums completed in software.
    pub csum_completed: u64,
    /// GSO frames segmented in software.
    pub segmented: u64,
    /// Segments those produced.
    pub segments: u64,
}

impl OffloadCounts {
    /// Count one fallback.
    pub fn count(&mut self, fixed: Fixed) {
        match fixed {
            Fixed::Checksum => self.csum_completed += 1,
            Fixed::Segmented(n) => {
                self.segmented += 1;
                self.segments += u64::from(n);
            }
        }
    }
}

/// Make `chain` (a `virtio_net_hdr` and its frame, whose header `hdr`
/// passed [`NetHdr::check`] but asks for something our guest did not
/// accept) acceptable to any guest: segments go to `out`; a checksum is
/// completed in `chain` itself, its header made plain, and `chain` copied
/// to `out` as the one frame.
pub fn fix(chain: &mut [u8], hdr: &NetHdr, out: &mut Frames) -> Result<Fixed, OffloadError> {
    out.clear();
    if chain.len() < NET_HDR {
        return Err(OffloadError::NoHeader(chain.len() as u32));
    }
    let (head, frame) = chain.split_at_mut(NET_HDR);
    match hdr.gso() {
        GSO_NONE => {}
        GSO_UDP => return Err(OffloadError::UfoUnsupported),
        _ => return tso::segment(frame, hdr, out).map(Fixed::Segmented),
    }
    tso::complete_csum(frame, hdr);
    let plain = NetHdr {
        flags: hdr.flags & !(F_NEEDS_CSUM | F_DATA_VALID),
        ..*hdr
    };
    head.copy_from_slice(&plain.encode());
    out.bytes.extend_from_slice(chain);
    out.frames.push((0, chain.len()));
    Ok(Fixed::Checksum)
}

#[cfg(test)]
mod tests {
    use super::tso::build::{gso_hdr, headers, Tcp};
    use super::*;

    #[test]
    fn fix_completes_a_checksum_or_segments_and_refuses_ufo() {
        let t = Tcp {
            dst_mac: [2; 6],
            src_mac: [4; 6],
            v6: false,
            id: 1,
            seq: 1000,
            flags: 0x18,
        };
        let mut out = Frames::default();
        for (payload, want) in [(1000, Fixed::Checksum), (4000, Fixed::Segmented(3))] {
            let mut chain = vec![0u8; NET_HDR];
            let l = headers(&t, payload, &mut chain);
            chain.extend(std::iter::repeat_n(0xa5, payload));
            let h = gso_hdr(&t, &l, payload, 1460);
            chain[..NET_HDR].copy_from_slice(&h.encode());
            assert!(h.check((chain.len() - NET_HDR) as u32).is_ok());
            assert_eq!(fix(&mut chain, &h, &mut out), Ok(want));
            for i in 0..out.len() {
                let f = out.get(i);
                assert_eq!(&f[..2], &[0, 0], "plain header");
                let f = &f[NET_HDR..];
                let tl = tso::tcp_layout(f, hdr::GSO_TCPV4).unwrap();
                let len = (f.len() - tl.l4) as u32;
                assert!(csum::verifies(&f[tl.l4..], tso::pseudo(f, &tl, len)));
            }
            // For a guest with mergeable RX buffers: each frame is one buffer.
            out.set_num_buffers(1);
            assert!((0..out.len()).all(|i| out.get(i)[10..12] == [1, 0]));
        }
        let ufo = NetHdr {
            gso_type: GSO_UDP,
            gso_size: 1000,
            ..NetHdr::default()
        };
        let mut chain = vec![0u8; 3000];
        assert_eq!(
            fix(&mut chain, &ufo, &mut out),
            Err(OffloadError::UfoUnsupported)
        );
    }
}
