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
//! shared mapping here is `read_volatile`/`write_volatile`. Volatile is the
//! tool the language gives for memory outside any Rust allocation that
//! something outside the program changes (`std::ptr::read_volatile`: I/O
//! memory, device registers); a peer process writing an `mmap`ed memfd is
//! such an outside writer. A volatile access happens exactly once, at its
//! size, and the compiler assumes nothing about the value it returns: it
//! cannot re-load it, merge it, or reason from an earlier read. Between our
//! own threads volatile would settle nothing (it is no atomic), and it need
//! not: our threads hand a buffer over only through the ring indexes, with
//! Release/Acquire atomics, so only the peer can race with us.
//!
//! Each value read is copied once into a register and written once; it is
//! never read back. A peer writing concurrently can therefore make us copy a
//! mix of old and new bytes (a torn chunk), and nothing worse: the addresses
//! are fixed before the copy starts and were bounds-checked by [`Region`],
//! and the copier and the guest treat what arrives as packet data, never as
//! an address or a length.
//!
//! Volatile accesses cannot be merged into memcpy's wide moves, so the copy
//! chooses its own widths, as vm-memory's `copy_slice_volatile` does: a head
//! of at most one 1-, 2-, 4- and 8-byte piece brings the destination to a
//! [`Chunk`] boundary, the body moves whole chunks (16 bytes on x86_64, an
//! SSE2 register; 8 elsewhere), four per loop turn, and a tail of at most one
//! 8-, 4-, 2- and 1-byte piece finishes. Every store is naturally aligned.
//! The source may sit at any alignment relative to the destination (a
//! 12-byte virtio-net header shifts the payload by 4), so it is read through
//! [`Unaligned`], one unaligned load where the CPU allows it: a misaligned
//! packet costs what an aligned one does.
//!
//! # Bulk copies: vm-memory's policy, measured
//! Word-wise volatile copies cost: 88 ns per 1500 B against memcpy's 48 ns
//! here, and a packet is copied three times (the sending guest's write, the
//! copier's copy, the receiving guest's read), which took a quarter to a
//! third off the 1500 B stream (`scripts/ab-bench`, same run). So [`copy`]
//! follows what rust-vmm's vm-memory 0.18 itself does
//! (`volatile_memory.rs`: `copy_slice` and `VolatileSlice::copy_to_volatile_slice`):
//! a short run — vm-memory's cut is 8 bytes, ours 16 ([`FIELD`]: a
//! descriptor is one volatile load and store) — is moved with the volatile
//! words above, exactly once at its size; anything longer is one call to
//! `ptr::copy` (memmove) on raw pointers. That is sound for the same
//! reason: the bulk copy reads each source byte once, into memory the peer
//! cannot reach (a local buffer) or that nobody reads until a Release store
//! publishes it (our RX buffer); the compiler gets no second read of shared
//! bytes to reason from, and a concurrent peer write can only make the copy
//! see a mix of old and new bytes, inside bounds checked beforehand.
//! Ring indexes stay atomics; descriptors are copied once into a local
//! buffer and parsed from there.
//!
//! [`Region`]: super::Region

use std::ptr::{read_volatile, write_volatile};

/// Longest copy done with volatile accesses (a field, a 16-byte descriptor:
/// a descriptor is one load and one store); longer ones are a single
/// memmove (see the module docs). Measured with callgrind on a 64 B stream:
/// word-wise volatile copies up to 64 bytes cost 1300 instructions per
/// packet against 1100 for this cut.
pub(super) const FIELD: usize = 16;

/// Copy `len` bytes from `src` to `dst`, which may overlap (memmove's
/// result): a field of at most [`FIELD`] bytes with volatile accesses, a
/// longer run with one `ptr::copy`, as vm-memory does.
///
/// # Safety
/// `src` must be valid for `len` reads and `dst` for `len` writes, both
/// inside one mapping each that outlives the call; nothing may hold a Rust
/// reference into either range.
#[inline(always)]
pub(super) unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) {
    if len == CHUNK {
        // One descriptor (or header): one load, one store — memmove's
        // result even when the two overlap.
        // SAFETY: the caller's contract; `Unaligned` has alignment 1.
        unsafe {
            let v = read_volatile(src as *const Unaligned<Chunk>);
            write_volatile(dst as *mut Unaligned<Chunk>, v);
        }
    } else if len <= FIELD {
        let (to, at) = (dst as usize, src as usize);
        // SAFETY: the caller's contract; a copy up onto its own source runs
        // back to front, as memmove does.
        unsafe {
            if at < to && to - at < len {
                copy_backward(dst, src, len)
            } else {
                copy_forward(dst, src, len)
            }
        }
    } else {
        // SAFETY: the caller's contract; `ptr::copy` allows overlap. The
        // race is argued in the module docs: each byte is read once, and a
        // concurrent write only mixes old and new bytes in the copy.
        unsafe { std::ptr::copy(src, dst, len) }
    }
}

/// Store the 16 bytes of `v` (little-endian) at `dst`, any alignment, as
/// one volatile store of a value built in registers (a descriptor, a frame
/// stamp): a 16-byte load of bytes just stored in smaller pieces cannot be
/// forwarded from the store buffer and stalls.
///
/// # Safety
/// `dst` must be valid for 16 bytes of writes inside one mapping that
/// outlives the call; nothing may hold a Rust reference into the range.
#[inline(always)]
pub(super) unsafe fn store_u128(dst: *mut u8, v: u128) {
    // SAFETY: the caller's contract; `Unaligned` has alignment 1. Race: one
    // volatile store of a value in registers; a peer writing meanwhile
    // leaves a mix at these same 16 bytes.
    unsafe { write_volatile(dst as *mut Unaligned<u128>, Unaligned(v.to_le())) }
}

/// Load 16 bytes at `src`, any alignment, as one volatile load into a
/// little-endian value in registers (a descriptor: parsed from the value,
/// never read again).
///
/// # Safety
/// `src` must be valid for 16 bytes of reads inside one mapping that
/// outlives the call.
#[inline(always)]
pub(super) unsafe fn load_u128(src: *const u8) -> u128 {
    // SAFETY: the caller's contract; `Unaligned` has alignment 1. Race: one
    // volatile load; a peer writing meanwhile gives a torn value, which the
    // caller checks as it checks any value.
    u128::from_le(unsafe { read_volatile(src as *const Unaligned<u128>) }.0)
}

/// The widest value moved at once: a 16-byte SSE2 register on x86_64 (part
/// of its baseline), a `u64` elsewhere. Plain data: any bits are a value.
#[cfg(target_arch = "x86_64")]
type Chunk = std::arch::x86_64::__m128i;
#[cfg(not(target_arch = "x86_64"))]
type Chunk = u64;

/// Bytes in one [`Chunk`].
const CHUNK: usize = size_of::<Chunk>();

/// Chunks moved per turn of the main loop (all loads, then all stores).
const UNROLL: usize = 4;

/// A `T` with alignment 1: a volatile read of it is one (possibly unaligned)
/// load of `T`'s size, which `read_volatile::<T>` forbids on an unaligned
/// address and `read_volatile::<[u8; N]>` compiles to N byte loads.
#[repr(C, packed)]
#[derive(Clone, Copy)]
struct Unaligned<T: Copy>(T);

/// Copy one `T` at byte `at`: an unaligned volatile load from `src`, an
/// aligned volatile store to `dst`.
///
/// # Safety
///
/// `[at, at + size_of::<T>())` inside both ranges (see [`copy_forward`]),
/// `dst + at` aligned for `T`, and `T` plain data (any bits are a value).
#[inline(always)]
unsafe fn piece<T: Copy>(dst: *mut u8, src: *const u8, at: usize) {
    // SAFETY: bounds and alignment per this function's contract; `src` needs
    // no alignment as an `Unaligned<T>`. Race: the value is loaded once into
    // a local and stored once, so a peer writing meanwhile yields at worst a
    // torn value of garbage bytes at these same addresses.
    unsafe {
        let v = read_volatile(src.add(at) as *const Unaligned<T>).0;
        write_volatile(dst.add(at) as *mut T, v);
    }
}

/// Copy one piece of `w` bytes (1, 2, 4 or 8) at byte `at`.
///
/// # Safety
///
/// As for [`piece`], with `T` the unsigned integer of `w` bytes.
#[inline(always)]
unsafe fn piece_of(w: usize, dst: *mut u8, src: *const u8, at: usize) {
    // SAFETY: the caller's contract, with `T` matching `w`.
    unsafe {
        match w {
            1 => piece::<u8>(dst, src, at),
            2 => piece::<u16>(dst, src, at),
            4 => piece::<u32>(dst, src, at),
            _ => piece::<u64>(dst, src, at),
        }
    }
}

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
    let mut at = 0;
    // Head: clear the destination's low address bits one by one. A piece of
    // `w` bytes is copied only where bit `w` is the lowest set bit, so it is
    // aligned; if it does not fit, fewer than `w` bytes remain and the tail
    // (whose pieces are then all narrower than `w`) copies them, aligned too.
    for w in [1, 2, 4, 8] {
        if w >= CHUNK || len - at < w {
            break;
        }
        if (dst as usize + at) & w != 0 {
            // SAFETY: `at + w <= len` (checked above) keeps the piece inside
            // both ranges; `dst + at` is `w`-aligned (lower bits cleared by
            // earlier pieces). See `piece` for the race.
            unsafe { piece_of(w, dst, src, at) };
            at += w;
        }
    }
    // Body: reached with `len - at >= CHUNK` only if the head ran to the end,
    // so `dst + at` is `CHUNK`-aligned here and stays so (whole chunks).
    while len - at >= UNROLL * CHUNK {
        // SAFETY: bounds: `at + UNROLL * CHUNK <= len`, so all four chunks
        // lie inside the ranges the caller vouched for; the stores are
        // `CHUNK`-aligned (above) and the loads need no alignment. Race: each
        // chunk is loaded once into a local (all four before any store) and
        // stored once, so a peer writing meanwhile yields at worst torn
        // chunks of garbage data at these same addresses.
        unsafe {
            let s = src.add(at) as *const Unaligned<Chunk>;
            let d = dst.add(at) as *mut Chunk;
            let c0 = read_volatile(s).0;
            let c1 = read_volatile(s.add(1)).0;
            let c2 = read_volatile(s.add(2)).0;
            let c3 = read_volatile(s.add(3)).0;
            write_volatile(d, c0);
            write_volatile(d.add(1), c1);
            write_volatile(d.add(2), c2);
            write_volatile(d.add(3), c3);
        }
        at += UNROLL * CHUNK;
    }
    while len - at >= CHUNK {
        // SAFETY: as for the loop above, with `at + CHUNK <= len`.
        unsafe { piece::<Chunk>(dst, src, at) };
        at += CHUNK;
    }
    // Tail: fewer than `CHUNK` bytes (or than the head's last width) remain,
    // at an address aligned to that; descending pieces stay aligned.
    for w in [8, 4, 2, 1] {
        if w < CHUNK && len - at >= w {
            // SAFETY: `at + w <= len`, inside both ranges; `dst + at` is
            // `w`-aligned (see the comment above the loop).
            unsafe { piece_of(w, dst, src, at) };
            at += w;
        }
    }
    debug_assert_eq!(at, len);
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
        for so in 0..CHUNK {
            for dof in 0..CHUNK {
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
