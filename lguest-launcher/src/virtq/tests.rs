//! Both sides of a ring against each other, and against malformed chains.

use super::*;
use crate::memory::GuestMap;
use crate::memory::GuestMemory;
use std::sync::atomic::Ordering;
use transport::RingInfo;

fn ring(size: u32) -> (GuestMemory, RingInfo) {
    let m = GuestMemory::create("ring-test", 1 << 20).unwrap();
    let info = RingInfo {
        desc: 0,
        avail: 16 * size as u64,
        used: 16 * size as u64 + 4096,
        size,
    };
    (m, info)
}

#[test]
fn need_event_follows_spec_including_wrap() {
    assert!(vring_need_event(0, 1, 0));
    assert!(!vring_need_event(1, 1, 0));
    assert!(vring_need_event(5, 10, 0));
    assert!(!vring_need_event(10, 10, 0));
    // 16-bit wrap: old = 65534, new = 2 covers 65534, 65535, 0, 1.
    assert!(vring_need_event(65535, 2, 65534));
    assert!(vring_need_event(0, 2, 65534));
    assert!(vring_need_event(1, 2, 65534));
    assert!(!vring_need_event(2, 2, 65534));
    assert!(!vring_need_event(65533, 2, 65534));
    // Nothing published: never.
    assert!(!vring_need_event(7, 7, 7));
}

#[test]
fn driver_and_device_exchange_chains_with_wrapping_indexes() {
    let (m, info) = ring(4);
    let mut drv = DriverQueue::new(m.region().clone(), &info);
    let mut dev = DeviceQueue::new(&GuestMap::identity(m.region().clone()), &info).unwrap();
    let mut segs = Vec::new();
    // 70_000 round trips wrap both 16-bit indexes.
    for i in 0..70_000u32 {
        let head = drv
            .add_one(
                Seg {
                    addr: 8192 + (i % 4) as u64 * 64,
                    len: 60,
                },
                false,
            )
            .unwrap()
            .unwrap();
        drv.publish().unwrap();
        assert_eq!(dev.pending().unwrap(), 1);
        let h = dev.peek_head().unwrap();
        assert_eq!(h, head);
        assert_eq!(dev.read_chain(h, false, &mut segs).unwrap(), 60);
        dev.advance();
        dev.add_used(h, 0).unwrap();
        dev.publish_used().unwrap();
        assert_eq!(drv.pop_used().unwrap(), Some((head, 0)));
        assert_eq!(drv.pop_used().unwrap(), None);
    }
    assert_eq!(drv.num_free(), 4);
}

#[test]
fn full_ring_refuses_more_and_empty_ring_has_nothing() {
    let (m, info) = ring(4);
    let mut drv = DriverQueue::new(m.region().clone(), &info);
    let dev = DeviceQueue::new(&GuestMap::identity(m.region().clone()), &info).unwrap();
    assert_eq!(dev.pending().unwrap(), 0);
    for _ in 0..4 {
        assert!(drv
            .add_one(Seg { addr: 8192, len: 1 }, false)
            .unwrap()
            .is_some());
    }
    assert_eq!(
        drv.add_one(Seg { addr: 8192, len: 1 }, false).unwrap(),
        None
    );
    drv.publish().unwrap();
    assert_eq!(dev.pending().unwrap(), 4);
}

#[test]
fn chains_of_several_descriptors_are_walked_in_order() {
    let (m, info) = ring(8);
    let mut drv = DriverQueue::new(m.region().clone(), &info);
    let mut dev = DeviceQueue::new(&GuestMap::identity(m.region().clone()), &info).unwrap();
    let bufs = [
        Seg {
            addr: 9000,
            len: 12,
        },
        Seg {
            addr: 10000,
            len: 100,
        },
        Seg {
            addr: 20000,
            len: 7,
        },
    ];
    let head = drv.add(&bufs, true).unwrap().unwrap();
    drv.publish().unwrap();
    let mut segs = Vec::new();
    assert_eq!(dev.read_chain(head, true, &mut segs).unwrap(), 119);
    assert_eq!(segs, bufs);
    // Reading it as a TX (device-readable) chain is a direction error.
    assert!(matches!(
        dev.read_chain(head, false, &mut segs),
        Err(ChainError::WrongDirection { .. })
    ));
}

#[test]
fn rejects_descriptor_loop_and_bad_index_and_out_of_bounds() {
    let (m, info) = ring(4);
    let r = m.region();
    let mut dev = DeviceQueue::new(&GuestMap::identity(r.clone()), &info).unwrap();
    let desc = |i: u16, addr: u64, len: u32, flags: u16, next: u16| {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        r.write("t", 16 * i as u64, &d).unwrap();
    };
    let mut segs = Vec::new();
    desc(0, 8192, 10, VRING_DESC_F_NEXT, 1);
    desc(1, 8192, 10, VRING_DESC_F_NEXT, 0);
    assert_eq!(
        dev.read_chain(0, false, &mut segs),
        Err(ChainError::Loop { size: 4 })
    );
    desc(1, 8192, 10, VRING_DESC_F_NEXT, 9);
    assert_eq!(
        dev.read_chain(0, false, &mut segs),
        Err(ChainError::BadIndex { index: 9, size: 4 })
    );
    assert!(matches!(
        dev.read_chain(4, false, &mut segs),
        Err(ChainError::BadIndex { .. })
    ));
    desc(2, u64::MAX - 4, 10, 0, 0);
    assert!(matches!(
        dev.read_chain(2, false, &mut segs),
        Err(ChainError::OutOfBounds { .. })
    ));
    desc(3, 8192, 10, VRING_DESC_F_INDIRECT, 0);
    assert!(matches!(
        dev.read_chain(3, false, &mut segs),
        Err(ChainError::Indirect { .. })
    ));
}

/// The ring's fixed parts are checked once, when the device side takes
/// the ring (its per-packet accessors rely on it): a size that is not a
/// power of two, a part outside memory or one misaligned is refused there.
#[test]
fn hostile_ring_address_or_size_is_refused_at_setup() {
    let (m, good) = ring(256);
    let map = GuestMap::identity(m.region().clone());
    let len = m.region().len();
    assert!(DeviceQueue::new(&map, &good).is_ok());
    for size in [0, 3, 100, 65536, u32::MAX] {
        let info = RingInfo { size, ..good };
        assert!(
            matches!(
                DeviceQueue::new(&map, &info),
                Err(RingError::BadSize { .. })
            ),
            "size {size}"
        );
    }
    let bad = [
        (
            "desc past the end",
            RingInfo {
                desc: len - 16,
                ..good
            },
        ),
        (
            "desc wraps",
            RingInfo {
                desc: u64::MAX - 8,
                ..good
            },
        ),
        (
            "avail past the end",
            RingInfo {
                avail: len - 6,
                ..good
            },
        ),
        (
            "avail misaligned",
            RingInfo {
                avail: good.avail + 1,
                ..good
            },
        ),
        (
            "used past the end",
            RingInfo {
                used: len - 8 * 256,
                ..good
            },
        ),
        (
            "used misaligned",
            RingInfo {
                used: good.used + 2,
                ..good
            },
        ),
    ];
    for (what, info) in bad {
        assert!(
            matches!(DeviceQueue::new(&map, &info), Err(RingError::Memory(_))),
            "{what}"
        );
    }
}

#[test]
fn avail_index_jump_is_a_ring_error() {
    let (m, info) = ring(4);
    let dev = DeviceQueue::new(&GuestMap::identity(m.region().clone()), &info).unwrap();
    m.region()
        .store_u16("t", info.avail + 2, 5, Ordering::Relaxed)
        .unwrap();
    assert!(matches!(
        dev.pending(),
        Err(RingError::AvailJump { to: 5, .. })
    ));
}

#[test]
fn used_entry_for_descriptor_not_in_flight_is_rejected() {
    let (m, info) = ring(4);
    let mut drv = DriverQueue::new(m.region().clone(), &info);
    let mut dev = DeviceQueue::new(&GuestMap::identity(m.region().clone()), &info).unwrap();
    drv.add_one(Seg { addr: 8192, len: 1 }, false).unwrap();
    drv.publish().unwrap();
    dev.add_used(3, 0).unwrap(); // 3 was never posted
    dev.publish_used().unwrap();
    assert!(matches!(
        drv.pop_used(),
        Err(RingError::BadUsedId { id: 3 })
    ));
}

#[test]
fn event_idx_suppresses_kicks_until_device_rearms() {
    let (m, info) = ring(8);
    let mut drv = DriverQueue::new(m.region().clone(), &info);
    let mut dev = DeviceQueue::new(&GuestMap::identity(m.region().clone()), &info).unwrap();
    dev.set_notifications(NotifyMode::EventIdx, true).unwrap(); // avail_event = 0
    drv.add_one(Seg { addr: 8192, len: 1 }, false).unwrap();
    let (o, n) = drv.publish().unwrap();
    assert!(drv.kick_needed(NotifyMode::EventIdx, o, n).unwrap());
    drv.add_one(Seg { addr: 8192, len: 1 }, false).unwrap();
    let (o, n) = drv.publish().unwrap();
    assert!(
        !drv.kick_needed(NotifyMode::EventIdx, o, n).unwrap(),
        "device has not re-armed"
    );
    dev.advance();
    dev.advance();
    dev.set_notifications(NotifyMode::EventIdx, true).unwrap(); // avail_event = 2
    drv.add_one(Seg { addr: 8192, len: 1 }, false).unwrap();
    let (o, n) = drv.publish().unwrap();
    assert!(drv.kick_needed(NotifyMode::EventIdx, o, n).unwrap());
}

#[test]
fn flags_mode_suppresses_while_device_is_busy() {
    let (m, info) = ring(8);
    let mut drv = DriverQueue::new(m.region().clone(), &info);
    let dev = DeviceQueue::new(&GuestMap::identity(m.region().clone()), &info).unwrap();
    dev.set_notifications(NotifyMode::Flags, false).unwrap();
    drv.add_one(Seg { addr: 8192, len: 1 }, false).unwrap();
    let (o, n) = drv.publish().unwrap();
    assert!(!drv.kick_needed(NotifyMode::Flags, o, n).unwrap());
    dev.set_notifications(NotifyMode::Flags, true).unwrap();
    assert!(drv.kick_needed(NotifyMode::Flags, o, n).unwrap());
}

/// A driver-side ring that does not lie wholly inside memory (never one of
/// our layouts) is served with a bounds check per access: an entry past
/// the end is an error, not an access outside the mapping.
#[test]
fn driver_ring_partly_outside_memory_is_checked_per_access() {
    let (m, good) = ring(4);
    let r = m.region();
    let len = r.len();
    // Used index and entry 0 inside, entry 1 past the end.
    let info = RingInfo {
        used: len - 12,
        ..good
    };
    let mut drv = DriverQueue::new(r.clone(), &info);
    drv.add_one(Seg { addr: 8192, len: 1 }, true).unwrap();
    drv.add_one(Seg { addr: 8192, len: 1 }, true).unwrap();
    drv.publish().unwrap();
    r.store_u32_pair("t", len - 8, (0, 1)).unwrap(); // the first posted is 0
    r.store_u16("t", len - 10, 2, Ordering::Release).unwrap();
    let mut out = Vec::new();
    assert!(matches!(
        drv.recycle_used(8, &mut out),
        Err(RingError::Memory(_))
    ));
    assert_eq!(out, [(0, 1)], "the entry inside memory was taken");
}
