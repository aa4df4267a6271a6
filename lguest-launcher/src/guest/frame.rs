//! The synthetic guest's packets: what a frame carries and how it is checked.
//!
//! Each frame of SIZE bytes (after the 12-byte `virtio_net_hdr`) is
//!
//! ```text
//! [0..8)   sequence number, u64 LE
//! [8..12)  frame size, u32 LE
//! [12..16) checksum, u32 LE
//! [16..)   payload: a fixed pseudo-random pattern, starting at offset
//!          seq % 251 so neighbouring packets differ
//! ```
//! A `stream` ends with one *end-of-stream* frame: sequence number
//! [`END_SEQ`], size [`END_FRAME`], and as payload the number of data frames
//! the sender put on its ring (`sent`, u64 LE) — so a receiver can tell
//! "sent but never received" (lost) from "never sent", and a sink waiting
//! for more than the sender had learns that nothing more is coming.
//!
//! The checksum is a Fletcher-style sum over the payload in 8-byte words
//! (order-sensitive, so swapped or shifted bytes are caught) mixed with the
//! sequence number. Senders precompute the 251 payload sums once.
//!
//! ## `--payload stamp`: the header alone
//! To measure the link rather than the synthetic guest's per-byte work, a
//! *stamped* frame has the same 16-byte header, but its checksum covers
//! only the header ([`stamp`]: sequence and size mixed with a fixed seed,
//! so a stamp never passes as a full checksum of an empty payload by
//! accident). The payload bytes are whatever the sender put in its buffers
//! once, at start ([`Pattern::filler`]); the sender writes 16 bytes per
//! packet and the receiver reads 16 ([`check_stamp`]). A flipped header
//! bit, a wrong size field or a length that disagrees with it is still
//! caught; a payload byte is not — that is the point. Both sides of a pair
//! must use the same mode: a `verify` receiver counts stamped frames as
//! corrupted. End-of-stream frames always carry the full checksum.
//!
//! ## The Ethernet header
//! On the wire each frame is preceded by a 14-byte Ethernet header
//! ([`eth_header`]): destination and source MAC (`--dst`, `--mac`) and
//! EtherType [`ETH_P_SHARENET`]. `--size` counts the frame above, not the
//! Ethernet header, so a 1500 B stream puts 1514 B frames on the link. A
//! guest linked to a switch first sends one [`ETH_P_HELLO`] broadcast so
//! the switch learns its address before anyone sends to it; receivers
//! ignore hellos, frames of other EtherTypes (a host's own traffic through
//! a TAP port) and unicast frames for another MAC, counting the last two.

/// A MAC address.
pub type Mac = [u8; 6];
/// Bytes of the Ethernet header before each frame.
pub const ETH_HDR: usize = 14;
/// EtherType of synthetic frames (IEEE local experimental 1).
pub const ETH_P_SHARENET: u16 = 0x88B5;
/// EtherType of the hello a guest sends when it joins a switch (local
/// experimental 2): "this MAC is here".
pub const ETH_P_HELLO: u16 = 0x88B6;
/// The broadcast address.
pub const BROADCAST: Mac = [0xff; 6];

/// The Ethernet header `dst`, `src`, `ethertype`.
pub fn eth_header(dst: Mac, src: Mac, ethertype: u16) -> [u8; ETH_HDR] {
    let mut h = [0u8; ETH_HDR];
    h[0..6].copy_from_slice(&dst);
    h[6..12].copy_from_slice(&src);
    h[12..14].copy_from_slice(&ethertype.to_be_bytes());
    h
}

/// Group (broadcast or multicast) address: bit 0 of the first byte.
pub fn is_group(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

/// A locally administered unicast MAC derived from a guest's name
/// (`02:` then 40 bits of an FNV-1a hash), the default `--mac`.
pub fn mac_from_name(name: &str) -> Mac {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [0x02, b[3], b[4], b[5], b[6], b[7]]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parse `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Result<Mac, String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let bad =
        || format!("`{s}` is not a MAC address; expected six hex bytes like 02:00:00:00:00:01");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.is_empty() || p.len() > 2 {
            return Err(bad());
        }
        *m = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(mac)
}

/// Bytes before the payload.
pub const FRAME_HDR: usize = 16;
/// Smallest frame that carries the header.
pub const MIN_FRAME: usize = FRAME_HDR;
const OFFSETS: usize = 251;

/// Fletcher-style checksum over `data` (any length).
#[inline]
pub fn fletcher(data: &[u8]) -> (u64, u64) {
    let (mut a, mut b) = (0u64, 0u64);
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        a = a.wrapping_add(u64::from_le_bytes([
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
        ]));
        b = b.wrapping_add(a);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        a = a.wrapping_add(u64::from_le_bytes(w));
        b = b.wrapping_add(a);
    }
    (a, b)
}

fn mix(sum: (u64, u64), seq: u64, size: u32) -> u32 {
    let x = sum.0 ^ sum.1.rotate_left(29) ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ size as u64;
    (x ^ (x >> 32)) as u32
}

/// The sequence number of the end-of-stream frame (never a data frame's).
pub const END_SEQ: u64 = u64::MAX;
/// Size of the end-of-stream frame: header plus the `sent` count.
pub const END_FRAME: usize = FRAME_HDR + 8;

/// The end-of-stream frame announcing `sent` data frames.
pub fn end_frame(sent: u64) -> [u8; END_FRAME] {
    let payload = sent.to_le_bytes();
    let mut f = [0u8; END_FRAME];
    f[0..8].copy_from_slice(&END_SEQ.to_le_bytes());
    f[8..12].copy_from_slice(&(END_FRAME as u32).to_le_bytes());
    f[12..16].copy_from_slice(&mix(fletcher(&payload), END_SEQ, END_FRAME as u32).to_le_bytes());
    f[16..].copy_from_slice(&payload);
    f
}

/// Seed of the header-only checksum (`--payload stamp`).
const STAMP_SEED: (u64, u64) = (0x5354_414D_5053_4E31, 0xC2B2_AE3D_27D4_EB4F);

/// The 16-byte header of a stamped frame `seq` of `size` bytes: its
/// checksum covers the header alone.
pub fn stamp(seq: u64, size: u32) -> [u8; FRAME_HDR] {
    stamp_word(seq, size).to_le_bytes()
}

/// [`stamp`] as one little-endian value (built in registers, stored at once).
#[inline]
pub fn stamp_word(seq: u64, size: u32) -> u128 {
    u128::from(seq) | u128::from(size) << 64 | u128::from(mix(STAMP_SEED, seq, size)) << 96
}

/// Check the header of a stamped frame of `len` bytes (header stripped of
/// the `virtio_net_hdr`); the payload is not looked at. An end-of-stream
/// frame is not a stamp: check it with [`verify`].
pub fn check_stamp(header: &[u8; FRAME_HDR], len: usize) -> Verdict {
    let seq = u64::from_le_bytes(header[0..8].try_into().unwrap_or_default());
    let size = u32::from_le_bytes(header[8..12].try_into().unwrap_or_default());
    let csum = u32::from_le_bytes(header[12..16].try_into().unwrap_or_default());
    if seq == END_SEQ || size as usize != len || mix(STAMP_SEED, seq, size) != csum {
        return Verdict::Corrupt;
    }
    Verdict::Good(seq)
}

/// The sequence number field of a frame header.
pub fn header_seq(header: &[u8; FRAME_HDR]) -> u64 {
    u64::from_le_bytes(header[0..8].try_into().unwrap_or_default())
}

/// Builds frames of one size quickly.
pub struct Pattern {
    size: usize,
    bytes: Vec<u8>,
    sums: Vec<(u64, u64)>,
}

impl Pattern {
    /// Precompute the pattern for frames of `size` bytes.
    pub fn new(size: usize) -> Self {
        let size = size.max(MIN_FRAME);
        let plen = size - FRAME_HDR;
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let bytes: Vec<u8> = (0..plen + OFFSETS)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let sums = (0..OFFSETS)
            .map(|o| fletcher(&bytes[o..o + plen]))
            .collect();
        Pattern { size, bytes, sums }
    }

    /// Frame size.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The payload a stamped frame carries, written into each TX buffer
    /// once at start (`--payload stamp`).
    pub fn filler(&self) -> &[u8] {
        &self.bytes[..self.size - FRAME_HDR]
    }

    /// The 16-byte frame header and the payload for packet `seq`.
    pub fn frame(&self, seq: u64) -> ([u8; FRAME_HDR], &[u8]) {
        let o = (seq % OFFSETS as u64) as usize;
        let payload = &self.bytes[o..o + self.size - FRAME_HDR];
        let mut h = [0u8; FRAME_HDR];
        h[0..8].copy_from_slice(&seq.to_le_bytes());
        h[8..12].copy_from_slice(&(self.size as u32).to_le_bytes());
        h[12..16].copy_from_slice(&mix(self.sums[o], seq, self.size as u32).to_le_bytes());
        (h, payload)
    }
}

/// What a received frame turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Intact, with this sequence number.
    Good(u64),
    /// An intact end-of-stream frame: the sender put this many data frames
    /// on its ring.
    End(u64),
    /// Too short, wrong size field, or checksum mismatch.
    Corrupt,
}

/// Check a received frame (header stripped).
pub fn verify(frame: &[u8]) -> Verdict {
    if frame.len() < FRAME_HDR {
        return Verdict::Corrupt;
    }
    let seq = u64::from_le_bytes(frame[0..8].try_into().unwrap_or_default());
    let size = u32::from_le_bytes(frame[8..12].try_into().unwrap_or_default());
    let csum = u32::from_le_bytes(frame[12..16].try_into().unwrap_or_default());
    if size as usize != frame.len() || mix(fletcher(&frame[FRAME_HDR..]), seq, size) != csum {
        return Verdict::Corrupt;
    }
    if seq == END_SEQ {
        return match frame[FRAME_HDR..].try_into() {
            Ok(sent) if frame.len() == END_FRAME => Verdict::End(u64::from_le_bytes(sent)),
            _ => Verdict::Corrupt,
        };
    }
    Verdict::Good(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assemble(p: &Pattern, seq: u64) -> Vec<u8> {
        let (h, pl) = p.frame(seq);
        let mut v = h.to_vec();
        v.extend_from_slice(pl);
        v
    }

    #[test]
    fn frames_verify_and_carry_their_sequence() {
        for size in [16, 17, 64, 1500, 9000, 65535] {
            let p = Pattern::new(size);
            for seq in [0, 1, 250, 251, 1 << 40] {
                let f = assemble(&p, seq);
                assert_eq!(f.len(), size);
                assert_eq!(verify(&f), Verdict::Good(seq));
            }
        }
    }

    #[test]
    fn macs_parse_format_and_derive_from_names() {
        let m = parse_mac("02:0a:FF:00:10:01").unwrap();
        assert_eq!(format_mac(&m), "02:0a:ff:00:10:01");
        assert!(parse_mac("02:0a:ff:00:10").is_err());
        assert!(parse_mac("02:0a:ff:00:10:1001").is_err());
        let (a, b) = (mac_from_name("left"), mac_from_name("right"));
        assert_ne!(a, b);
        assert_eq!(a[0], 0x02, "locally administered unicast");
        assert!(!is_group(&a) && is_group(&BROADCAST));
        let h = eth_header(b, a, ETH_P_SHARENET);
        assert_eq!(
            (&h[0..6], &h[6..12], &h[12..]),
            (&b[..], &a[..], &[0x88, 0xb5][..])
        );
    }

    #[test]
    fn end_frame_verifies_and_carries_the_sent_count() {
        for sent in [0, 1, 1000, u64::MAX - 1] {
            assert_eq!(verify(&end_frame(sent)), Verdict::End(sent));
        }
        let mut f = end_frame(1000);
        f[20] ^= 1;
        assert_eq!(verify(&f), Verdict::Corrupt, "a flipped count is caught");
    }

    #[test]
    fn stamps_check_their_header_and_carry_their_sequence() {
        for size in [16u32, 64, 1500, 65535] {
            for seq in [0, 1, 250, 1 << 40] {
                let h = stamp(seq, size);
                assert_eq!(check_stamp(&h, size as usize), Verdict::Good(seq));
            }
        }
    }

    #[test]
    fn corrupted_stamp_header_is_detected() {
        let h = stamp(7, 1500);
        for byte in 0..FRAME_HDR {
            for bit in [0x01, 0x40, 0x80] {
                let mut g = h;
                g[byte] ^= bit;
                assert_eq!(
                    check_stamp(&g, 1500),
                    Verdict::Corrupt,
                    "flip {bit:#x} at byte {byte}"
                );
            }
        }
        assert_eq!(check_stamp(&h, 1499), Verdict::Corrupt, "length disagrees");
        // A full-checksum header is not a stamp, nor an end-of-stream frame.
        let p = Pattern::new(1500);
        assert_eq!(check_stamp(&p.frame(7).0, 1500), Verdict::Corrupt);
        let end: [u8; FRAME_HDR] = end_frame(3)[..FRAME_HDR].try_into().unwrap();
        assert_eq!(check_stamp(&end, END_FRAME), Verdict::Corrupt);
    }

    #[test]
    fn corruption_is_detected() {
        let p = Pattern::new(1500);
        let f = assemble(&p, 7);
        for pos in [0, 9, 13, 16, 100, 1499] {
            let mut g = f.clone();
            g[pos] ^= 0x40;
            assert_eq!(verify(&g), Verdict::Corrupt, "flip at {pos}");
        }
        // Swapped words keep the plain sum but not the Fletcher sum.
        let mut g = f.clone();
        let (a, b) = g[16..].split_at_mut(8);
        a.swap_with_slice(&mut b[..8]);
        if g != f {
            assert_eq!(verify(&g), Verdict::Corrupt);
        }
        assert_eq!(verify(&f[..1499]), Verdict::Corrupt);
    }
}
