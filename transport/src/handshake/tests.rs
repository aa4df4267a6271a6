//! The handshake's wire format and validation, tested.

use super::*;

fn sample() -> Handshake {
    let tx = RingInfo {
        desc: 0,
        avail: 4096,
        used: 8192,
        size: 256,
    };
    let rx = RingInfo {
        desc: 12288,
        avail: 16384,
        used: 20480,
        size: 256,
    };
    Handshake::new(42, F_EVENT_IDX, 1 << 20, 7, tx, rx)
        .with_generation(3)
        .with_mtu(9000)
        .with_offloads(0x8383)
}

#[test]
fn mtu_and_offloads_travel_in_the_old_reserved_words() {
    let b = sample().encode();
    // tx ring: desc, avail, used at 40.., size at 64, offloads at 68.
    assert_eq!(&b[68..72], &0x8383u32.to_le_bytes());
    // nregions at 104, mtu at 108.
    assert_eq!(&b[108..112], &9000u32.to_le_bytes());
    // An older build wrote zeros there: no MTU and no offloads stated.
    let mut old = b;
    old[68..72].fill(0);
    old[108..112].fill(0);
    let h = Handshake::decode(&old).unwrap();
    assert_eq!((h.mtu, h.offloads), (0, 0));
}

#[test]
fn handshake_round_trips_through_wire_format() {
    let h = sample();
    let back = Handshake::decode(&h.encode()).unwrap();
    assert_eq!(h, back);
    back.validate().unwrap();
}

#[test]
fn wire_format_is_little_endian() {
    let b = sample().encode();
    assert_eq!(&b[0..8], b"SHARENET");
    assert_eq!(&b[12..16], &42u32.to_le_bytes());
}

#[test]
fn rejects_version_mismatch() {
    let mut b = sample().encode();
    b[8..12].copy_from_slice(&99u32.to_le_bytes());
    let e = Handshake::decode(&b).unwrap_err();
    assert!(
        matches!(
            e,
            Error::VersionMismatch {
                got: 99,
                expected: VERSION
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("version 99"));
}

#[test]
fn rejects_bad_magic_and_short_input() {
    let mut b = sample().encode();
    b[0] = b'X';
    assert!(matches!(Handshake::decode(&b), Err(Error::BadMagic { .. })));
    assert!(matches!(
        Handshake::decode(&b[..10]),
        Err(Error::ShortHandshake { got: 10, .. })
    ));
}

#[test]
fn rejects_queue_size_not_power_of_two() {
    let mut h = sample();
    h.tx.size = 3;
    let e = h.validate().unwrap_err().to_string();
    assert!(e.contains("tx.size = 3"), "{e}");
}

#[test]
fn rejects_ring_outside_memory_with_wraparound() {
    let mut h = sample();
    h.rx.used = u64::MAX - 8;
    let e = h.validate().unwrap_err().to_string();
    assert!(e.contains("rx.used"), "{e}");
    let mut h = sample();
    h.tx.desc = (1 << 20) - 16;
    assert!(h.validate().is_err());
}

#[test]
fn regions_round_trip_and_translate() {
    let h = sample().with_regions(&[
        MemRegion {
            gpa: 0,
            size: 0xa0000,
            offset: 0,
        },
        MemRegion {
            gpa: 0xc0000,
            size: 0x40000,
            offset: 0xc0000,
        },
    ]);
    let back = Handshake::decode(&h.encode()).unwrap();
    assert_eq!(back.regions(), h.regions());
    assert_eq!(back.translate(0xc0010, 16), Some(0xc0010));
    assert_eq!(back.translate(0x9fff0, 32), None, "spans the hole");
    assert_eq!(back.translate(u64::MAX - 4, 8), None);
    back.validate().unwrap();
}

#[test]
fn rejects_region_outside_memory() {
    let h = sample().with_regions(&[MemRegion {
        gpa: 0,
        size: 2 << 20,
        offset: 0,
    }]);
    assert!(h.validate().unwrap_err().to_string().contains("regions"));
    let h = sample().with_regions(&[]);
    assert!(h.validate().unwrap_err().to_string().contains("nregions"));
}

#[test]
fn rejects_misaligned_ring() {
    let mut h = sample();
    h.tx.used = 8193;
    assert!(h.validate().unwrap_err().to_string().contains("aligned"));
}

#[test]
fn rejects_ring_aligned_in_guest_but_not_in_the_memory_fd() {
    // Every ring address is aligned, but the one region starts at file
    // offset 1: each ring lands one byte off in the fd we map.
    let h = sample().with_regions(&[MemRegion {
        gpa: 0,
        size: (1 << 20) - 4096,
        offset: 1,
    }]);
    let err = h.validate().unwrap_err().to_string();
    assert!(err.contains("lands at offset 0x1"), "{err}");
    assert!(err.contains("16-byte aligned"), "{err}");
}

#[test]
fn translate_survives_a_region_that_wraps_the_address_space() {
    let wraps = [MemRegion {
        gpa: u64::MAX - 8,
        size: 64,
        offset: 0,
    }];
    // `gpa + size` overflows: no match, and no overflow panic.
    assert_eq!(translate(&wraps, u64::MAX - 4, 2), None);
    assert_eq!(translate(&wraps, 0, 2), None);
}
