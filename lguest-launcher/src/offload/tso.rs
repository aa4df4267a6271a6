//! Software fallbacks: complete a partial checksum, cut a TCP GSO frame
//! into MTU-sized segments.
//!
//! Segmenting follows Linux's `tcp_gso_segment`: every segment gets a copy
//! of the Ethernet, IP and TCP headers; the IPv4 total length (IPv6
//! payload length), the IPv4 id (+1 per segment) and header checksum, the
//! TCP sequence number (+ payload bytes before it) and checksum are
//! rewritten; FIN and PSH stay on the last segment only, CWR (ECN) on the
//! first only. Checksums are complete: the segments carry no offload.

use super::csum;
use super::hdr::{NetHdr, OffloadError, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, NET_HDR};

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_VLAN: u16 = 0x8100;
const IPPROTO_TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Frames produced by a fallback, each with its own `virtio_net_hdr`, one
/// after another in `bytes`. Reused across frames (no allocation once
/// grown).
#[derive(Debug, Default)]
pub struct Frames {
    /// The frames' bytes.
    pub bytes: Vec<u8>,
    /// `(start, len)` of each frame in `bytes`.
    pub frames: Vec<(usize, usize)>,
}

impl Frames {
    /// Forget the last frames, keep the memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.frames.clear();
    }

    /// Frame `i`'s bytes (its header included).
    pub fn get(&self, i: usize) -> &[u8] {
        let (at, len) = self.frames[i];
        &self.bytes[at..at + len]
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// None held.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Set every frame's `num_buffers` (the last word of its header).
    pub fn set_num_buffers(&mut self, n: u16) {
        for &(at, _) in &self.frames {
            self.bytes[at + NET_HDR - 2..at + NET_HDR].copy_from_slice(&n.to_le_bytes());
        }
    }
}

/// Where a TCP frame's headers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpLayout {
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the TCP header.
    pub l4: usize,
    /// Offset of the payload (all headers' length).
    pub payload: usize,
    /// IPv6 (else IPv4).
    pub v6: bool,
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

/// Find the IP and TCP headers of Ethernet frame `f` (one VLAN tag at
/// most; IPv6 without extension headers), refusing what does not match
/// GSO type `gso` or does not fit.
pub fn tcp_layout(f: &[u8], gso: u8) -> Result<TcpLayout, OffloadError> {
    let bad = |why| Err(OffloadError::Headers(why));
    if f.len() < 14 {
        return bad("shorter than an Ethernet header");
    }
    let (mut l3, mut ethertype) = (14, be16(f, 12));
    if ethertype == ETH_P_VLAN {
        if f.len() < 18 {
            return bad("VLAN tag cut short");
        }
        (l3, ethertype) = (18, be16(f, 16));
    }
    let (l4, v6) = match (ethertype, gso) {
        (ETH_P_IPV4, GSO_TCPV4) => {
            if f.len() < l3 + 20 || f[l3] >> 4 != 4 {
                return bad("no IPv4 header");
            }
            let ihl = (f[l3] & 0x0f) as usize * 4;
            if ihl < 20 || f.len() < l3 + ihl {
                return bad("IPv4 header length");
            }
            if f[l3 + 9] != IPPROTO_TCP {
                return bad("IPv4 protocol is not TCP");
            }
            if be16(f, l3 + 6) & 0x3fff != 0 {
                return bad("IPv4 fragment");
            }
            (l3 + ihl, false)
        }
        (ETH_P_IPV6, GSO_TCPV6) => {
            if f.len() < l3 + 40 || f[l3] >> 4 != 6 {
                return bad("no IPv6 header");
            }
            if f[l3 + 6] != IPPROTO_TCP {
                return bad("IPv6 next header is not TCP (extension headers are not segmented)");
            }
            (l3 + 40, true)
        }
        _ => return bad("EtherType does not match the GSO type"),
    };
    if f.len() < l4 + 20 {
        return bad("no TCP header");
    }
    let doff = (f[l4 + 12] >> 4) as usize * 4;
    if doff < 20 || f.len() < l4 + doff {
        return bad("TCP data offset");
    }
    Ok(TcpLayout {
        l3,
        l4,
        payload: l4 + doff,
        v6,
    })
}

/// The pseudo-header sum of the TCP segment of `len` bytes in frame `f`.
pub fn pseudo(f: &[u8], t: &TcpLayout, len: u32) -> u64 {
    if t.v6 {
        csum::pseudo_v6(
            &f[t.l3 + 8..t.l3 + 24],
            &f[t.l3 + 24..t.l3 + 40],
            IPPROTO_TCP,
            len,
        )
    } else {
        csum::pseudo_v4(
            &f[t.l3 + 12..t.l3 + 16],
            &f[t.l3 + 16..t.l3 + 20],
            IPPROTO_TCP,
            len,
        )
    }
}

/// Segments a TCP GSO frame of `payload` bytes at `mss` needs.
pub fn segments_needed(payload: usize, mss: u16) -> u32 {
    (payload.div_ceil(mss.max(1) as usize).max(1)) as u32
}

/// Cut the TCP GSO Ethernet frame `f` (after its `virtio_net_hdr` `hdr`)
/// into segments of `hdr.gso_size` payload bytes at most, appended to
/// `out` with plain headers (keeping `num_buffers`). Returns how many.
pub fn segment(f: &[u8], hdr: &NetHdr, out: &mut Frames) -> Result<u32, OffloadError> {
    let t = tcp_layout(f, hdr.gso())?;
    let mss = hdr.gso_size.max(1) as usize;
    let data = &f[t.payload..];
    let n = segments_needed(data.len(), hdr.gso_size);
    let plain = NetHdr {
        num_buffers: hdr.num_buffers,
        ..NetHdr::default()
    }
    .encode();
    let seq0 = u32::from_be_bytes([f[t.l4 + 4], f[t.l4 + 5], f[t.l4 + 6], f[t.l4 + 7]]);
    let id0 = be16(f, t.l3 + 4);
    let flags0 = f[t.l4 + 13];
    let tcp_hl = t.payload - t.l4;
    for i in 0..n as usize {
        let chunk = &data[(i * mss).min(data.len())..((i + 1) * mss).min(data.len())];
        let at = out.bytes.len();
        out.bytes.extend_from_slice(&plain);
        let s = at + NET_HDR; // the segment's Ethernet frame
        out.bytes.extend_from_slice(&f[..t.payload]);
        out.bytes.extend_from_slice(chunk);
        let seg = &mut out.bytes[s..];
        let tcp_len = (tcp_hl + chunk.len()) as u32;
        if t.v6 {
            let pl = (t.payload - t.l3 - 40 + chunk.len()) as u16;
            seg[t.l3 + 4..t.l3 + 6].copy_from_slice(&pl.to_be_bytes());
        } else {
            let tot = (t.payload - t.l3 + chunk.len()) as u16;
            seg[t.l3 + 2..t.l3 + 4].copy_from_slice(&tot.to_be_bytes());
            let id = id0.wrapping_add(i as u16);
            seg[t.l3 + 4..t.l3 + 6].copy_from_slice(&id.to_be_bytes());
            seg[t.l3 + 10..t.l3 + 12].fill(0);
            let c = !csum::fold(csum::partial(&seg[t.l3..t.l4], 0));
            seg[t.l3 + 10..t.l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        let seq = seq0.wrapping_add((i * mss) as u32);
        seg[t.l4 + 4..t.l4 + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = flags0;
        if i + 1 < n as usize {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            flags &= !TCP_CWR;
        }
        seg[t.l4 + 13] = flags;
        seg[t.l4 + 16..t.l4 + 18].fill(0);
        let sum = csum::partial(&seg[t.l4..], pseudo(seg, &t, tcp_len));
        seg[t.l4 + 16..t.l4 + 18].copy_from_slice(&csum::finish(sum).to_be_bytes());
        out.frames.push((at, NET_HDR + t.payload + chunk.len()));
    }
    Ok(n)
}

/// Complete the partial checksum of frame `f` (after its header `hdr`,
/// which asked for it and was checked) in place: sum from `csum_start` to
/// the end, store at `csum_start + csum_offset`. The caller clears
/// `NEEDS_CSUM`.
pub fn complete_csum(f: &mut [u8], hdr: &NetHdr) {
    if hdr.flags & F_NEEDS_CSUM == 0 {
        return;
    }
    let start = hdr.csum_start as usize;
    let at = start + hdr.csum_offset as usize;
    if at + 2 > f.len() {
        return; // refused by NetHdr::check before we get here
    }
    let c = csum::finish(csum::partial(&f[start..], 0));
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// Test and benchmark helpers: TCP GSO frames as Linux's stack hands
/// them to a virtio-net device.
pub mod build {
    use super::*;

    /// One TCP/IP frame's addressing and state.
    #[derive(Clone, Copy, Debug)]
    pub struct Tcp {
        /// Destination MAC.
        pub dst_mac: [u8; 6],
        /// Source MAC.
        pub src_mac: [u8; 6],
        /// IPv6 (else IPv4).
        pub v6: bool,
        /// IPv4 id.
        pub id: u16,
        /// TCP sequence number.
        pub seq: u32,
        /// TCP flags.
        pub flags: u8,
    }

    /// Ethernet + IPv4/IPv6 + TCP headers (20-byte TCP, no options) for
    /// `payload` bytes, the IP header checksum complete and the TCP
    /// checksum field holding the folded pseudo-header sum (as Linux
    /// leaves it for `NEEDS_CSUM`). Appended to `out`.
    pub fn headers(t: &Tcp, payload: usize, out: &mut Vec<u8>) -> TcpLayout {
        let base = out.len();
        out.extend_from_slice(&t.dst_mac);
        out.extend_from_slice(&t.src_mac);
        let l3 = 14;
        if t.v6 {
            out.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&((20 + payload) as u16).to_be_bytes());
            out.extend_from_slice(&[IPPROTO_TCP, 64]);
            out.extend_from_slice(&[0xfd, 0x53, 0x4e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            out.extend_from_slice(&[0xfd, 0x53, 0x4e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        } else {
            out.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&((40 + payload) as u16).to_be_bytes());
            out.extend_from_slice(&t.id.to_be_bytes());
            out.extend_from_slice(&[0x40, 0, 64, IPPROTO_TCP, 0, 0]);
            out.extend_from_slice(&[10, 83, 78, 1, 10, 83, 78, 2]);
            let c = !csum::fold(csum::partial(&out[base + l3..], 0));
            out[base + l3 + 10..base + l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        let l4 = out.len() - base;
        out.extend_from_slice(&40000u16.to_be_bytes());
        out.extend_from_slice(&5001u16.to_be_bytes());
        out.extend_from_slice(&t.seq.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0x50, t.flags, 0xff, 0xff, 0, 0, 0, 0]);
        let layout = TcpLayout {
            l3,
            l4,
            payload: l4 + 20,
            v6: t.v6,
        };
        let p = csum::fold(pseudo(&out[base..], &layout, (20 + payload) as u32));
        out[base + l4 + 16..base + l4 + 18].copy_from_slice(&p.to_be_bytes());
        layout
    }

    /// The `virtio_net_hdr` of such a frame: NEEDS_CSUM at the TCP
    /// checksum, GSO with segments of `mss` when the payload exceeds it.
    pub fn gso_hdr(t: &Tcp, layout: &TcpLayout, payload: usize, mss: u16) -> NetHdr {
        let gso = match (payload > mss as usize, t.v6) {
            (false, _) => super::super::hdr::GSO_NONE,
            (true, false) => GSO_TCPV4,
            (true, true) => GSO_TCPV6,
        };
        let ecn = if gso != 0 && t.flags & TCP_CWR != 0 {
            super::super::hdr::GSO_ECN
        } else {
            0
        };
        NetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: gso | ecn,
            hdr_len: layout.payload as u16,
            gso_size: if gso != 0 { mss } else { 0 },
            csum_start: layout.l4 as u16,
            csum_offset: 16,
            num_buffers: 0,
        }
    }
}

#[cfg(test)]
mod tests;
