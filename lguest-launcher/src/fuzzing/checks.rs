//! What the harness compares: counters, memory snapshots.

#[allow(unused_imports)]
use super::*;

/// The stats field a drop of `reason` is counted in, by our own reading of
/// the stats contract (not by calling `account`, which is under test).
pub(super) fn drop_counter(reason: &DropReason) -> &'static str {
    match reason.name() {
        "bad_index" => "peer_bad_index",
        "out_of_bounds" => "peer_out_of_bounds",
        "loop" => "peer_loop",
        "wrong_direction" => "peer_wrong_direction",
        "indirect" => "peer_indirect",
        "bad_offload" => "peer_bad_offload",
        _ => "peer_bad_length", // bad_length and oversized
    }
}

/// The counters [`replay`] checks, by stats field name.
pub(super) fn counters(s: &Stats) -> [(&'static str, u64); 11] {
    [
        ("packets_copied", s.packets_copied),
        ("bytes_copied", s.bytes_copied),
        ("rx_ring_full", s.rx_ring_full),
        ("peer_errors", s.peer_errors),
        ("peer_bad_index", s.peer_bad_index),
        ("peer_out_of_bounds", s.peer_out_of_bounds),
        ("peer_loop", s.peer_loop),
        ("peer_wrong_direction", s.peer_wrong_direction),
        ("peer_indirect", s.peer_indirect),
        ("peer_bad_length", s.peer_bad_length),
        ("peer_bad_offload", s.peer_bad_offload),
    ]
}

pub(super) fn snapshot(mem: &Region) -> Vec<u8> {
    let mut v = vec![0u8; mem.len() as usize];
    // The whole region is in bounds by construction.
    let _ = mem.read("fuzz snapshot", 0, &mut v);
    v
}

/// The first offset where `a` and `b` differ outside `allowed` (sorted,
/// disjoint ranges); compared as slices so a clean run costs a memcmp.
pub(super) fn stray_change(a: &[u8], b: &[u8], allowed: &[Range<u64>]) -> Option<u64> {
    let mut from = 0u64;
    let check = |r: Range<u64>| {
        let (s, e) = (r.start as usize, (r.end as usize).min(a.len()));
        if s < e && a[s..e] != b[s..e] {
            let i = (s..e).find(|&i| a[i] != b[i]).unwrap_or(s);
            return Some(i as u64);
        }
        None
    };
    for r in allowed {
        if let Some(i) = check(from..r.start) {
            return Some(i);
        }
        from = from.max(r.end);
    }
    check(from..a.len() as u64)
}
