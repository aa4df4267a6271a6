//! Property/fuzz tests of the copier's device side against hostile peer
//! rings, in-process over real memfd mappings.
//!
//! Each case builds an arbitrary peer TX ring (descriptor table, avail ring,
//! avail index — structured so that most values sit near the interesting
//! boundaries, plus raw random bytes) in a real sealed memfd, gives our side
//! a real RX ring with posted buffers, and runs [`Copier::poll`] a few times,
//! mutating the peer's ring in between. It asserts:
//!
//! * no panic, and every outcome is `Ok` or a named peer-ring error;
//! * bounded work per call (never more chains than the queue size);
//! * our RX used entries only name buffers we posted, with lengths that fit;
//! * nothing in our memory changes outside our RX buffers and RX used ring.
//!
//! The bounded run is part of `cargo test` (256 cases per property). A
//! longer run: `PROPTEST_CASES=200000 cargo test --release -p lguest-launcher fuzz_`.
//! Failures proptest finds are saved under `proptest-regressions/` and
//! replayed first on every later run; keep them committed.

use crate::copier::{Copier, CopyError};
use crate::guest::plan::{Layout, BUF_SIZE};
use crate::memory::{GuestMap, GuestMemory, Region};
use crate::stats::Stats;
use crate::virtq::{
    DriverQueue, NotifyMode, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use proptest::prelude::*;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use transport::{ConnectOptions, Handshake, Notify, PeerInfo, RingInfo, Transport, Wakeup};

/// Counts notifications; the copier needs a transport to tell the peer.
struct CountingTransport {
    notifies: AtomicU64,
    fd: std::fs::File,
}

impl Default for CountingTransport {
    fn default() -> Self {
        CountingTransport {
            notifies: AtomicU64::new(0),
            fd: std::fs::File::open("/dev/null").expect("open /dev/null"),
        }
    }
}

impl Transport for CountingTransport {
    const KIND: &'static str = "counting";
    fn connect(
        _: &Path,
        _: &Handshake,
        _: BorrowedFd<'_>,
        _: &ConnectOptions,
    ) -> transport::Result<(Self, PeerInfo)> {
        Err(transport::Error::NotImplemented("counting"))
    }
    fn notify(&self) -> transport::Result<Notify> {
        self.notifies.fetch_add(1, Ordering::Relaxed);
        Ok(Notify::Sent)
    }
    fn wait(&self, _: Option<Duration>) -> transport::Result<Wakeup> {
        Ok(Wakeup::Timeout)
    }
    fn as_fd(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }
    fn peer_pid(&self) -> u32 {
        1
    }
}

const PEER_MEM: u64 = 1 << 16;
const OWN_QUEUE: u32 = 8;

#[derive(Clone, Debug)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

#[derive(Clone, Debug)]
struct PeerRing {
    size_log2: u32,
    descs: Vec<Desc>,
    heads: Vec<u16>,
    avail_idx: Vec<u16>,
    scribble: Vec<(u16, u8)>,
}

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

fn peer_ring() -> impl Strategy<Value = PeerRing> {
    (0u32..=5).prop_flat_map(|size_log2| {
        let size = 1u16 << size_log2;
        let desc = (
            addr(),
            len(),
            flags(),
            prop_oneof![4 => 0..size, 1 => any::<u16>()],
        )
            .prop_map(|(addr, len, flags, next)| Desc {
                addr,
                len,
                flags,
                next,
            });
        (
            Just(size_log2),
            prop::collection::vec(desc, size as usize),
            prop::collection::vec(prop_oneof![4 => 0..size, 1 => any::<u16>()], size as usize),
            prop::collection::vec(prop_oneof![4 => 0..=size, 1 => any::<u16>()], 1..4),
            prop::collection::vec((any::<u16>(), any::<u8>()), 0..16),
        )
            .prop_map(|(size_log2, descs, heads, avail_idx, scribble)| PeerRing {
                size_log2,
                descs,
                heads,
                avail_idx,
                scribble,
            })
    })
}

fn write_peer_ring(mem: &Region, info: &RingInfo, p: &PeerRing) {
    for (i, d) in p.descs.iter().enumerate() {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&d.addr.to_le_bytes());
        b[8..12].copy_from_slice(&d.len.to_le_bytes());
        b[12..14].copy_from_slice(&d.flags.to_le_bytes());
        b[14..16].copy_from_slice(&d.next.to_le_bytes());
        mem.write("fuzz", info.desc + 16 * i as u64, &b).unwrap();
    }
    for (i, h) in p.heads.iter().enumerate() {
        mem.store_u16("fuzz", info.avail + 4 + 2 * i as u64, *h, Ordering::Relaxed)
            .unwrap();
    }
}

fn snapshot(mem: &Region) -> Vec<u8> {
    let mut v = vec![0u8; mem.len() as usize];
    mem.read("fuzz", 0, &mut v).unwrap();
    v
}

fn run_case(p: &PeerRing) -> Result<Stats, TestCaseError> {
    let size = 1u32 << p.size_log2;
    let peer = GuestMemory::create("fuzz-peer", PEER_MEM).unwrap();
    let info = RingInfo {
        desc: 0,
        avail: 16 * size as u64,
        used: 4096,
        size,
    };
    write_peer_ring(peer.region(), &info, p);

    let layout = Layout::plan(OWN_QUEUE);
    let own = GuestMemory::create("fuzz-own", layout.needed).unwrap();
    let mut rx = DriverQueue::new(own.region().clone(), &layout.rx);
    let mut posted = std::collections::HashSet::new();
    while let Some((id, _)) = rx
        .add_slot(layout.rx_bufs, BUF_SIZE, BUF_SIZE as u32, true)
        .unwrap()
    {
        posted.insert(id);
    }
    rx.publish().unwrap();
    let before = snapshot(own.region());

    let mut stats = Stats::default();
    let mut copier = Copier::new(
        CountingTransport::default(),
        &GuestMap::identity(peer.region().clone()),
        &info,
        &GuestMap::identity(own.region().clone()),
        &layout.rx,
        NotifyMode::EventIdx,
    )
    .unwrap();
    for (round, idx) in p.avail_idx.iter().enumerate() {
        peer.region()
            .store_u16("fuzz", info.avail + 2, *idx, Ordering::Release)
            .unwrap();
        if let Some(&(at, byte)) = p.scribble.get(round) {
            // The peer scribbles over its own ring between our looks.
            let off = at as u64 % (info.used + info.used_bytes());
            peer.region().write("fuzz", off, &[byte]).unwrap();
        }
        match copier.poll() {
            Ok(out) => {
                crate::run::account(&copier, &out, &mut stats).unwrap();
                let done = out.finished();
                prop_assert!(
                    done <= size as usize,
                    "did {done} chains on a ring of {size}"
                )
            }
            Err(CopyError::PeerRing(_)) => break, // named, link dropped
            Err(e) => return Err(TestCaseError::fail(format!("unexpected error: {e}"))),
        }
    }

    // Our RX used entries name only buffers we posted, with lengths that fit.
    let used_idx = own
        .region()
        .load_u16("fuzz", layout.rx.used + 2, Ordering::Acquire)
        .unwrap();
    prop_assert!(used_idx as u32 <= OWN_QUEUE);
    for i in 0..used_idx as u64 {
        let id = own
            .region()
            .load_u32("fuzz", layout.rx.used + 4 + 8 * i)
            .unwrap();
        let len = own
            .region()
            .load_u32("fuzz", layout.rx.used + 8 + 8 * i)
            .unwrap();
        prop_assert!(
            id <= u16::MAX as u32 && posted.contains(&(id as u16)),
            "used id {id} never posted"
        );
        prop_assert!(len as u64 <= BUF_SIZE, "used len {len} exceeds buffer");
    }

    // Nothing outside our RX buffers and RX used ring changed.
    let after = snapshot(own.region());
    let rx_used = layout.rx.used..layout.rx.used + layout.rx.used_bytes();
    let rx_bufs = layout.rx_bufs..layout.rx_bufs + BUF_SIZE * OWN_QUEUE as u64;
    for (i, (a, b)) in before.iter().zip(&after).enumerate() {
        let i = i as u64;
        if a != b {
            prop_assert!(
                rx_used.contains(&i) || rx_bufs.contains(&i),
                "byte {i:#x} changed outside RX buffers and RX used ring"
            );
        }
    }
    prop_assert!(stats.peer_errors <= p.avail_idx.len() as u64 * size as u64);
    Ok(stats)
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: Some(Box::new(
        proptest::test_runner::FileFailurePersistence::WithSource("regressions"))), ..ProptestConfig::default() })]

    #[test]
    fn fuzz_copier_survives_hostile_peer_ring(p in peer_ring()) {
        run_case(&p).map(|_| ())?;
    }
}

#[test]
fn fuzz_regression_self_looping_chain_is_dropped_and_counted() {
    let p = PeerRing {
        size_log2: 2,
        descs: vec![
            Desc {
                addr: 8192,
                len: 100,
                flags: VRING_DESC_F_NEXT,
                next: 0,
            },
            Desc {
                addr: 8192,
                len: 100,
                flags: 0,
                next: 0,
            },
            Desc {
                addr: 8192,
                len: 100,
                flags: VRING_DESC_F_WRITE,
                next: 0,
            },
            Desc {
                addr: u64::MAX - 8,
                len: 100,
                flags: 0,
                next: 0,
            },
        ],
        heads: vec![0, 1, 2, 3],
        avail_idx: vec![4],
        scribble: vec![],
    };
    let stats = run_case(&p).unwrap();
    assert_eq!(stats.peer_loop, 1, "{stats:?}");
    assert_eq!(stats.peer_wrong_direction, 1, "{stats:?}");
    assert_eq!(stats.peer_out_of_bounds, 1, "{stats:?}");
    assert_eq!(stats.peer_errors, 3);
}
