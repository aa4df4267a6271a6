//! The proptests and regressions that drive [`replay`].

use super::*;
use crate::virtq::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 8192u64..PEER_MEM,
        1 => Just(PEER_MEM - 1),
        1 => Just(PEER_MEM),
        1 => (PEER_MEM - 64)..(PEER_MEM + 64),
        1 => Just(u64::MAX - 8),
        1 => any::<u64>(),
    ]
}

fn len() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => 0u32..2000,
        1 => Just(0u32),
        1 => 60000u32..70000,
        1 => Just(u32::MAX),
        1 => any::<u32>(),
    ]
}

fn flags() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => Just(0u16),
        4 => Just(VRING_DESC_F_NEXT),
        1 => Just(VRING_DESC_F_WRITE),
        1 => Just(VRING_DESC_F_INDIRECT),
        1 => any::<u16>(),
    ]
}

/// An index near the queue (`size` is the largest queue: smaller ones
/// take indexes modulo theirs or see them out of range).
fn index(size: u16) -> impl Strategy<Value = u16> {
    prop_oneof![4 => 0..size, 1 => any::<u16>()]
}

fn config() -> impl Strategy<Value = Config> {
    (
        0..=MAX_PEER_QUEUE_LOG2,
        prop_oneof![Just(Mode::Always), Just(Mode::Flags), Just(Mode::EventIdx)],
        any::<bool>(),
    )
        .prop_map(|(peer_queue_log2, mode, guest_interrupts)| Config {
            peer_queue_log2,
            mode,
            guest_interrupts,
        })
}

fn write_desc(size: u16) -> impl Strategy<Value = Op> {
    (index(size), addr(), len(), flags(), index(size)).prop_map(
        |(index, addr, len, flags, next)| Op::WriteDesc {
            index,
            addr,
            len,
            flags,
            next,
        },
    )
}

/// Any op, weighted towards the ones that move packets.
fn op(size: u16) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => write_desc(size),
        4 => index(size).prop_map(|head| Op::PublishAvail { head }),
        1 => prop_oneof![4 => 0..=size, 1 => any::<u16>()].prop_map(Op::SetAvailIdx),
        2 => (any::<u16>(), any::<u8>()).prop_map(|(at, byte)| Op::Scribble { at, byte }),
        1 => (any::<u16>(), any::<u16>())
            .prop_map(|(flags, used_event)| Op::PeerSuppress { flags, used_event }),
        2 => (0..=OWN_QUEUE as u8, prop_oneof![4 => Just(BUF_SIZE as u32), 1 => any::<u32>()])
            .prop_map(|(count, len)| Op::PostRx { count, len }),
        2 => Just(Op::ReapRx),
        1 => any::<bool>().prop_map(Op::GuestInterrupts),
        1 => any::<bool>().prop_map(Op::PeerNotifications),
        1 => any::<bool>().prop_map(Op::RxNotifications),
        4 => Just(Op::Poll),
    ]
}

/// The shape of the original property: a whole hostile ring written up
/// front, our RX ring full of buffers, then a few rounds of "set the
/// avail index, scribble a byte, poll".
fn whole_ring_case() -> impl Strategy<Value = Case> {
    config().prop_flat_map(|cfg| {
        let size = cfg.peer_queue() as usize;
        (
            Just(cfg),
            prop::collection::vec((addr(), len(), flags(), index(size as u16)), size),
            prop::collection::vec(index(size as u16), size),
            prop::collection::vec(prop_oneof![4 => 0..=size as u16, 1 => any::<u16>()], 1..4),
            prop::collection::vec((any::<u16>(), any::<u8>()), 0..4),
        )
            .prop_map(|(cfg, descs, heads, avail_idx, scribble)| {
                // Each write lands in its own table entry.
                let mut ops: Vec<Op> = descs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (addr, len, flags, next))| Op::WriteDesc {
                        index: i as u16,
                        addr,
                        len,
                        flags,
                        next,
                    })
                    .collect();
                for head in heads {
                    ops.push(Op::PublishAvail { head });
                }
                ops.push(Op::PostRx {
                    count: OWN_QUEUE as u8,
                    len: BUF_SIZE as u32,
                });
                for (round, idx) in avail_idx.into_iter().enumerate() {
                    ops.push(Op::SetAvailIdx(idx));
                    if let Some(&(at, byte)) = scribble.get(round) {
                        ops.push(Op::Scribble { at, byte });
                    }
                    ops.push(Op::Poll);
                }
                Case { cfg, ops }
            })
    })
}

fn any_case() -> impl Strategy<Value = Case> {
    config().prop_flat_map(|cfg| {
        let size = cfg.peer_queue() as u16;
        (Just(cfg), prop::collection::vec(op(size), 0..64)).prop_map(|(cfg, ops)| Case { cfg, ops })
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        // lguest-launcher/proptest-regressions/fuzzing/tests.txt
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn fuzz_copier_survives_hostile_peer_ring(case in whole_ring_case()) {
        if let Err(v) = replay(&case.ops, &case.cfg) {
            return Err(TestCaseError::fail(v.to_string()));
        }
    }

    #[test]
    fn fuzz_copier_keeps_invariants_under_any_op_sequence(case in any_case()) {
        if let Err(v) = replay(&case.ops, &case.cfg) {
            return Err(TestCaseError::fail(v.to_string()));
        }
    }
}

fn desc(index: u16, addr: u64, flags: u16, next: u16) -> Op {
    Op::WriteDesc {
        index,
        addr,
        len: 100,
        flags,
        next,
    }
}

#[test]
fn fuzz_regression_self_looping_chain_is_dropped_and_counted() {
    let mut ops = vec![
        desc(0, 8192, VRING_DESC_F_NEXT, 0),  // loops to itself
        desc(1, 8192, 0, 0),                  // fine
        desc(2, 8192, VRING_DESC_F_WRITE, 0), // writable in a TX chain
        desc(3, u64::MAX - 8, 0, 0),          // outside the peer's memory
        Op::PostRx {
            count: OWN_QUEUE as u8,
            len: BUF_SIZE as u32,
        },
    ];
    ops.extend((0..4).map(|head| Op::PublishAvail { head }));
    ops.push(Op::Poll);
    let cfg = Config {
        peer_queue_log2: 2,
        ..Config::default()
    };
    let report = replay(&ops, &cfg).unwrap();
    let stats = &report.stats;
    assert_eq!(stats.peer_loop, 1, "{stats:?}");
    assert_eq!(stats.peer_wrong_direction, 1, "{stats:?}");
    assert_eq!(stats.peer_out_of_bounds, 1, "{stats:?}");
    assert_eq!(stats.peer_errors, 3);
    assert_eq!((report.moved, report.dropped), (1, 3));
    assert!(report.link_dropped.is_none());
}

#[test]
fn fuzz_avail_jump_ends_the_link_with_a_named_error() {
    let ops = [Op::SetAvailIdx(9), Op::Poll, Op::Poll];
    let report = replay(&ops, &Config::default()).unwrap();
    assert!(
        matches!(
            report.link_dropped,
            Some((1, RingError::AvailJump { to: 9, .. }))
        ),
        "{:?}",
        report.link_dropped
    );
    assert_eq!(report.polls, 0);
}

#[test]
fn fuzz_frame_waits_for_rx_buffer_then_is_reaped() {
    let ops = [
        desc(0, 8192, 0, 0),
        Op::PublishAvail { head: 0 },
        Op::Poll, // no RX buffer: rx_full, nothing consumed
        Op::PostRx { count: 1, len: 50 },
        Op::Poll, // 100 bytes into 50: oversized
        desc(1, 8192, 0, 0),
        Op::PublishAvail { head: 1 },
        Op::PostRx { count: 1, len: 100 },
        Op::Poll, // a drop leaves the 50-byte buffer first: oversized again
        Op::WriteDesc {
            index: 0,
            addr: 9000,
            len: 40,
            flags: 0,
            next: 0,
        },
        Op::PublishAvail { head: 0 },
        Op::Poll, // 40 bytes fit the 50-byte buffer
        Op::ReapRx,
    ];
    let report = replay(&ops, &Config::default()).unwrap();
    assert_eq!(report.stats.rx_ring_full, 1);
    assert_eq!(report.drops_by_reason.get("oversized"), Some(&2));
    assert_eq!((report.moved, report.dropped, report.reaped), (1, 2, 1));
}

/// Crash inputs of the cargo-fuzz target, replayed on stable.
#[cfg(feature = "fuzzing")]
#[test]
fn fuzz_corpus_regressions_replay_clean() {
    use arbitrary::{Arbitrary, Unstructured};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus-regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus-regressions") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") || !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        // As libfuzzer-sys decodes a typed fuzz_target! input.
        let Ok(case) = Case::arbitrary_take_rest(Unstructured::new(&bytes)) else {
            continue; // libFuzzer skips undecodable input too
        };
        if let Err(v) = replay(&case.ops, &case.cfg) {
            panic!("{}: {v}\n{case:?}", path.display());
        }
        n += 1;
    }
    eprintln!("replayed {n} corpus regressions");
}
