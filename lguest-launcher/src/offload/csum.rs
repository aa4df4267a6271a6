//! The Internet checksum (RFC 1071): a ones' complement sum of 16-bit
//! big-endian words, folded and complemented.
//!
//! [`partial`] adds bytes to a running sum (eight at a time; a ones'
//! complement sum may be taken over wider words and folded at the end, as
//! Linux's `csum_partial` does); [`fold`] brings it to 16 bits. A slice
//! summed on its own must start at an even offset of what it checksums
//! (every caller here sums whole headers and whole segments).

/// Add `data` to the running ones' complement sum `acc` (end-around carry
/// kept in 64 bits). An odd last byte is padded with zero on the right.
///
/// The bulk is summed as 32-bit words into two 64-bit accumulators with
/// no carry to propagate (2^32 words would be needed to overflow one, far
/// more than any frame); 2^32 ≡ 1 in ones' complement arithmetic, so
/// folding the wide sum gives the 16-bit sum.
pub fn partial(data: &[u8], mut acc: u64) -> u64 {
    let mut blocks = data.chunks_exact(16);
    let (mut a, mut b) = (0u64, 0u64);
    for w in &mut blocks {
        let word = |i: usize| u64::from(u32::from_be_bytes([w[i], w[i + 1], w[i + 2], w[i + 3]]));
        a += word(0) + word(4);
        b += word(8) + word(12);
    }
    acc = add(acc, a);
    acc = add(acc, b);
    let mut words = blocks.remainder().chunks_exact(8);
    for w in &mut words {
        acc = add(
            acc,
            u64::from_be_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]),
        );
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        acc = add(acc, u64::from_be_bytes(w));
    }
    acc
}

/// `acc + w` with the end-around carry.
#[inline]
pub fn add(acc: u64, w: u64) -> u64 {
    let (s, carry) = acc.overflowing_add(w);
    s + carry as u64
}

/// Fold a running sum to 16 bits (not complemented).
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum to store: the complement of the folded sum. A result of 0
/// is written as 0xffff (the same value in ones' complement), as Linux's
/// `skb_checksum_help` does, since 0 means "no checksum" to UDP.
pub fn finish(acc: u64) -> u16 {
    match !fold(acc) {
        0 => 0xffff,
        c => c,
    }
}

/// Does `data` (a header with its checksum field in place), added to
/// `acc`, check out? True when the folded sum is all ones.
pub fn verifies(data: &[u8], acc: u64) -> bool {
    fold(partial(data, acc)) == 0xffff
}

/// The TCP/UDP pseudo-header sum for IPv4 `src`, `dst`, `proto`, `len`.
pub fn pseudo_v4(src: &[u8], dst: &[u8], proto: u8, len: u32) -> u64 {
    let acc = partial(src, 0);
    let acc = partial(dst, acc);
    add(partial(&[0, proto], acc), u64::from(len))
}

/// The pseudo-header sum for IPv6 `src`, `dst` (16 bytes each), next
/// header `proto`, upper-layer length `len`.
pub fn pseudo_v6(src: &[u8], dst: &[u8], proto: u8, len: u32) -> u64 {
    let acc = partial(src, 0);
    let acc = partial(dst, acc);
    add(partial(&len.to_be_bytes(), acc), u64::from(proto))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The textbook sum: 16-bit words, one at a time.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            let w = (c[0] as u32) << 8 | c.get(1).copied().unwrap_or(0) as u32;
            s += w;
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn rfc1071_example_sums_to_ddf2() {
        // RFC 1071, section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(partial(&d, 0)), 0xddf2);
        assert_eq!(finish(partial(&d, 0)), !0xddf2);
    }

    #[test]
    fn ipv4_header_checksum_of_a_known_header() {
        // A captured header (checksum 0xb861 at bytes 10..12).
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert!(verifies(&h, 0));
        let mut z = h;
        z[10..12].fill(0);
        assert_eq!(finish(partial(&z, 0)), 0xb861);
    }

    proptest! {
        #[test]
        fn wide_sum_equals_the_textbook_sum(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            prop_assert_eq!(fold(partial(&data, 0)), reference(&data));
        }

        #[test]
        fn a_stored_checksum_verifies(mut data in proptest::collection::vec(any::<u8>(), 2..600), at in 0usize..300) {
            let at = (at % (data.len() / 2)) * 2;
            data[at..at + 2].fill(0);
            let c = finish(partial(&data, 7));
            data[at..at + 2].copy_from_slice(&c.to_be_bytes());
            prop_assert!(verifies(&data, 7));
        }
    }
}
