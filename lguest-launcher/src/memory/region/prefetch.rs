//! [`Region::prefetch_for_write`]: ask for a cache line we are about to
//! write before the store gets there.
//!
//! A stream's TX slots are read by the peer's copier on the other CPU, so
//! each slot's first line sits in the peer's cache when our guest writes
//! the next frame's stamp into it. That store needs the line back
//! (a read-for-ownership), and x86 commits stores in order: while it
//! waits, every later store (ring entries, the guest's own bookkeeping,
//! the stack) queues behind it, and once the store queue is full the
//! guest stops. On this kind of machine a line moves between the two
//! vCPUs in 60 to 300 ns depending on where the host runs them
//! (BENCHMARKS.md, "Spread and adaptive"), so a stream spent half its time
//! on a full store queue. `PREFETCHW` asks for the line in exclusive state
//! without taking a store queue entry: issued a few frames ahead, the
//! transfers of several slots overlap and the stamp store finds its line.

use super::Region;

impl Region {
    /// Hint that the line holding `offset` will soon be written. Never
    /// faults and changes no byte; an offset outside the mapping is
    /// ignored. A no-op where the instruction does not exist.
    #[inline(always)]
    pub fn prefetch_for_write(&self, offset: u64) {
        if offset >= self.len {
            return;
        }
        line_for_write(self.ptr(offset as usize));
    }
}

/// PREFETCHT0: hint that the line holding `p` will soon be read. Any
/// pointer value will do: the instruction never faults (not even on an
/// unmapped address), reads and writes no memory as far as the program
/// can tell, and touches no register or flag. A no-op where it does not
/// exist.
#[inline(always)]
pub(super) fn line_for_read(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a hint, as the doc says: nothing is dereferenced.
    unsafe {
        std::arch::asm!(
            "prefetcht0 [{p}]",
            p = in(reg) p,
            options(nostack, preserves_flags, readonly)
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// PREFETCHW: hint that the line holding `p` will soon be written (asked
/// for in exclusive state, without taking a store queue entry). As
/// [`line_for_read`], any pointer value will do; CPUs without PRFCHW
/// execute it as a NOP.
#[inline(always)]
pub(super) fn line_for_write(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a hint, as the doc says: nothing is dereferenced.
    unsafe {
        std::arch::asm!(
            "prefetchw [{p}]",
            p = in(reg) p,
            options(nostack, preserves_flags, readonly)
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
