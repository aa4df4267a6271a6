//! The synthetic guest's buffer counts: RX buffers posted, TX chains in flight.

use super::*;
use crate::memory::GuestMemory;

fn guest(workload: Workload, count: u64) -> (GuestMemory, Guest) {
    sized(workload, count, 1500)
}

fn sized(workload: Workload, count: u64, size: u32) -> (GuestMemory, Guest) {
    let layout = Layout::plan(256);
    let mem = GuestMemory::create("guest-test", layout.needed).unwrap();
    let work = Work {
        workload,
        payload: Payload::Stamp,
        count,
        size,
        rx_delay: Duration::ZERO,
        rate: None,
        mac: [2, 0, 0, 0, 0, 1],
        dst: BROADCAST,
        gso_mss: None,
        offloads: 0,
    };
    let g = Guest::new(mem.region().clone(), layout, NotifyMode::EventIdx, work).unwrap();
    (mem, g)
}

#[test]
fn rx_posts_one_burst_then_the_whole_ring_when_asked() {
    let (_mem, mut g) = guest(Workload::Sink, 10);
    assert_eq!(g.rx.in_flight(), RX_POSTED);
    assert_eq!(g.rx.num_free(), 256 - usize::from(RX_POSTED));
    assert!(g.post_all_rx().unwrap());
    assert_eq!(g.rx.in_flight(), 256);
    assert_eq!(g.rx.num_free(), 0);
    // Nothing left to post.
    assert!(!g.post_all_rx().unwrap());
}

#[test]
fn a_stream_keeps_at_most_its_cap_of_tx_chains_in_flight() {
    let mut stats = Stats::default();
    let (_mem, g) = guest(Workload::Stream, 1000);
    let mut g = g.with_tx_in_flight(8);
    for _ in 0..3 {
        g.step(&mut stats).unwrap();
        assert_eq!(g.tx.in_flight(), 8);
    }
    assert_eq!(stats.packets_sent, 8);
    // Without a cap, the whole ring.
    let (_mem, mut g) = guest(Workload::Stream, 1000);
    g.step(&mut stats).unwrap();
    assert_eq!(g.tx.in_flight(), 256);
}

#[test]
fn a_spinning_stream_caps_its_tx_bytes_in_flight_not_below_two_bursts() {
    let mut stats = Stats::default();
    // 1500 B frames: 128 in flight (192 KiB), two of the copier's bursts.
    let (_mem, g) = sized(Workload::Stream, 1000, 1500);
    let mut g = g.spinning(true);
    g.step(&mut stats).unwrap();
    assert_eq!(g.tx.in_flight(), 2 * crate::copier::POLL_BURST);
    // 64 B frames: the whole ring is less than the byte cap.
    let (_mem, g) = sized(Workload::Stream, 1000, 64);
    let mut g = g.spinning(true);
    g.step(&mut stats).unwrap();
    assert_eq!(g.tx.in_flight(), 256);
    // Not spinning: no cap.
    let (_mem, g) = sized(Workload::Stream, 1000, 1500);
    let mut g = g.spinning(false);
    g.step(&mut stats).unwrap();
    assert_eq!(g.tx.in_flight(), 256);
}
