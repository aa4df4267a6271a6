//! `--gso`: synthetic frames carried as the payload of TCP GSO frames, and
//! the sink's side of it.
//!
//! A `--gso` stream puts each data frame (the same 16-byte header and
//! pattern as ever, [`frame`]) behind real Ethernet, IPv4 and TCP headers,
//! as Linux hands a 64 KiB TCP segment to a virtio-net device with TSO:
//! `gso_type` TCPV4, `gso_size` = MTU - 40, `NEEDS_CSUM` at the TCP
//! checksum, which holds the pseudo-header sum ([`tso::build`]). The TCP
//! sequence number counts payload bytes, so frame `seq` starts at
//! [`ISN`] + `seq` × `size`; PSH marks each GSO frame's last byte.
//!
//! The receiving guest gets each frame whole (it took TSO: `--offloads on`)
//! or as segments cut by its launcher's copier (`--offloads off`). Either
//! way it checks what it was given — a whole frame's header and partial
//! checksum, a segment's IPv4 header and full TCP checksum — and that it
//! was given nothing it did not accept, then reassembles the TCP payload
//! by sequence number ([`Reassembly`]) and verifies every data frame in it
//! as any other.

use super::*;
use crate::offload::hdr::{F_GUEST_CSUM, F_GUEST_TSO4, F_GUEST_TSO6, F_NEEDS_CSUM, GSO_NONE};
use crate::offload::tso::{self, build};
use crate::offload::{csum, NetHdr, NET_HDR};

/// The stream's initial TCP sequence number.
pub const ISN: u32 = 0x5348_0000;
/// IPv4 and TCP headers (no options) after the Ethernet header.
pub const IP_TCP_HDR: u64 = 40;
/// The EtherTypes of IPv4 and IPv6.
pub const ETH_P_IP: u16 = 0x0800;
/// IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;

/// The sink's TCP byte stream, rebuilt by sequence number.
#[derive(Debug, Default)]
pub(super) struct Reassembly {
    /// The sequence number the next segment should have; `None` before the
    /// first (or while resynchronising after a gap).
    next: Option<u32>,
    /// Payload bytes not yet a whole data frame.
    buf: Vec<u8>,
    /// A gap was seen: skip to the end of the current GSO frame (PSH).
    skipping: bool,
}

impl Reassembly {
    /// Add a segment's payload at `seq` (`psh`: it ends a GSO frame).
    /// False when it was not the next in sequence (the partial frame is
    /// dropped and we resume after the next PSH).
    fn push(&mut self, seq: u32, payload: &[u8], psh: bool) -> bool {
        let in_order = self.next.is_none_or(|n| n == seq) && !self.skipping;
        if !in_order {
            self.buf.clear();
            if !self.skipping {
                self.skipping = true;
                if psh {
                    self.skipping = false;
                    self.next = Some(seq.wrapping_add(payload.len() as u32));
                }
                return false;
            }
            if psh {
                self.skipping = false;
                self.next = Some(seq.wrapping_add(payload.len() as u32));
            }
            return true;
        }
        self.buf.extend_from_slice(payload);
        self.next = Some(seq.wrapping_add(payload.len() as u32));
        true
    }

    /// The next whole data frame's length, if it is all here; `Err` when the
    /// bytes cannot start a frame (the buffer is dropped).
    fn ready(&mut self) -> Result<Option<usize>, ()> {
        if self.buf.len() < FRAME_HDR {
            return Ok(None);
        }
        let size = u32::from_le_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]]);
        if !(FRAME_HDR as u32..=plan::MAX_FRAME as u32).contains(&size) {
            self.buf.clear();
            return Err(());
        }
        Ok((self.buf.len() >= size as usize).then_some(size as usize))
    }
}

impl Guest {
    /// `--gso`: put data frame `seq` on the TX ring inside a TCP GSO frame;
    /// false when the ring is full.
    pub(super) fn send_gso(&mut self, seq: u64, mss: u16) -> Result<bool, RingError> {
        self.tx_only_stamps = false;
        let size = self.pattern.size();
        let t = build::Tcp {
            dst_mac: self.dst,
            src_mac: self.mac,
            v6: false,
            id: seq as u16,
            seq: ISN.wrapping_add((seq as u32).wrapping_mul(size as u32)),
            flags: TCP_ACK | TCP_PSH,
        };
        let head = &mut self.tcp_head;
        head.clear();
        head.resize(NET_HDR, 0);
        let layout = build::headers(&t, size, head);
        let hdr = build::gso_hdr(&t, &layout, size, mss);
        head[..NET_HDR].copy_from_slice(&hdr.encode());
        let total = (head.len() + size) as u32;
        let Some((_, slot)) =
            self.tx
                .add_slot(self.layout.tx_bufs, self.tx_stride, total, false)?
        else {
            return Ok(false);
        };
        let (h, payload) = self.pattern.frame(seq);
        let at = slot + self.tcp_head.len() as u64;
        self.tx_mem.write("tx gso headers", slot, &self.tcp_head)?;
        self.tx_mem.write("tx frame", at, &h)?;
        self.tx_mem
            .write("tx frame", at + h.len() as u64, payload)?;
        Ok(true)
    }

    /// A received TCP/IP frame of `len` bytes (with its `virtio_net_hdr`)
    /// in RX buffer `id`: check it, reassemble, verify the data frames.
    pub(super) fn receive_tcp(
        &mut self,
        id: u16,
        len: u32,
        ethertype: u16,
        stats: &mut Stats,
    ) -> Result<(), RingError> {
        let mut f = std::mem::take(&mut self.frame);
        let n = len as usize;
        self.mem
            .read("rx tcp frame", self.rx_slot(id), &mut f[..n])?;
        let checked = self.check_tcp(&f[..n], ethertype, stats);
        let mut broken = checked.is_none();
        if let Some((seq, at, psh)) = checked {
            broken = !self.tcp.push(seq, &f[at..n], psh);
        }
        self.frame = f;
        if broken {
            stats.corrupted += 1;
        }
        loop {
            match self.tcp.ready() {
                Ok(None) => break,
                Err(()) => {
                    stats.corrupted += 1;
                    break;
                }
                Ok(Some(size)) => {
                    let verdict = verify(&self.tcp.buf[..size]);
                    self.tcp.buf.drain(..size);
                    self.account_verdict(verdict, size, stats);
                }
            }
        }
        Ok(())
    }

    /// Check one TCP frame `f` (with its `virtio_net_hdr`) as delivered to
    /// a guest with our offloads; its `(seq, payload offset, PSH)` if good.
    fn check_tcp(&self, f: &[u8], ethertype: u16, stats: &mut Stats) -> Option<(u32, usize, bool)> {
        let hdr = NetHdr::parse(f[..NET_HDR].try_into().ok()?);
        let frame = &f[NET_HDR..];
        let (gso, tso_bit) = match ethertype {
            ETH_P_IP => (crate::offload::hdr::GSO_TCPV4, F_GUEST_TSO4),
            _ => (crate::offload::hdr::GSO_TCPV6, F_GUEST_TSO6),
        };
        let t = tso::tcp_layout(frame, gso).ok()?;
        let whole = hdr.gso() != GSO_NONE;
        if whole {
            stats.gso_frames_received += 1;
        } else {
            stats.tcp_segments_received += 1;
        }
        // Never given what we did not accept.
        let accepted = |bit: u32| self.offloads & (1 << bit) != 0;
        if (whole && (hdr.gso() != gso || !accepted(tso_bit)))
            || (hdr.flags & F_NEEDS_CSUM != 0 && !accepted(F_GUEST_CSUM))
            || hdr.check((f.len() - NET_HDR) as u32).is_err()
        {
            return None;
        }
        let tcp_len = (frame.len() - t.l4) as u32;
        let pseudo = tso::pseudo(frame, &t, tcp_len);
        let ip_ok = t.v6 || csum::verifies(&frame[t.l3..t.l4], 0);
        let tcp_ok = if hdr.flags & F_NEEDS_CSUM != 0 {
            // Partial: the field holds the pseudo-header sum (of the whole
            // frame's length), the rest is the receiver's to complete.
            let field = u16::from_be_bytes([frame[t.l4 + 16], frame[t.l4 + 17]]);
            hdr.csum_start as usize == t.l4 && hdr.csum_offset == 16 && field == csum::fold(pseudo)
        } else {
            csum::verifies(&frame[t.l4..], pseudo)
        };
        if !(ip_ok && tcp_ok) {
            stats.tcp_checksum_errors += 1;
            return None;
        }
        let seq = u32::from_be_bytes(frame[t.l4 + 4..t.l4 + 8].try_into().ok()?);
        let psh = frame[t.l4 + 13] & TCP_PSH != 0;
        Some((seq, NET_HDR + t.payload, psh))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassembly_yields_frames_across_segments_and_resyncs_after_a_gap() {
        let p = Pattern::new(3000);
        let mut bytes = Vec::new();
        for seq in 0..3 {
            let (h, pl) = p.frame(seq);
            bytes.extend_from_slice(&h);
            bytes.extend_from_slice(pl);
        }
        let mut r = Reassembly::default();
        // Frame 0 in two segments: whole once both are in.
        assert!(r.push(ISN, &bytes[..1000], false));
        assert_eq!(r.ready(), Ok(None));
        assert!(r.push(ISN + 1000, &bytes[1000..3000], true));
        assert_eq!(r.ready(), Ok(Some(3000)));
        assert_eq!(verify(&r.buf[..3000]), Verdict::Good(0));
        r.buf.drain(..3000);
        // Frame 1's first segment is lost: its second is refused and we
        // resume with frame 2.
        assert!(!r.push(ISN + 4000, &bytes[4000..6000], true));
        assert!(r.push(ISN + 6000, &bytes[6000..9000], true));
        assert_eq!(r.ready(), Ok(Some(3000)));
        assert_eq!(verify(&r.buf[..3000]), Verdict::Good(2));
    }
}
