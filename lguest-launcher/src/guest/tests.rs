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

/// Play our own copier on a sink's RX ring: write each frame (after a
/// zeroed `virtio_net_hdr`) into the next posted buffer and publish.
fn deliver(mem: &GuestMemory, layout: &Layout, frames: &[Vec<u8>]) {
    use crate::memory::GuestMap;
    use crate::virtq::DeviceQueue;
    let map = GuestMap::identity(mem.region().clone());
    let mut dev = DeviceQueue::new(&map, &layout.rx).unwrap();
    let (avail, used) = RX_DEVICE.with(|s| s.get());
    dev = dev.with_state(avail, used);
    for f in frames {
        assert!(dev.pending().unwrap() > 0, "no RX buffer posted");
        let head = dev.peek_head().unwrap();
        let seg = dev.walk_one(head, true).unwrap();
        let mut buf = vec![0u8; NET_HDR_LEN as usize];
        buf.extend_from_slice(f);
        mem.region().write("test frame", seg.addr, &buf).unwrap();
        dev.advance();
        dev.add_used(head, buf.len() as u32).unwrap();
    }
    dev.publish_used().unwrap();
    RX_DEVICE.with(|s| s.set(dev.state()));
}

thread_local! {
    /// The test device's RX ring position between `deliver` calls.
    static RX_DEVICE: std::cell::Cell<(u16, u16)> = const { std::cell::Cell::new((0, 0)) };
}

/// A stamped data frame `seq` of `size` bytes to `dst`.
fn stamped(dst: Mac, seq: u64, size: u32) -> Vec<u8> {
    let mut f = eth_header(dst, [2, 0, 0, 0, 0, 9], ETH_P_SHARENET).to_vec();
    f.extend_from_slice(&stamp(seq, size));
    f.resize(ETH_HDR + size as usize, 0x5a);
    f
}

#[test]
fn a_stamped_sink_counts_bursts_and_odd_frames_as_frame_by_frame() {
    RX_DEVICE.with(|s| s.set((0, 0)));
    let (mem, mut g) = sized(Workload::Sink, 1000, 64);
    let layout = Layout::plan(256);
    let mut stats = Stats::default();
    g.link_up(7, 0);
    let us = [2, 0, 0, 0, 0, 1];
    // In order (the first goes the general way, the rest in a burst).
    let mut frames: Vec<Vec<u8>> = (0..10).map(|s| stamped(BROADCAST, s, 64)).collect();
    frames.push(stamped(BROADCAST, 12, 64)); // a gap of two
    frames.extend((13..20).map(|s| stamped(us, s, 64))); // unicast to us
    frames.push(stamped(BROADCAST, 5, 64)); // a duplicate
    let mut bad = stamped(BROADCAST, 20, 64);
    bad[ETH_HDR + 12] ^= 1; // its checksum
    frames.push(bad);
    frames.push(stamped([2, 0, 0, 0, 0, 3], 20, 64)); // not for us
    let mut foreign = stamped(BROADCAST, 20, 64);
    foreign[12] = 0x08;
    foreign[13] = 0x06; // ARP: foreign
    frames.push(foreign);
    frames.push(stamped(BROADCAST, 20, 100)); // another length, in order
    frames.extend((21..30).map(|s| stamped(BROADCAST, s, 64)));
    for chunk in frames.chunks(16) {
        deliver(&mem, &layout, chunk);
        g.step(&mut stats).unwrap();
    }
    assert_eq!(stats.packets_received, 10 + 8 + 1 + 10);
    assert_eq!(stats.bytes_received, 28 * 64 + 100);
    assert_eq!(stats.out_of_order, 2, "the gap and the duplicate");
    assert_eq!(
        (stats.corrupted, stats.not_for_us, stats.foreign),
        (1, 1, 1)
    );
    let s = &g.senders()[0];
    assert_eq!((s.pid, s.first_seq, s.last_seq), (7, 0, 29));
    assert_eq!((s.received, s.gaps, s.duplicates), (29, 2, 1));
    // Every buffer went back: still one burst posted.
    assert_eq!(g.rx.in_flight(), RX_POSTED);
}

#[test]
fn a_stamped_sink_takes_exactly_its_count_and_splits_senders_where_told() {
    RX_DEVICE.with(|s| s.set((0, 0)));
    let (mem, mut g) = sized(Workload::Sink, 25, 64);
    let layout = Layout::plan(256);
    let mut stats = Stats::default();
    g.link_up(7, 0);
    // The next peer's frames start at used index 12: a new sequence.
    g.link_up(8, 12);
    let frames: Vec<Vec<u8>> = (0..12)
        .map(|s| stamped(BROADCAST, 100 + s, 64))
        .chain((0..20).map(|s| stamped(BROADCAST, s, 64)))
        .collect();
    deliver(&mem, &layout, &frames);
    g.step(&mut stats).unwrap();
    assert_eq!(stats.packets_received, 25, "a sink takes exactly COUNT");
    assert_eq!(stats.out_of_order, 0);
    let s = g.senders();
    assert_eq!(s.len(), 2);
    assert_eq!(
        (s[0].pid, s[0].first_seq, s[0].last_seq, s[0].received),
        (7, 100, 111, 12)
    );
    assert_eq!(
        (s[1].pid, s[1].first_seq, s[1].last_seq, s[1].received),
        (8, 0, 12, 13)
    );
    assert!(g.done());
}

/// Play the device on our TX ring: take every chain sent, return each as
/// (its Ethernet header, the 16 bytes after it), and complete them all.
fn consume_tx(mem: &GuestMemory, layout: &Layout, at: &mut (u16, u16)) -> Vec<(Vec<u8>, Vec<u8>)> {
    use crate::memory::GuestMap;
    use crate::virtq::DeviceQueue;
    let map = GuestMap::identity(mem.region().clone());
    let mut dev = DeviceQueue::new(&map, &layout.tx)
        .unwrap()
        .with_state(at.0, at.1);
    let mut out = Vec::new();
    while dev.pending().unwrap() > 0 {
        let head = dev.peek_head().unwrap();
        let seg = dev.walk_one(head, false).unwrap();
        let mut f = vec![0u8; NET_HDR_LEN as usize + ETH_HDR + FRAME_HDR];
        mem.region().read("test tx", seg.addr, &mut f).unwrap();
        let f = f.split_off(NET_HDR_LEN as usize);
        out.push((f[..ETH_HDR].to_vec(), f[ETH_HDR..].to_vec()));
        dev.advance();
        dev.add_used(head, 0).unwrap();
    }
    dev.publish_used().unwrap();
    *at = dev.state();
    out
}

#[test]
fn a_stamped_stream_on_a_switch_takes_the_burst_path_once_its_hello_is_back() {
    let (mem, mut g) = sized(Workload::Stream, 1000, 64);
    let layout = Layout::plan(256);
    let mut stats = Stats::default();
    let mut dev = (0, 0);
    g.hello();
    g.step(&mut stats).unwrap();
    assert!(
        !g.tx_only_stamps,
        "the hello took a slot: every frame is written whole"
    );
    let first = consume_tx(&mem, &layout, &mut dev);
    let ours = eth_header(BROADCAST, [2, 0, 0, 0, 0, 1], ETH_P_SHARENET).to_vec();
    let hello = eth_header(BROADCAST, [2, 0, 0, 0, 0, 1], ETH_P_HELLO).to_vec();
    assert_eq!(first[0].0, hello, "the hello goes first");
    let mut seq = 0;
    for (eth, stamp_bytes) in &first[1..] {
        assert_eq!(eth, &ours);
        assert_eq!(stamp_bytes[..], stamp(seq, 64)[..], "frame {seq}");
        seq += 1;
    }
    // The hello is back: its slot holds a data frame's header again, and
    // the stream sends stamps a burst at a time; every frame, the one in
    // the hello's old slot too, carries our header and its stamp.
    g.step(&mut stats).unwrap();
    assert!(g.tx_only_stamps, "back on the burst path");
    for _ in 0..2 {
        let frames = consume_tx(&mem, &layout, &mut dev);
        assert!(!frames.is_empty());
        for (eth, stamp_bytes) in &frames {
            assert_eq!(eth, &ours, "frame {seq}");
            assert_eq!(stamp_bytes[..], stamp(seq, 64)[..], "frame {seq}");
            seq += 1;
        }
        g.step(&mut stats).unwrap();
    }
    assert!(seq > 256 + 255, "two ring cycles after the hello's: {seq}");
}
