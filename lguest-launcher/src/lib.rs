//! # lguest-launcher: the sharenet data path as a library
//!
//! Read it in data-path order, as lguest.c is read top to bottom:
//!
//! 1. [`memory`] — a guest's memory: our sealed memfd, the mapping of the
//!    peer's, and [`memory::Region`], the one bounds-checked accessor of
//!    shared memory.
//! 2. [`virtq`] — the split virtqueue: its layout, descriptors,
//!    notification suppression, the driver side (our synthetic guest) and
//!    the device side (what our copier serves), with their errors.
//! 3. [`copier`] — pulls the peer's TX chains into our RX ring and returns
//!    what happened as an [`copier::Outcome`]; [`run::account`] is the one
//!    `match` every packet and every drop passes; [`garbage`] — what the
//!    peer's malformed chains may cost us (per-poll and per-window budgets).
//! 4. [`wait`] — the one wait loop: re-arm, fence, re-check, then sleep,
//!    spin or adapt; [`wakeup`] — what a blocking wake-up costs here,
//!    measured at connect to calibrate the adaptive spin.
//! 5. [`link`] — a transport chosen by its kind, once.
//! 6. [`guest`] — the synthetic guest: its driver, the frame format and the
//!    memory plan; [`vhost_user`] — a real QEMU VM in its place.
//! 7. [`run`] — one launcher run wiring all of it; [`stats`] — what it
//!    reports.
//! 8. [`switch`] — more than two guests on one link: ports that are the
//!    peer side of ordinary links, forwarding by MAC address.
//! 9. [`cli`], [`demo`], [`bench`](mod@bench), [`progress`] — the user-facing parts.

pub mod bench;
pub mod capture;
pub mod cli;
pub mod copier;
pub mod demo;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod garbage;
pub mod guest;
pub mod link;
pub mod memory;
pub mod offload;
pub mod progress;
pub mod run;
pub mod stats;
pub mod status;
pub mod switch;
pub mod vhost_user;
pub mod virtq;
pub mod wait;
pub mod wakeup;
