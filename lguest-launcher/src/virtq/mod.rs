//! The split virtqueue, in the virtio 1.x layout, both sides of it.
//!
//! A ring lives in the memory of the side that *drives* it (its guest):
//! a descriptor table (`addr u64, len u32, flags u16, next u16` per entry),
//! an avail ring (`flags, idx, ring[size], used_event`) the driver writes,
//! and a used ring (`flags, idx, ring[size] of {id u32, len u32},
//! avail_event`) the device writes. Our launcher drives two rings (its
//! guest's TX and RX) and serves two as a device: the *peer's* TX ring,
//! which our copier pulls packets from, and our own RX ring, which it fills.
//! Each used ring has exactly one writer: the copier on the receiving side.
//!
//! Ordering, as in the spec and lguest.c: a producer fills entries, then
//! publishes the index with a release store; a consumer loads the index
//! with acquire, then reads entries. Before deciding whether to notify, the
//! publisher issues a full fence so its index store is visible before it
//! reads the other side's suppression field (flag or event index) — else
//! both could decide the other is awake and sleep forever.
//!
//! # Why not rust-vmm `virtio-queue`
//! `virtio-queue`'s device side walks a queue through `vm-memory`'s
//! `GuestMemory`, which wants guest-physical address spaces and its own
//! region types; here the "guest memory" of the device side is a peer's
//! memfd mapped at offset 0, and the driver side (our synthetic guest) has
//! to be ours anyway. We keep the same discipline — every address checked
//! with `checked_add`, each descriptor read once into a local copy, a
//! named error per malformed case, explicit orderings — in ~400 lines over
//! one bounds-checked accessor ([`Region`](crate::memory::Region)), which also keeps the hot path
//! free of trait dispatch. The vhost-user work (real VMs) is where
//! `virtio-queue` will come in, behind the same `DeviceQueue` interface.

mod desc;
mod device;
mod driver;
mod error;
mod layout;
mod notify;
#[cfg(test)]
mod tests;

pub use desc::*;
pub use device::DeviceQueue;
pub use driver::DriverQueue;
pub use error::{ChainError, RingError};
pub use notify::{vring_need_event, NotifyMode};
