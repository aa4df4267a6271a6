//! The `virtio_net_hdr` in front of every frame, read and checked as a
//! hostile peer may have written it.
//!
//! ```text
//! [0]      flags        NEEDS_CSUM (1), DATA_VALID (2)
//! [1]      gso_type     NONE (0), TCPV4 (1), UDP (3), TCPV6 (4); | ECN (0x80)
//! [2..4)   hdr_len      LE: bytes of headers before the payload (a hint)
//! [4..6)   gso_size     LE: payload bytes per segment
//! [6..8)   csum_start   LE: where the checksummed part starts
//! [8..10)  csum_offset  LE: where, from csum_start, the checksum goes
//! [10..12) num_buffers  LE: RX buffers of a merged frame (the device's)
//! ```
//! [`NetHdr::check`] refuses what no honest driver sends (unknown flags or
//! GSO types, ECN without GSO, a GSO size of 0, a checksum or header length
//! outside the frame) and says which receive features the frame needs
//! (`VIRTIO_NET_F_GUEST_*` bits). Anything it refuses is dropped with
//! reason `bad_offload`.

/// Bytes of the header (virtio 1.x: with `num_buffers`).
pub const NET_HDR: usize = 12;

/// `flags`: the checksum from `csum_start` on is to be completed.
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum was verified (receive side only).
pub const F_DATA_VALID: u8 = 2;
/// `gso_type`: not a GSO frame.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4.
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: UDP fragmentation offload.
pub const GSO_UDP: u8 = 3;
/// `gso_type`: TCP over IPv6.
pub const GSO_TCPV6: u8 = 4;
/// `gso_type` bit: the TCP header has CWR set (ECN).
pub const GSO_ECN: u8 = 0x80;

/// Feature bit: the guest takes partial checksums (`VIRTIO_NET_F_GUEST_CSUM`).
pub const F_GUEST_CSUM: u32 = 1;
/// Feature bit: the guest takes TCPv4 GSO frames.
pub const F_GUEST_TSO4: u32 = 7;
/// Feature bit: the guest takes TCPv6 GSO frames.
pub const F_GUEST_TSO6: u32 = 8;
/// Feature bit: the guest takes GSO frames with ECN (CWR) set.
pub const F_GUEST_ECN: u32 = 9;
/// Feature bit: the guest takes UFO frames.
pub const F_GUEST_UFO: u32 = 10;

/// The receive offloads a synthetic guest accepts with `--offloads on`:
/// GUEST_CSUM, GUEST_TSO4, GUEST_TSO6, GUEST_ECN.
pub const SYNTHETIC_OFFLOADS: u64 =
    1 << F_GUEST_CSUM | 1 << F_GUEST_TSO4 | 1 << F_GUEST_TSO6 | 1 << F_GUEST_ECN;

/// A parsed `virtio_net_hdr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetHdr {
    /// `NEEDS_CSUM`, `DATA_VALID`.
    pub flags: u8,
    /// GSO type, with the ECN bit.
    pub gso_type: u8,
    /// Header bytes before the payload (a hint).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Start of the checksummed part.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
    /// RX buffers of a merged frame.
    pub num_buffers: u16,
}

/// Why a frame's offload header was refused (dropped as `bad_offload`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// Flag bits other than NEEDS_CSUM and DATA_VALID.
    #[error("unknown virtio_net_hdr flags {0:#04x}")]
    UnknownFlags(u8),
    /// A GSO type we do not know.
    #[error("unknown gso_type {0:#04x}")]
    UnknownGsoType(u8),
    /// The ECN bit on a frame that is not GSO.
    #[error("gso_type ECN bit without a GSO type")]
    EcnWithoutGso,
    /// A GSO frame with segments of 0 bytes.
    #[error("gso_size 0 on a GSO frame")]
    GsoSizeZero,
    /// The checksum to complete lies (partly) outside the frame.
    #[error("csum_start {start} + csum_offset {offset} outside the {len}-byte frame")]
    CsumOutside {
        /// `csum_start`.
        start: u16,
        /// `csum_offset`.
        offset: u16,
        /// Frame bytes after the header.
        len: u32,
    },
    /// `hdr_len` larger than the frame.
    #[error("hdr_len {hdr_len} beyond the {len}-byte frame")]
    HdrLenBeyond {
        /// `hdr_len`.
        hdr_len: u16,
        /// Frame bytes after the header.
        len: u32,
    },
    /// A frame to fix longer than any IP packet (see
    /// `copier::fallback::MAX_FIX`).
    #[error("{0}-byte chain with an offload header: longer than any IP packet")]
    TooLong(u32),
    /// The chain is shorter than a `virtio_net_hdr`.
    #[error("chain of {0} bytes holds no virtio_net_hdr")]
    NoHeader(u32),
    /// A GSO frame whose headers are not Ethernet + IPv4/IPv6 + TCP as
    /// its GSO type says (what segmenting needs to read).
    #[error("GSO frame headers: {0}")]
    Headers(&'static str),
    /// UFO to a guest that does not take it: not segmented in software.
    #[error("UFO frame for a guest without GUEST_UFO")]
    UfoUnsupported,
    /// More segments than our guest's RX ring holds.
    #[error("{segments} segments, more than the {ring} RX buffers of our guest's ring")]
    TooManySegments {
        /// Segments the frame would need.
        segments: u32,
        /// Our RX ring's size.
        ring: u16,
    },
}

impl NetHdr {
    /// Parse the 12 header bytes.
    pub fn parse(b: &[u8; NET_HDR]) -> Self {
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        NetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
            num_buffers: le(10),
        }
    }

    /// The 12 header bytes.
    pub fn encode(&self) -> [u8; NET_HDR] {
        let mut b = [0u8; NET_HDR];
        b[0] = self.flags;
        b[1] = self.gso_type;
        for (i, v) in [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
            self.num_buffers,
        ]
        .into_iter()
        .enumerate()
        {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// No offload asked for: the frame goes as it is (the fast path looks
    /// at these two bytes only).
    pub fn is_plain(flags: u8, gso_type: u8) -> bool {
        flags | gso_type == 0
    }

    /// The GSO type without the ECN bit.
    pub fn gso(&self) -> u8 {
        self.gso_type & !GSO_ECN
    }

    /// Check the header of a frame of `len` bytes (after the header) and
    /// return the receive feature bits it needs of the guest.
    pub fn check(&self, len: u32) -> Result<u64, OffloadError> {
        if self.flags & !(F_NEEDS_CSUM | F_DATA_VALID) != 0 {
            return Err(OffloadError::UnknownFlags(self.flags));
        }
        let mut needs = 0u64;
        if self.flags != 0 {
            needs |= 1 << F_GUEST_CSUM;
        }
        if self.flags & F_NEEDS_CSUM != 0 {
            let end = u32::from(self.csum_start) + u32::from(self.csum_offset) + 2;
            if end > len {
                return Err(OffloadError::CsumOutside {
                    start: self.csum_start,
                    offset: self.csum_offset,
                    len,
                });
            }
        }
        needs |= match self.gso() {
            GSO_NONE if self.gso_type & GSO_ECN != 0 => return Err(OffloadError::EcnWithoutGso),
            GSO_NONE => return Ok(needs),
            GSO_TCPV4 => 1 << F_GUEST_TSO4,
            GSO_TCPV6 => 1 << F_GUEST_TSO6,
            GSO_UDP => 1 << F_GUEST_UFO,
            _ => return Err(OffloadError::UnknownGsoType(self.gso_type)),
        };
        if self.gso_type & GSO_ECN != 0 {
            needs |= 1 << F_GUEST_ECN;
        }
        if self.gso_size == 0 {
            return Err(OffloadError::GsoSizeZero);
        }
        if u32::from(self.hdr_len) > len {
            return Err(OffloadError::HdrLenBeyond {
                hdr_len: self.hdr_len,
                len,
            });
        }
        Ok(needs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tso4() -> NetHdr {
        NetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1460,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 0,
        }
    }

    #[test]
    fn tso4_frame_needs_csum_and_tso4_and_ecn_adds_guest_ecn() {
        assert_eq!(
            tso4().check(65000),
            Ok(1 << F_GUEST_CSUM | 1 << F_GUEST_TSO4)
        );
        let ecn = NetHdr {
            gso_type: GSO_TCPV6 | GSO_ECN,
            ..tso4()
        };
        assert_eq!(
            ecn.check(65000),
            Ok(1 << F_GUEST_CSUM | 1 << F_GUEST_TSO6 | 1 << F_GUEST_ECN)
        );
        assert_eq!(NetHdr::default().check(60), Ok(0));
        assert_eq!(
            SYNTHETIC_OFFLOADS & ecn.check(65000).unwrap(),
            ecn.check(65000).unwrap()
        );
    }

    #[test]
    fn hostile_headers_are_refused_by_name() {
        let bad = |h: NetHdr, len| h.check(len).unwrap_err();
        assert_eq!(
            bad(
                NetHdr {
                    flags: 0x40,
                    ..tso4()
                },
                100
            ),
            OffloadError::UnknownFlags(0x40)
        );
        assert_eq!(
            bad(
                NetHdr {
                    gso_type: 2,
                    ..tso4()
                },
                100
            ),
            OffloadError::UnknownGsoType(2)
        );
        assert_eq!(
            bad(
                NetHdr {
                    gso_type: GSO_ECN,
                    ..NetHdr::default()
                },
                100
            ),
            OffloadError::EcnWithoutGso
        );
        assert_eq!(
            bad(
                NetHdr {
                    gso_size: 0,
                    ..tso4()
                },
                100
            ),
            OffloadError::GsoSizeZero
        );
        assert!(matches!(
            bad(
                NetHdr {
                    csum_start: 90,
                    ..tso4()
                },
                100
            ),
            OffloadError::CsumOutside {
                start: 90,
                offset: 16,
                len: 100
            }
        ));
        assert!(matches!(
            bad(
                NetHdr {
                    hdr_len: 200,
                    ..tso4()
                },
                100
            ),
            OffloadError::HdrLenBeyond {
                hdr_len: 200,
                len: 100
            }
        ));
        // The checksum field's last byte is the frame's last: fine.
        assert!(NetHdr {
            csum_start: 82,
            ..tso4()
        }
        .check(100)
        .is_ok());
        assert!(NetHdr {
            csum_start: 83,
            ..tso4()
        }
        .check(100)
        .is_err());
    }

    proptest! {
        #[test]
        fn headers_round_trip(b in any::<[u8; NET_HDR]>()) {
            prop_assert_eq!(NetHdr::parse(&b).encode(), b);
        }

        #[test]
        fn an_accepted_checksum_lies_inside_the_frame(b in any::<[u8; NET_HDR]>(), len in 0u32..70000) {
            let h = NetHdr::parse(&b);
            if h.check(len).is_ok() && h.flags & F_NEEDS_CSUM != 0 {
                prop_assert!(h.csum_start as u32 + h.csum_offset as u32 + 2 <= len);
            }
            if h.check(len).is_ok() && h.gso() != GSO_NONE {
                prop_assert!(h.gso_size > 0 && u32::from(h.hdr_len) <= len);
            }
        }
    }
}
