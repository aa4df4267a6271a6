use super::build::{gso_hdr, headers, Tcp};
use super::*;
use crate::offload::hdr::{GSO_ECN, GSO_UDP};
use proptest::prelude::*;

fn tcp(v6: bool, flags: u8) -> Tcp {
    Tcp {
        dst_mac: [2, 0, 0, 0, 0, 2],
        src_mac: [2, 0, 0, 0, 0, 1],
        v6,
        id: 0xfffe,
        seq: 0xffff_f000,
        flags,
    }
}

/// A GSO frame (Ethernet onwards) of `payload` bytes and its header.
fn gso_frame(t: &Tcp, payload: usize, mss: u16) -> (Vec<u8>, NetHdr) {
    let mut f = Vec::new();
    let layout = headers(t, payload, &mut f);
    f.extend((0..payload).map(|i| (i * 7 + i / 251) as u8));
    (f, gso_hdr(t, &layout, payload, mss))
}

/// Check one produced segment: plain header, lengths and checksums right;
/// its (seq, flags, ip id, payload).
fn check_segment(frame: &[u8], v6: bool) -> (u32, u8, u16, Vec<u8>) {
    let hdr = NetHdr::parse(frame[..NET_HDR].try_into().unwrap());
    assert_eq!((hdr.flags, hdr.gso_type, hdr.gso_size), (0, 0, 0));
    let f = &frame[NET_HDR..];
    let gso = if v6 { GSO_TCPV6 } else { GSO_TCPV4 };
    let t = tcp_layout(f, gso).unwrap();
    let tcp_len = (f.len() - t.l4) as u32;
    if v6 {
        assert_eq!(be16(f, t.l3 + 4) as usize, f.len() - t.l3 - 40);
    } else {
        assert_eq!(
            be16(f, t.l3 + 2) as usize,
            f.len() - t.l3,
            "IPv4 total length"
        );
        assert!(csum::verifies(&f[t.l3..t.l4], 0), "IPv4 header checksum");
    }
    assert!(
        csum::verifies(&f[t.l4..], pseudo(f, &t, tcp_len)),
        "TCP checksum"
    );
    let seq = u32::from_be_bytes(f[t.l4 + 4..t.l4 + 8].try_into().unwrap());
    let id = if v6 { 0 } else { be16(f, t.l3 + 4) };
    (seq, f[t.l4 + 13], id, f[t.payload..].to_vec())
}

fn segment_and_check(v6: bool, payload: usize, mss: u16, flags: u8) {
    let t = tcp(v6, flags);
    let (f, hdr) = gso_frame(&t, payload, mss);
    // A GSO type even when the payload fits one segment (as a hostile or
    // sloppy peer may send): one segment then.
    let gso = if v6 { GSO_TCPV6 } else { GSO_TCPV4 };
    let hdr = NetHdr {
        gso_type: gso,
        gso_size: mss,
        ..hdr
    };
    let mut out = Frames::default();
    let n = segment(&f, &hdr, &mut out).unwrap();
    assert_eq!(n as usize, out.len());
    assert_eq!(n, segments_needed(payload, mss));
    let mut data = Vec::new();
    for i in 0..out.len() {
        let (seq, fl, id, p) = check_segment(out.get(i), v6);
        assert!(p.len() <= mss as usize);
        assert_eq!(seq, t.seq.wrapping_add(data.len() as u32), "segment {i}");
        if !v6 {
            assert_eq!(id, t.id.wrapping_add(i as u16));
        }
        let last = i + 1 == out.len();
        assert_eq!(
            fl & (TCP_FIN | TCP_PSH),
            if last { flags & (TCP_FIN | TCP_PSH) } else { 0 }
        );
        assert_eq!(fl & TCP_CWR, if i == 0 { flags & TCP_CWR } else { 0 });
        assert_eq!(fl & 0x10, flags & 0x10, "ACK kept");
        data.extend_from_slice(&p);
    }
    assert_eq!(data, f[f.len() - payload..], "payload in order, every byte");
}

#[test]
fn ipv4_gso_frame_becomes_mtu_sized_segments() {
    // 64 KiB at a 1500-byte MTU: 45 segments, the last shorter.
    segment_and_check(false, 65000, 1460, 0x18);
    segment_and_check(false, 1460 * 3, 1460, 0x18 | TCP_FIN);
}

#[test]
fn ipv6_gso_frame_becomes_mtu_sized_segments() {
    segment_and_check(true, 65000, 1440, 0x18);
}

#[test]
fn cwr_stays_on_the_first_segment_only_fin_psh_on_the_last() {
    segment_and_check(false, 5000, 1000, TCP_CWR | TCP_PSH | TCP_FIN | 0x10);
    segment_and_check(true, 5000, 1000, TCP_CWR | TCP_PSH | 0x10);
    let t = tcp(false, TCP_CWR | 0x10);
    let (_, hdr) = gso_frame(&t, 5000, 1000);
    assert_eq!(hdr.gso_type, GSO_TCPV4 | GSO_ECN);
}

#[test]
fn completed_checksum_verifies() {
    for v6 in [false, true] {
        let t = tcp(v6, 0x18);
        let (mut f, hdr) = gso_frame(&t, 999, 1460);
        assert_eq!(hdr.gso_type, 0, "fits one segment: no GSO");
        complete_csum(&mut f, &hdr);
        let l = tcp_layout(&f, if v6 { GSO_TCPV6 } else { GSO_TCPV4 }).unwrap();
        let len = (f.len() - l.l4) as u32;
        assert!(csum::verifies(&f[l.l4..], pseudo(&f, &l, len)));
    }
}

#[test]
fn headers_that_do_not_match_the_gso_type_are_refused() {
    let (f, _) = gso_frame(&tcp(false, 0x10), 3000, 1000);
    assert!(matches!(
        tcp_layout(&f, GSO_TCPV6),
        Err(OffloadError::Headers(_))
    ));
    assert!(matches!(
        tcp_layout(&f, GSO_UDP),
        Err(OffloadError::Headers(_))
    ));
    let mut udp = f.clone();
    udp[14 + 9] = 17;
    assert!(tcp_layout(&udp, GSO_TCPV4).is_err());
    let mut doff = f.clone();
    doff[14 + 20 + 12] = 0xf0; // 60-byte TCP header: fits, as options
    assert!(tcp_layout(&doff, GSO_TCPV4).is_ok());
    doff[14 + 20 + 12] = 0x40; // 16 bytes: less than a TCP header
    assert!(tcp_layout(&doff, GSO_TCPV4).is_err());
    assert!(tcp_layout(&f[..40], GSO_TCPV4).is_err());
}

proptest! {
    #[test]
    fn segments_reassemble_to_the_frame(payload in 0usize..65000, mss in 536u16..9000, v6: bool, flags: u8) {
        segment_and_check(v6, payload, mss, flags);
    }

    #[test]
    fn arbitrary_bytes_never_panic(f in proptest::collection::vec(any::<u8>(), 0..400), h in any::<[u8; NET_HDR]>()) {
        let hdr = NetHdr::parse(&h);
        let mut out = Frames::default();
        if hdr.check(f.len() as u32).is_ok() && hdr.gso_size > 0 {
            if let Ok(n) = segment(&f, &hdr, &mut out) {
                prop_assert_eq!(n as usize, out.len());
            }
        }
        let mut g = f.clone();
        if hdr.check(g.len() as u32).is_ok() {
            complete_csum(&mut g, &hdr);
        }
    }
}
