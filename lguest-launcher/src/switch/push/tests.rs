//! Unit tests of a push port: the switch as the device of a member's RX ring.

use super::*;
use crate::guest::plan::{Layout, BUF_SIZE};
use crate::memory::GuestMemory;
use crate::virtq::DriverQueue;

/// A member (its memory and the driver side of its RX ring) served by
/// a [`PushRx`], and a source memory holding frames.
struct Member {
    mem: GuestMemory,
    src: GuestMemory,
    layout: Layout,
    rx: DriverQueue,
    push: PushRx,
}

fn member(offloads: u32) -> Member {
    let layout = Layout::plan(64);
    let mem = GuestMemory::create("member", layout.needed).unwrap();
    let src = GuestMemory::create("source", 1 << 16).unwrap();
    let map = GuestMap::identity(mem.region().clone());
    let push = PushRx::new(&map, &layout.rx, offloads, NotifyMode::EventIdx).unwrap();
    Member {
        rx: DriverQueue::new(mem.region().clone(), &layout.rx),
        mem,
        src,
        layout,
        push,
    }
}

impl Member {
    fn post(&mut self, n: u16) {
        for _ in 0..n {
            self.rx
                .add_slot(self.layout.rx_bufs, BUF_SIZE, BUF_SIZE as u32, true)
                .unwrap()
                .unwrap();
        }
        self.rx.publish().unwrap();
    }

    /// A frame of `len` bytes (header `hdr`, then `i * 3 + 1`) at 0 of
    /// the source memory.
    fn frame(&self, len: u32, hdr: [u8; 12]) -> (Vec<u8>, Seg) {
        let mut f: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(3) + 1) as u8).collect();
        f[..12].copy_from_slice(&hdr);
        self.src.region().write("t", 0, &f).unwrap();
        (f, Seg { addr: 0, len })
    }

    fn put(&mut self, s: Seg) -> Result<bool, PushError> {
        let (mem, src) = (self.mem.region().clone(), self.src.region().clone());
        self.push.put(&mem, Frame::Chain(&src, &[s]), s.len)
    }

    /// What the member's guest reads back, in used-ring order.
    fn received(&mut self) -> Vec<(u32, Vec<u8>)> {
        self.push.flush(NotifyMode::EventIdx).unwrap();
        let mut out = Vec::new();
        while let Some((id, len)) = self.rx.pop_used().unwrap() {
            let mut b = vec![0u8; len as usize];
            let at = self.layout.rx_bufs + u64::from(id) * BUF_SIZE;
            self.mem.region().read("t", at, &mut b).unwrap();
            out.push((len, b));
        }
        out
    }
}

#[test]
fn frame_lands_once_in_the_buffer_the_member_posted() {
    let mut m = member(0);
    m.post(2);
    let (sent, s) = m.frame(1500, [0; 12]);
    let (mem, src) = (m.mem.region().clone(), m.src.region().clone());
    assert_eq!(m.push.put_plain(&mem, &src, s, 1500), Some(true));
    // The general path delivers the same way.
    assert!(m.put(s).unwrap());
    let got = m.received();
    assert_eq!(got.len(), 2);
    for (len, bytes) in got {
        assert_eq!(len, 1500);
        assert_eq!(bytes, sent);
    }
}

#[test]
fn no_posted_buffer_is_no_room() {
    let mut m = member(0);
    let (_, s) = m.frame(100, [0; 12]);
    let (mem, src) = (m.mem.region().clone(), m.src.region().clone());
    assert_eq!(m.push.put_plain(&mem, &src, s, 100), Some(false));
    assert!(!m.put(s).unwrap());
    assert!(!m.push.has_room().unwrap());
    m.post(1);
    assert!(m.push.has_room().unwrap());
}

#[test]
fn rx_buffer_outside_the_member_goes_back_unused_and_is_named() {
    let mut m = member(0);
    let end = m.mem.region().len();
    // Straddling the end of the member's memory, then past it.
    for addr in [end - 100, end + 4096] {
        m.rx.add_one(Seg { addr, len: 2048 }, true)
            .unwrap()
            .unwrap();
        m.rx.publish().unwrap();
        let (_, s) = m.frame(1500, [0; 12]);
        let (mem, src) = (m.mem.region().clone(), m.src.region().clone());
        assert_eq!(m.push.put_plain(&mem, &src, s, 1500), None);
        assert!(matches!(
            m.put(s),
            Err(PushError::Chain(ChainError::OutOfBounds { .. }))
        ));
        assert_eq!(m.received(), vec![(0, vec![])], "given back, length 0");
    }
}

#[test]
fn rx_buffer_smaller_than_the_frame_goes_back_unused() {
    let mut m = member(0);
    m.rx.add_slot(m.layout.rx_bufs, BUF_SIZE, 64, true)
        .unwrap()
        .unwrap();
    m.rx.publish().unwrap();
    let (_, s) = m.frame(1500, [0; 12]);
    assert!(matches!(
        m.put(s),
        Err(PushError::Chain(ChainError::BadLength { total: 64 }))
    ));
    assert_eq!(m.received(), vec![(0, vec![])]);
}

#[test]
fn mergeable_member_reads_num_buffers_1() {
    let mut m = member(MRG_RXBUF as u32);
    m.post(1);
    let (sent, s) = m.frame(200, [0; 12]);
    let (mem, src) = (m.mem.region().clone(), m.src.region().clone());
    assert_eq!(
        m.push.put_plain(&mem, &src, s, 200),
        None,
        "num_buffers to write"
    );
    assert!(m.put(s).unwrap());
    let got = m.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1[10..12], [1, 0]);
    assert_eq!(got[0].1[12..], sent[12..]);
}

#[test]
fn invalid_offload_header_is_the_sources_fault_and_keeps_the_buffer() {
    let mut m = member(0);
    m.post(1);
    // Flags no driver sets.
    let (_, s) = m.frame(200, [0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert!(matches!(m.put(s), Err(PushError::Offload(_))));
    assert!(m.received().is_empty(), "the buffer stays posted");
    let (_, s) = m.frame(200, [0; 12]);
    assert!(m.put(s).unwrap());
    assert_eq!(m.received().len(), 1);
}

#[test]
fn next_switch_resumes_from_the_published_used_index() {
    let mut m = member(0);
    m.post(3);
    let (sent, s) = m.frame(300, [0; 12]);
    assert!(m.put(s).unwrap());
    assert!(m.put(s).unwrap());
    assert_eq!(m.received().len(), 2);
    // The switch goes; the next one maps the same member and starts at
    // the used index the last one published (2), not at 0.
    let map = GuestMap::identity(m.mem.region().clone());
    m.push = PushRx::new(&map, &m.layout.rx, 0, NotifyMode::EventIdx).unwrap();
    assert!(m.put(s).unwrap(), "the third posted buffer");
    assert!(!m.put(s).unwrap(), "and no more");
    let got = m.received();
    assert_eq!(got, vec![(300, sent)]);
}
