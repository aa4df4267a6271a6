//! Guest memory: our own sealed memfd, and our mapping of the peer's.
//!
//! Each launcher owns one memfd holding its guest's rings and packet
//! buffers. It is sized once, sealed against shrinking and growing (and
//! against further seal changes) *before* the peer can see it, and mapped
//! shared. The peer maps it too, after checking the seals and size, so a
//! truncate can never turn a ring access into SIGBUS.
//!
//! Every access to either mapping goes through [`Region`], the one
//! bounds-checked accessor: offsets are checked with `checked_add` against
//! the mapping length, ring indexes are accessed as atomics at aligned
//! offsets, and packet bytes and descriptors are copied after the same check
//! by `volatile.rs`, with rust-vmm vm-memory's policy: a field of up to 8
//! bytes with volatile words, exactly once at its size; a longer run with
//! one memmove on raw pointers, each byte read once into memory the peer
//! cannot reach or that nobody reads before a Release store publishes it.
//! The peer may be writing those bytes as we copy them; either way that can
//! only yield garbage bytes in range (the argument is in `volatile.rs`).
//! This is the only module (with `virtq/` using it) that holds raw
//! pointers; nothing outside does pointer arithmetic on guest memory.

mod borrowed;
mod guest;
mod map;
mod region;
mod volatile;

pub use guest::{check_vm_memory_shareable, map_peer, seal, GuestMemory};
pub use map::GuestMap;
pub use region::{MemoryError, OutOfBounds, RawView, Region, Span};
