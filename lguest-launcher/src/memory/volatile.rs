//! Copying bytes that another process may be writing at the same time.
//!
//! The peer's guest memory, and our own, are mapped shared: while we copy a
//! packet out of the peer's TX buffer, a buggy or hostile peer may be
//! rewriting it. A plain `ptr::copy` (memcpy) is written for memory nobody
//! else touches, and the compiler is free to act on that: read a byte twice
//! and trust both reads agree, or fold a later read into an earlier one. For
//! bytes that change under us that is a data race, and nothing in Rust's model
//! says what it does.
//!
//! So, as rust-vmm's vm-memory does for guest memory, every access to a
//! shared mapping here is `read_volatile`/`write_volatile`. A volatile access
//! happens exactly once, at its size, in program order with other volatile
//! accesses, and the compiler assumes nothing about the value it returns:
//! the memory is treated like a device register the peer may change. Each
//! value read is copied once into a register and written once; it is never
//! read back. A peer writing concurrently can therefore make us copy a mix of
//! old and new bytes (a torn word), and nothing worse: the addresses are
//! fixed before the copy starts and were bounds-checked by [`Region`], and the
//! copier and the guest treat what arrives as packet data, never as an
//! address or a length.
//!
//! Volatile accesses cannot be merged into SIMD memcpy, so the copy moves
//! whole 8-byte words, four per loop turn: a byte-wise head brings the
//! destination to an 8-byte boundary, the body stores aligned `u64` words,
//! and a byte-wise tail finishes. The source may sit at any alignment
//! relative to the destination (a 12-byte virtio-net header shifts the
//! payload by 4); it is read as an 8-byte word of alignment 1 ([`Word`]),
//! one unaligned load where the CPU allows it, so a misaligned packet costs
//! the same as an aligned one.
//!
//! [`Region`]: super::Region

use std::ptr::{read_volatile, write_volatile};

/// Bytes in one copied word.
const WORD: usize = size_of::<u64>();

/// Words moved per turn of the main loop (all loads, then all stores).
const UNROLL: usize = 4;

/// A `u64` with alignment 1: a volatile read of it is one (possibly
/// unaligned) 8-byte load, which `read_volatile::<u64>` forbids and
/// `read_volatile::<[u8; 8]>` compiles to eight byte loads.
#[repr(C, packed)]
#[derive(Clone, Copy)]
struct Word(u64);

/// Copy `len` bytes from `src` to `dst`, front to back, with volatile
/// accesses only.
///
/// If the ranges overlap with `dst` after `src` the result is garbage (bytes
/// are re-read after being overwritten), but every access stays inside the
/// two ranges; use [`copy_backward`] for that case.
///
/// # Safety
///
/// `src` must be valid for reads of `len` bytes and `dst` valid for writes of
/// `len` bytes, each range inside one mapping or allocation. No Rust
/// reference may cover `dst` while we write (a `&mut [u8]` we were handed,
/// passed as its raw pointer, is fine). Concurrent writes by another process
/// to either range are allowed: they only change which bytes arrive.
#[inline]
pub(super) unsafe fn copy_forward(dst: *mut u8, src: *const u8, len: usize) {
    let head = dst.addr().wrapping_neg() % WORD;
    if len < head + WORD {
        // SAFETY: the whole range, per this function's contract.
        unsafe { copy_bytes(dst, src, 0, len) };
        return;
    }
    // SAFETY: `head < len`, so `[0, head)` is inside both ranges.
    unsafe { copy_bytes(dst, src, 0, head) };
    let mut at = head;
    while len - at >= UNROLL * WORD {
        // SAFETY: bounds: `at + UNROLL * WORD <= len`, so all four words lie
        // inside the ranges the caller vouched for; `dst + at` is 8-byte
        // aligned (`head` brought it there and `at` grows by whole words), as
        // `write_volatile::<u64>` requires, and `src + at` is read as a
        // `Word`, which needs no alignment. Race: each word is loaded once
        // into a local and stored once, so a peer writing meanwhile yields at
        // worst torn words of garbage data at these same addresses.
        unsafe {
            let s = src.add(at) as *const Word;
            let d = dst.add(at) as *mut u64;
            let w0 = read_volatile(s).0;
            let w1 = read_volatile(s.add(1)).0;
            let w2 = read_volatile(s.add(2)).0;
            let w3 = read_volatile(s.add(3)).0;
            write_volatile(d, w0);
            write_volatile(d.add(1), w1);
            write_volatile(d.add(2), w2);
            write_volatile(d.add(3), w3);
        }
        at += UNROLL * WORD;
    }
    while len - at >= WORD {
        // SAFETY: as for the loop above, with `at + WORD <= len`.
        unsafe {
            let w = read_volatile(src.add(at) as *const Word).0;
            write_volatile(dst.add(at) as *mut u64, w);
        }
        at += WORD;
    }
    // SAFETY: `at <= len`, the tail `[at, len)` is inside both ranges.
    unsafe { copy_bytes(dst, src, at, len) };
}

/// Copy `len` bytes from `src` to `dst`, back to front, one volatile byte at
/// a time: correct (memmove) for overlapping ranges with `dst` after `src`,
/// which only a hostile peer describes, so it need not be fast.
///
/// # Safety
///
/// As for [`copy_forward`].
pub(super) unsafe fn copy_backward(dst: *mut u8, src: *const u8, len: usize) {
    for i in (0..len).rev() {
        // SAFETY: `i < len`, inside both ranges; each byte is read once and
        // written once (see the module notes on concurrent writers).
        unsafe { write_volatile(dst.add(i), read_volatile(src.add(i))) };
    }
}

/// Copy bytes `[from, to)` one volatile byte at a time (the head and tail of
/// [`copy_forward`]).
///
/// # Safety
///
/// `[from, to)` inside both ranges, as for [`copy_forward`].
#[inline]
unsafe fn copy_bytes(dst: *mut u8, src: *const u8, from: usize, to: usize) {
    for i in from..to {
        // SAFETY: `from <= i < to`, inside both ranges per the contract; each
        // byte is read once and written once.
        unsafe { write_volatile(dst.add(i), read_volatile(src.add(i))) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A buffer with a guard zone either side, to catch writes out of range.
    const GUARD: usize = 16;
    const GUARD_BYTE: u8 = 0xa5;

    /// Copy `len` bytes from `src + so` to `dst + dof` with `copy_forward`
    /// and check the result against `copy_from_slice`, and the guards.
    fn check_copy(so: usize, dof: usize, len: usize) {
        let src: Vec<u8> = (0..GUARD * 2 + so + len)
            .map(|i| (i * 7 + 3) as u8)
            .collect();
        let mut dst = vec![GUARD_BYTE; GUARD * 2 + dof + len];
        // SAFETY: both ranges lie inside their vectors (guards either side).
        unsafe {
            copy_forward(
                dst.as_mut_ptr().add(GUARD + dof),
                src.as_ptr().add(GUARD + so),
                len,
            )
        };
        let (a, rest) = dst.split_at(GUARD + dof);
        let (mid, b) = rest.split_at(len);
        assert_eq!(mid, &src[GUARD + so..GUARD + so + len]);
        assert!(a.iter().chain(b).all(|&x| x == GUARD_BYTE), "wrote outside");
    }

    #[test]
    fn copies_every_alignment_and_length_up_to_64() {
        for so in 0..WORD {
            for dof in 0..WORD {
                for len in 0..=64 {
                    check_copy(so, dof, len);
                }
            }
        }
    }

    #[test]
    fn backward_copy_is_memmove_for_overlap() {
        let mut v: Vec<u8> = (0..100).collect();
        let p = v.as_mut_ptr();
        // SAFETY: [10, 60) and [13, 63) both lie inside the 100-byte vector.
        unsafe { copy_backward(p.add(13), p.add(10), 50) };
        let want: Vec<u8> = (0..13).chain(10..60).chain(63..100).collect();
        assert_eq!(v, want);
    }

    #[test]
    fn forward_copy_is_memmove_for_overlap_downwards() {
        let mut v: Vec<u8> = (0..100).collect();
        let p = v.as_mut_ptr();
        // SAFETY: [13, 63) and [3, 53) both lie inside the 100-byte vector.
        unsafe { copy_forward(p.add(3), p.add(13), 50) };
        let want: Vec<u8> = (0..3).chain(13..63).chain(53..100).collect();
        assert_eq!(v, want);
    }

    proptest! {
        #[test]
        fn copy_matches_memcpy(so in 0usize..64, dof in 0usize..64, len in 0usize..2048) {
            check_copy(so, dof, len);
        }
    }
}
