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
        #[cfg(target_arch = "x86_64")]
        {
            let p = self.ptr(offset as usize);
            // SAFETY: PREFETCHW is a hint: it reads and writes no memory
            // as far as the program can tell, never faults (not even on an
            // unmapped address) and touches no register or flag; `p` is
            // inside the mapping anyway (checked above). CPUs without
            // PRFCHW execute it as a NOP.
            unsafe {
                std::arch::asm!(
                    "prefetchw [{p}]",
                    p = in(reg) p,
                    options(nostack, preserves_flags, readonly)
                );
            }
        }
    }
}
