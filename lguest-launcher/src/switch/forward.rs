//! Forwarding one burst: where each frame goes, and the one copy.
//!
//! [`Switch::forward_from`] takes up to [`BATCH`] chains from one member;
//! [`Switch::route`] reads each frame's `virtio_net_hdr` and Ethernet
//! header, learns the source, looks the destination up (both at most once
//! per distinct address per burst: [`Burst`]), and copies the frame into
//! the destination port's TX ring, or every other port's when it floods.
//! The `virtio_net_hdr` travels unchanged with the frame (GSO and checksum
//! flags included), to members and to the TAP alike.
//!
//! Before each frame, [`Switch::push_burst`] (`burst.rs`) tries to move a
//! run of plain frames into one push port at once (round 2, session 7:
//! the switch's turn went from 724 to about 370 instructions per frame,
//! callgrind, 2 and 4 pairs, 1500 B); whatever it leaves comes here.
//!
//! A frame from a member to one learned member port (every frame of a
//! stream) takes the fast path, [`Switch::unicast_to_member`]: no target
//! list, and its counters are added up in the [`BurstState`] and written
//! to the stats once per burst. The per-frame steps are inlined into one
//! loop (callgrind, one pair: 986 instructions per forwarded 1500 B frame
//! before, about 800 after, of which the copy is 175).

use super::capture;
use super::counts::BurstState;
use super::port::{read_prefix, PutError};
use super::serve::Switch;
use super::BATCH;
use crate::guest::frame::{is_group, Mac, ETH_HDR};
use crate::guest::plan::{BUF_SIZE, NET_HDR_LEN};
use crate::virtq::{ChainError, Seg};
use std::time::Instant;
use transport::Transport;

/// Where a frame being forwarded is.
#[derive(Clone, Copy)]
pub(super) enum Src<'a> {
    /// In a member's memory, as the chain pieces in `Switch::segs`.
    Member(&'a crate::memory::Region),
    /// In a buffer of ours (read from the TAP), `virtio_net_hdr` first.
    Bytes(&'a [u8]),
}

impl Src<'_> {
    #[inline(always)]
    fn read_prefix(&self, segs: &[Seg], out: &mut [u8]) -> bool {
        match self {
            Src::Member(mem) => read_prefix(mem, segs, out),
            Src::Bytes(b) => match b.get(..out.len()) {
                Some(h) => {
                    out.copy_from_slice(h);
                    true
                }
                None => false,
            },
        }
    }

    fn can_hold(&self) -> bool {
        matches!(self, Src::Member(_))
    }
}

/// What became of the frame at the head of a member's ring.
pub(super) enum Route {
    /// Forwarded or dropped: complete the chain.
    Done,
    /// A destination is full and may still make room: leave it there.
    Hold,
}

/// The source MAC of a frame whose first bytes (`virtio_net_hdr` and
/// Ethernet header) are `hdr`.
fn src_mac(hdr: &[u8; NET_HDR_LEN as usize + ETH_HDR]) -> Mac {
    let eth = &hdr[NET_HDR_LEN as usize..];
    eth[6..12].try_into().unwrap_or_default()
}

impl<T: Transport + 'static> Switch<'_, T> {
    /// Forward what member `i` has sent; how many chains were finished.
    pub(super) fn forward_from(&mut self, mut i: usize, now: Instant) -> usize {
        // An idle port costs one load of its avail index: nothing else
        // (not even the handle on its memory) is touched before it says
        // there is work.
        let (pending, member, settled) = match self.ports[i].as_ref() {
            Some(p) => match p.pending() {
                Ok(0) => return 0,
                Ok(n) => (n, p.member().clone(), p.settled),
                Err(e) => {
                    self.leave(i, &format!("impossible TX ring: {e}"));
                    return 0;
                }
            },
            None => return 0,
        };
        if !settled {
            // Its first frame says who it is: maybe a member coming back
            // to its old port.
            i = self.settle_first(i, &member);
        }
        let mut burst = BurstState::of(self, i);
        let max = pending.min(BATCH);
        // A capture records every frame: the general path's.
        let runs = crate::capture::tap().is_none();
        let mut done = 0;
        let mut held = false;
        while done < max {
            if runs {
                let n = self.push_burst(i, &member, max - done, now, &mut burst);
                if n > 0 {
                    done += n;
                    continue;
                }
            }
            let Some(p) = self.ports[i].as_mut() else {
                break;
            };
            let (head, chain) = match p.peek(&mut self.segs) {
                Ok(c) => c,
                Err(e) => {
                    self.leave(i, &format!("impossible TX ring: {e}"));
                    break;
                }
            };
            match self.route(i, Src::Member(&member), chain, now, &mut burst) {
                Route::Hold => {
                    held = true;
                    break;
                }
                Route::Done => {}
            }
            let Some(p) = self.ports[i].as_mut() else {
                break;
            };
            if let Err(e) = p.complete(head) {
                self.leave(i, &format!("impossible TX ring: {e}"));
                break;
            }
            done += 1;
        }
        if let Some(p) = self.ports[i].as_mut() {
            p.held = held;
        }
        burst.end(self, i);
        usize::from(done)
    }

    /// Peek at the first frame of the member that joined port `i` and
    /// [`Switch::settle`] it by its source address; its port now.
    fn settle_first(&mut self, i: usize, member: &crate::memory::Region) -> usize {
        let mut hdr = [0u8; NET_HDR_LEN as usize + ETH_HDR];
        let mac = match self.ports[i].as_mut().map(|p| p.peek(&mut self.segs)) {
            Some(Ok((_, Ok(_)))) if read_prefix(member, &self.segs, &mut hdr) => src_mac(&hdr),
            // A broken first frame: routing it counts it; no move.
            _ => [0xff; 6],
        };
        self.settle(i, &mac)
    }

    /// Decide where one frame from port `i` goes and copy it there.
    #[inline(always)]
    pub(super) fn route(
        &mut self,
        i: usize,
        src: Src<'_>,
        chain: Result<u32, ChainError>,
        now: Instant,
        burst: &mut BurstState,
    ) -> Route {
        let mut hdr = [0u8; NET_HDR_LEN as usize + ETH_HDR];
        let len = match chain {
            Ok(len)
                if len as usize >= hdr.len()
                    && u64::from(len) <= BUF_SIZE
                    && src.read_prefix(&self.segs, &mut hdr) =>
            {
                len
            }
            _ => {
                self.stats.port(i).drops.malformed += 1;
                capture::malformed(i, chain);
                return Route::Done;
            }
        };
        let eth = &hdr[NET_HDR_LEN as usize..];
        let dst: Mac = eth[0..6].try_into().unwrap_or_default();
        let srcmac = src_mac(&hdr);
        let bytes = u64::from(len) - NET_HDR_LEN;
        let tap_ix = self.tap_ix();
        let up = |ports: &Vec<Option<super::port::Port<T>>>, j: usize| {
            ports.get(j).is_some_and(|p| p.is_some()) || Some(j) == tap_ix
        };
        self.targets.clear();
        let flood = if is_group(&dst) {
            true
        } else {
            match self.table.lookup_in(&mut burst.table, &dst, now) {
                Some(j) if j == i => {
                    burst.rx_packets += 1;
                    burst.rx_bytes += bytes;
                    self.stats.port(i).drops.same_port += 1;
                    capture::inbound(i, src, &self.segs, len, Some("same_port"));
                    if self.table.learn_in(&mut burst.table, srcmac, i, now) {
                        capture::learned(i, &srcmac);
                    }
                    return Route::Done;
                }
                Some(j) if up(&self.ports, j) => {
                    if let (Src::Member(mem), false) = (src, Some(j) == tap_ix) {
                        // Member to member: the fast path.
                        return self.unicast_to_member(i, j, mem, len, srcmac, now, burst);
                    }
                    self.targets.push(j);
                    false
                }
                _ => true,
            }
        };
        if flood {
            let n = self.ports.len();
            self.targets
                .extend((0..n).filter(|&j| j != i && self.ports[j].is_some()));
            if let Some(t) = tap_ix.filter(|&t| t != i) {
                self.targets.push(t);
            }
        }
        // Room everywhere it goes, or a hold while a full destination
        // may still make room (see the module docs). A frame from the
        // TAP cannot wait: the host's queue is not ours to hold.
        if src.can_hold() {
            for &j in &self.targets {
                if let Some(Some(q)) = self.ports.get_mut(j) {
                    if !q.has_room() {
                        let since = *q.full_since.get_or_insert(now);
                        if now.saturating_duration_since(since) < self.cfg.hold {
                            return Route::Hold;
                        }
                    }
                }
            }
        }
        if self.table.learn_in(&mut burst.table, srcmac, i, now) {
            capture::learned(i, &srcmac);
        }
        burst.rx_packets += 1;
        burst.rx_bytes += bytes;
        if self.targets.is_empty() {
            self.stats.port(i).drops.unknown_port += 1;
            capture::inbound(i, src, &self.segs, len, Some("unknown_port"));
            return Route::Done;
        }
        capture::inbound(i, src, &self.segs, len, None);
        self.stats.copies += self.targets.len() as u64;
        if flood {
            self.stats.flooded += 1;
        } else {
            self.stats.unicast += 1;
        }
        for t in 0..self.targets.len() {
            let j = self.targets[t];
            let put = if Some(j) == tap_ix {
                self.put_tap(src, len)
            } else if let Some(Some(q)) = self.ports.get_mut(j) {
                match src {
                    Src::Member(mem) => q.put(mem, &self.segs, len),
                    Src::Bytes(b) => q.put_bytes(&b[..len as usize]),
                }
            } else {
                continue;
            };
            match put {
                Ok(true) => {
                    let s = self.stats.port(j);
                    s.tx_packets += 1;
                    s.tx_bytes += bytes;
                    capture::outbound(j, src, &self.segs, len, false);
                }
                Ok(false) => self.not_put(i, j, src, len, None),
                Err(e) => self.not_put(i, j, src, len, Some(e)),
            }
        }
        Route::Done
    }

    /// The fast path of [`Switch::route`]: a frame of `len` bytes from
    /// member `i` (its pieces in `segs`, in `mem`) to the one member port
    /// `j` its destination was learned on. The same steps as the general
    /// path — hold while `j` is full and may make room, learn, count,
    /// capture, copy — without a target list, counters added per burst.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn unicast_to_member(
        &mut self,
        i: usize,
        j: usize,
        mem: &crate::memory::Region,
        len: u32,
        srcmac: Mac,
        now: Instant,
        burst: &mut BurstState,
    ) -> Route {
        let hold = self.cfg.hold;
        let Some(Some(q)) = self.ports.get_mut(j) else {
            // Not reached (the caller saw a member on `j`); counted as
            // the general path counts a frame with nowhere to go.
            burst.rx_packets += 1;
            burst.rx_bytes += u64::from(len) - NET_HDR_LEN;
            self.stats.port(i).drops.unknown_port += 1;
            return Route::Done;
        };
        if !q.has_room() {
            let since = *q.full_since.get_or_insert(now);
            if now.saturating_duration_since(since) < hold {
                return Route::Hold;
            }
        }
        if self.table.learn_in(&mut burst.table, srcmac, i, now) {
            capture::learned(i, &srcmac);
        }
        let bytes = u64::from(len) - NET_HDR_LEN;
        burst.rx_packets += 1;
        burst.rx_bytes += bytes;
        let src = Src::Member(mem);
        capture::inbound(i, src, &self.segs, len, None);
        let put = match self.ports.get_mut(j) {
            Some(Some(q)) => q.put(mem, &self.segs, len),
            _ => Ok(false),
        };
        match put {
            Ok(true) => {
                burst.sent(self, j, bytes);
                capture::outbound(j, src, &self.segs, len, false);
                return Route::Done;
            }
            Ok(false) => self.not_put(i, j, src, len, None),
            Err(e) => self.not_put(i, j, src, len, Some(e)),
        }
        self.stats.copies += 1;
        self.stats.unicast += 1;
        Route::Done
    }

    /// The TAP port's number, if there is one (after the member ports).
    pub(super) fn tap_ix(&self) -> Option<usize> {
        self.tap.as_ref().map(|_| self.ports.len())
    }

    /// Hand a frame (`len` bytes with its `virtio_net_hdr`, which the TAP
    /// takes too: `IFF_VNET_HDR`) to the host.
    fn put_tap(&mut self, src: Src<'_>, len: u32) -> Result<bool, PutError> {
        let Some(tap) = self.tap.as_ref() else {
            return Ok(false);
        };
        let frame: &[u8] = match src {
            Src::Bytes(b) => &b[..len as usize],
            Src::Member(mem) => {
                self.scratch.resize(len as usize, 0);
                if !read_prefix(mem, &self.segs, &mut self.scratch) {
                    return Ok(false);
                }
                &self.scratch[..]
            }
        };
        tap.send(frame).map_err(PutError::Tap)
    }

    /// Forward what the host sent on the TAP; how many frames.
    pub(super) fn forward_from_tap(&mut self, now: Instant) -> usize {
        let Some(ix) = self.tap_ix() else {
            return 0;
        };
        let mut buf = std::mem::take(&mut self.tap_buf);
        buf.resize(BUF_SIZE as usize, 0);
        let mut burst = BurstState::of(self, ix);
        let mut done = 0;
        for _ in 0..BATCH {
            // Each read is one frame with its `virtio_net_hdr` first.
            let got = match self.tap.as_ref().map(|t| t.recv(&mut buf)) {
                Some(Ok(Some(n))) => n,
                Some(Ok(None)) | None => break,
                Some(Err(e)) => {
                    eprintln!("[switch] tap: {e}; closing the TAP port");
                    self.tap = None;
                    break;
                }
            };
            self.segs.clear();
            let _ = self.route(ix, Src::Bytes(&buf), Ok(got as u32), now, &mut burst);
            done += 1;
        }
        if done > 0 {
            burst.end(self, ix);
        }
        self.tap_buf = buf;
        done
    }

    /// A frame from port `i` that did not land on port `j`: a `no_room`
    /// drop at `j` (`why` `None`: its ring was full). A frame at fault
    /// (`PutError::Memory`, `TooLong`) is also `malformed` at `i`; any
    /// other error is our own ring or the TAP failing: port `j` goes.
    #[cold]
    fn not_put(&mut self, i: usize, j: usize, src: Src<'_>, len: u32, why: Option<PutError>) {
        self.stats.port(j).drops.no_room += 1;
        capture::outbound(j, src, &self.segs, len, true);
        match why {
            None => {}
            Some(PutError::Dest(_)) => self.stats.port(j).drops.bad_rx_chain += 1,
            Some(PutError::Memory(_) | PutError::TooLong(_) | PutError::Offload(_)) => {
                self.stats.port(i).drops.malformed += 1;
                capture::malformed(i, Ok(len));
            }
            Some(e) => self.leave(j, &format!("cannot forward to it: {e}")),
        }
    }
}
