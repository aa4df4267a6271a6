//! The copier against a hostile peer: libFuzzer's bytes decode (with
//! `arbitrary`) into a [`Case`] — a peer queue size, a notification mode
//! and a list of ring operations — which `replay` runs against a real
//! copier over two real memfds, checking every invariant after every poll.
//! A violated invariant or a panic is a crash; save the input in
//! `../corpus-regressions/` so the stable test suite replays it.

#![no_main]

use lguest_launcher::fuzzing::{replay, Case};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|case: Case| {
    if let Err(v) = replay(&case.ops, &case.cfg) {
        panic!("invariant violated: {v}\n{case:?}");
    }
});
