//! The encoder (`out.rs`) without the writer thread: its buffers are taken
//! from the channel here and read back with pcap-file's reader.

use super::out::{Msg, Out, Spares, BUFFERS};
use crate::memory::GuestMemory;
use crate::stats::Stats;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
use pcap_file::pcapng::blocks::interface_statistics::InterfaceStatisticsOption;
use pcap_file::pcapng::{Block, PcapNgReader, PcapNgWriter};
use pcap_file::DataLink;
use std::borrow::Cow;
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::Duration;

const SNAP: usize = 128;

/// An encoder for one interface, the file header it started from, and
/// the writer's end of its channel.
fn encoder() -> (Out, Vec<u8>, Receiver<Msg>, Spares) {
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: SNAP as u32,
        options: vec![],
    })
    .unwrap();
    let header = std::mem::take(w.get_mut());
    let (tx, rx) = sync_channel(BUFFERS + 2);
    let spares = Spares::default();
    (Out::new(w, 1, spares.clone(), tx), header, rx, spares)
}

/// What the writer would do: append every queued buffer to `file`, and
/// (when `recycle`) hand the buffers back. True once `Finish` came.
fn drain(rx: &Receiver<Msg>, spares: &Spares, file: &mut Vec<u8>, recycle: bool) -> bool {
    let mut finished = false;
    while let Ok(m) = rx.try_recv() {
        match m {
            Msg::Full(buf, n) => {
                file.extend_from_slice(&buf[..n]);
                if recycle {
                    spares.lock().unwrap().push(buf);
                }
            }
            Msg::Finish(_) => finished = true,
        }
    }
    finished
}

/// Every block of a file.
fn blocks(file: &[u8]) -> Vec<Block<'static>> {
    let mut r = PcapNgReader::new(file).unwrap();
    let mut out = Vec::new();
    while let Some(b) = r.next_block() {
        out.push(b.unwrap().into_owned());
    }
    out
}

fn epbs(blocks: &[Block<'static>]) -> Vec<EnhancedPacketBlock<'static>> {
    blocks
        .iter()
        .filter_map(|b| match b {
            Block::EnhancedPacket(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn comments(e: &EnhancedPacketBlock<'_>) -> Vec<String> {
    e.options
        .iter()
        .filter_map(|o| match o {
            EnhancedPacketOption::Comment(c) => Some(c.to_string()),
            _ => None,
        })
        .collect()
}

/// Guest memory holding frames `virtio_net_hdr` first: frame `i` at
/// `2048 * i`, its bytes `(i + j) as u8`.
fn frames(count: usize) -> GuestMemory {
    let m = GuestMemory::create("capture-test", (count * 2048) as u64).unwrap();
    for i in 0..count {
        let mut f = vec![0u8; 12];
        f.extend((0..1514).map(|j| (i + j) as u8));
        m.region().write("t", (i * 2048) as u64, &f).unwrap();
    }
    m
}

#[test]
fn plain_epb_matches_pcap_files_encoding() {
    for len in [0usize, 1, 3, 4, 5, 128] {
        let data: Vec<u8> = (0..len as u8).collect();
        let (mut out, header, rx, spares) = encoder();
        out.block(0, &data, 1514, None, 0);
        out.close(String::new(), Msg::Finish(sync_channel(1).0));
        let mut ours = Vec::new();
        drain(&rx, &spares, &mut ours, true);
        let got = epbs(&blocks(&[header.clone(), ours.clone()].concat()));
        let ts = got[0].timestamp;
        let mut theirs = PcapNgWriter::new(Vec::new()).unwrap();
        theirs
            .write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: SNAP as u32,
                options: vec![],
            })
            .unwrap();
        let start = theirs.get_ref().len();
        theirs
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: ts,
                original_len: 1514,
                data: Cow::Borrowed(&data),
                options: vec![],
            })
            .unwrap();
        let theirs = &theirs.get_ref()[start..];
        assert_eq!(ours[..theirs.len()], *theirs, "len {len}");
    }
}

/// Thousands of frames of every length cross many buffers: each is in
/// the file once, in order, cut to the snaplen with its length kept, and
/// the closing statistics count them.
#[test]
fn frames_cross_buffers_whole_and_in_order() {
    let (mut out, header, rx, spares) = encoder();
    let count = 512;
    let mem = frames(count);
    let mut file = header;
    let mut want = Vec::new();
    for round in 0..40usize {
        for i in 0..count {
            let len = 12 + (i * 7 + round) % 1515;
            let addr = (i * 2048) as u64;
            out.frame(0, mem.region(), addr, 2048, len as u32, SNAP);
            let kept: Vec<u8> = (0..(len - 12).min(SNAP)).map(|j| (i + j) as u8).collect();
            want.push((kept, (len - 12) as u32));
        }
        out.poll_over();
        drain(&rx, &spares, &mut file, true);
    }
    let mut stats = Stats::default();
    out.report(&mut stats);
    assert!(out.close("end".into(), Msg::Finish(sync_channel(1).0)));
    assert!(drain(&rx, &spares, &mut file, true));
    let all = blocks(&file);
    let got = epbs(&all);
    assert_eq!(got.len(), want.len());
    for (n, (e, (kept, orig))) in got.iter().zip(&want).enumerate() {
        assert_eq!(&e.data[..], &kept[..], "frame {n}");
        assert_eq!(e.original_len, *orig, "frame {n}");
        assert!(e.options.is_empty(), "frame {n}");
    }
    assert_eq!(stats.capture_records, want.len() as u64);
    assert_eq!(stats.capture_skipped, 0);
    let Some(Block::InterfaceStatistics(isb)) = all.last() else {
        panic!("the file ends with statistics");
    };
    assert!(isb
        .options
        .contains(&InterfaceStatisticsOption::IsbUsrDeliv(want.len() as u64)));
    assert!(isb
        .options
        .contains(&InterfaceStatisticsOption::IsbOsDrop(0)));
}

/// A writer that takes no buffer: once every buffer is full the records
/// are skipped and counted; the first written after it comes back says
/// how many were skipped, and so does the closing block.
#[test]
fn a_writer_behind_skips_and_the_next_record_says_so() {
    let (mut out, header, rx, spares) = encoder();
    let mem = frames(1);
    let mut file = header;
    let mut stats = Stats::default();
    // 160-byte blocks: more than every buffer holds.
    let per_buffer = super::out::BUF_BYTES / 160;
    let sent = per_buffer * (BUFFERS + 2);
    for _ in 0..sent {
        out.frame(0, mem.region(), 0, 2048, 1514, SNAP);
    }
    out.report(&mut stats);
    assert!(stats.capture_skipped > 0, "{stats:?}");
    assert_eq!(stats.capture_records + stats.capture_skipped, sent as u64);
    // The writer catches up.
    drain(&rx, &spares, &mut file, true);
    out.frame(0, mem.region(), 0, 2048, 1514, SNAP);
    out.frame(0, mem.region(), 0, 2048, 1514, SNAP);
    out.report(&mut stats);
    let skipped = stats.capture_skipped;
    out.close("end".into(), Msg::Finish(sync_channel(1).0));
    drain(&rx, &spares, &mut file, true);
    let all = blocks(&file);
    let got = epbs(&all);
    assert_eq!(got.len() as u64, stats.capture_records);
    let marked: Vec<_> = got
        .iter()
        .filter(|e| {
            e.options
                .contains(&EnhancedPacketOption::DropCount(skipped))
        })
        .collect();
    assert_eq!(marked.len(), 1, "one record carries the skip count");
    assert_eq!(&marked[0].data[..], &got[0].data[..], "with its frame");
    assert!(comments(marked[0])[0].contains(&format!("skipped {skipped} records")));
    assert!(got.last().unwrap().options.is_empty(), "then plain again");
    let Some(Block::InterfaceStatistics(isb)) = all.last() else {
        panic!("the file ends with statistics");
    };
    assert!(isb
        .options
        .contains(&InterfaceStatisticsOption::IsbOsDrop(skipped)));
}

/// A header asking for offloads gets its note; a frame outside guest
/// memory is an empty record with its length; a drop keeps its comment
/// and flags.
#[test]
fn notes_empty_reads_and_drops() {
    let (mut out, header, rx, spares) = encoder();
    let mem = frames(2);
    let mut gso = [0u8; 12];
    gso[0] = 1; // NEEDS_CSUM
    gso[1] = 1; // TCPv4
    gso[4..6].copy_from_slice(&1448u16.to_le_bytes());
    mem.region().write("t", 2048, &gso).unwrap();
    out.frame(0, mem.region(), 2048, 2048, 1514, SNAP);
    out.frame(0, mem.region(), 1 << 40, 2048, 1514, SNAP);
    out.block(0, &[1, 2, 3], 3, Some("drop reason=loop: x".into()), 1);
    out.frame(0, mem.region(), 0, 2048, 1514, SNAP);
    out.close("end".into(), Msg::Finish(sync_channel(1).0));
    let mut file = header;
    drain(&rx, &spares, &mut file, true);
    let got = epbs(&blocks(&file));
    assert_eq!(got.len(), 4);
    assert!(comments(&got[0])[0].starts_with("offload needs_csum"));
    assert!(comments(&got[0])[0].contains("gso=tcpv4 gso_size=1448"));
    assert_eq!(got[0].data.len(), SNAP);
    assert_eq!((got[1].data.len(), got[1].original_len), (0, 1502));
    assert_eq!(comments(&got[2]), ["drop reason=loop: x"]);
    assert!(got[2].options.contains(&EnhancedPacketOption::Flags(1)));
    assert!(got[3].options.is_empty());
    let ts = |e: &EnhancedPacketBlock<'_>| e.timestamp;
    assert!(
        ts(&got[0]) > Duration::ZERO && ts(&got[0]) == ts(&got[3]),
        "one clock read per poll"
    );
}
