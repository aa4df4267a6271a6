//! [`replay`]: apply the ops, check after every poll.

use super::checks::*;
use super::transport_stub::CountingTransport;
#[allow(unused_imports)]
use super::*;

/// Our guest: the RX driver queue and what it has in flight.
struct Guest {
    mem: Region,
    rx: DriverQueue,
    info: RingInfo,
    bufs: u64,
    /// Posted, not yet reaped: buffer id -> its length.
    posted: HashMap<u16, u32>,
    /// Delivered by the copier, not yet reaped.
    delivered: HashMap<u16, u32>,
}

/// Peer state the harness keeps to play an honest driver's part.
struct Peer {
    mem: Region,
    info: RingInfo,
    next_avail: u16,
    /// Chains the copier finished so far: where its used index must be.
    used: u16,
}

fn ring_error(op: usize, error: RingError) -> Violation {
    Violation::UnexpectedError {
        op,
        error: format!("own guest: {error}"),
    }
}

/// Replay `ops` against a real copier (see the module docs for what is
/// checked). `Ok` says every invariant held; the report says what happened.
pub fn replay(ops: &[Op], cfg: &Config) -> Result<Report, Violation> {
    let setup = |e: &dyn std::fmt::Display| Violation::Setup(e.to_string());
    let info = cfg.peer_ring();
    let size = info.size;
    let peer_mem = GuestMemory::create("fuzz-peer", PEER_MEM).map_err(|e| setup(&e))?;
    let layout = Layout::plan(OWN_QUEUE);
    let own_mem = GuestMemory::create("fuzz-own", layout.needed).map_err(|e| setup(&e))?;
    let own = own_mem.region().clone();
    let mode: NotifyMode = cfg.mode.into();
    let mut copier = Copier::new(
        CountingTransport::new().map_err(|e| setup(&e))?,
        &GuestMap::identity(peer_mem.region().clone()),
        &info,
        &GuestMap::identity(own.clone()),
        &layout.rx,
        mode,
    )
    .map_err(|e| setup(&e))?
    .keep_delivery_events();
    if cfg.guest_interrupts {
        copier = copier.with_guest_interrupts();
    }
    let mut peer = Peer {
        mem: peer_mem.region().clone(),
        info,
        next_avail: 0,
        used: 0,
    };
    let mut guest = Guest {
        mem: own.clone(),
        rx: DriverQueue::new(own.clone(), &layout.rx),
        info: layout.rx,
        bufs: layout.rx_bufs,
        posted: HashMap::new(),
        delivered: HashMap::new(),
    };
    let mut report = Report::default();
    let peer_extent = info.used + info.used_bytes();

    for (i, op) in ops.iter().enumerate() {
        // The peer's memory is in bounds for every write below by
        // construction (offsets are taken modulo its ring), so the results
        // are ignored rather than unwrapped: the harness must not panic.
        match *op {
            Op::WriteDesc {
                index,
                addr,
                len,
                flags,
                next,
            } => {
                let mut b = [0u8; 16];
                b[0..8].copy_from_slice(&addr.to_le_bytes());
                b[8..12].copy_from_slice(&len.to_le_bytes());
                b[12..14].copy_from_slice(&flags.to_le_bytes());
                b[14..16].copy_from_slice(&next.to_le_bytes());
                let at = info.desc + 16 * (index as u64 % size as u64);
                let _ = peer.mem.write("fuzz desc", at, &b);
            }
            Op::PublishAvail { head } => {
                let slot = peer.next_avail as u64 % size as u64;
                let _ = peer.mem.store_u16(
                    "fuzz avail",
                    info.avail + 4 + 2 * slot,
                    head,
                    Ordering::Relaxed,
                );
                peer.next_avail = peer.next_avail.wrapping_add(1);
                let _ = peer.mem.store_u16(
                    "fuzz avail idx",
                    info.avail + 2,
                    peer.next_avail,
                    Ordering::Release,
                );
            }
            Op::SetAvailIdx(idx) => {
                peer.next_avail = idx;
                let _ =
                    peer.mem
                        .store_u16("fuzz avail idx", info.avail + 2, idx, Ordering::Release);
            }
            Op::Scribble { at, byte } => {
                let _ = peer
                    .mem
                    .write("fuzz scribble", at as u64 % peer_extent, &[byte]);
            }
            Op::PeerSuppress { flags, used_event } => {
                let _ =
                    peer.mem
                        .store_u16("fuzz avail flags", info.avail, flags, Ordering::Relaxed);
                let _ = peer.mem.store_u16(
                    "fuzz used_event",
                    info.avail + 4 + 2 * size as u64,
                    used_event,
                    Ordering::Relaxed,
                );
            }
            Op::PostRx { count, len } => {
                let len = len.clamp(1, BUF_SIZE as u32);
                for _ in 0..count as u32 % (OWN_QUEUE + 1) {
                    match guest.rx.add_slot(guest.bufs, BUF_SIZE, len, true) {
                        Ok(Some((id, _))) => {
                            guest.posted.insert(id, len);
                        }
                        Ok(None) => break,
                        Err(e) => return Err(ring_error(i, e)),
                    }
                }
                guest.rx.publish().map_err(|e| ring_error(i, e))?;
            }
            Op::ReapRx => reap(i, &mut guest, &mut report)?,
            Op::GuestInterrupts(enable) => {
                let at = guest.rx.last_used();
                guest
                    .rx
                    .set_interrupts(mode, enable, at)
                    .map_err(|e| ring_error(i, e))?;
            }
            Op::PeerNotifications(enable) => {
                // Writes only the peer's used ring: never an error.
                if let Err(e) = copier.set_notifications(enable) {
                    return Err(Violation::UnexpectedError {
                        op: i,
                        error: e.to_string(),
                    });
                }
            }
            Op::RxNotifications(enable) => {
                if let Err(e) = copier.set_rx_notifications(enable) {
                    return Err(Violation::UnexpectedError {
                        op: i,
                        error: e.to_string(),
                    });
                }
            }
            Op::Poll => {
                if let Some(e) = poll(i, &mut copier, &mut peer, &mut guest, &mut report)? {
                    report.link_dropped = Some((i, e));
                    break; // the link is gone; so is the copier
                }
            }
        }
    }
    report.notifies = copier.link().notifies.load(Ordering::Relaxed);
    Ok(report)
}

/// Our guest pops every used RX buffer; each must be one the copier
/// delivered, with the length it delivered.
fn reap(op: usize, guest: &mut Guest, report: &mut Report) -> Result<(), Violation> {
    while let Some((id, len)) = guest.rx.pop_used().map_err(|e| ring_error(op, e))? {
        match guest.delivered.remove(&id) {
            Some(l) if l == len => {}
            other => {
                return Err(Violation::RxUsed {
                    op,
                    what: format!("reaped ({id}, {len}), delivered {other:?}"),
                })
            }
        }
        guest.posted.remove(&id);
        report.reaped += 1;
    }
    Ok(())
}

/// One poll and every check after it. `Ok(Some(e))`: the link ended with a
/// named peer-ring error.
fn poll(
    op: usize,
    copier: &mut Copier<CountingTransport>,
    peer: &mut Peer,
    guest: &mut Guest,
    report: &mut Report,
) -> Result<Option<RingError>, Violation> {
    let size = peer.info.size;
    let own = guest.mem.clone();
    let own_before = snapshot(&own);
    let peer_before = snapshot(&peer.mem);
    let rx_used_before = own
        .load_u16("fuzz", guest.info.used + 2, Ordering::Acquire)
        .unwrap_or_default();
    let stats_before = counters(&report.stats);
    let notifies_before = copier.link().notifies.load(Ordering::Relaxed);

    let out = match copier.poll() {
        Ok(out) => out,
        Err(CopyError::PeerRing(e)) => return Ok(Some(e)),
        Err(e) => {
            return Err(Violation::UnexpectedError {
                op,
                error: e.to_string(),
            })
        }
    };
    report.polls += 1;
    if let Err(e) = crate::run::account(copier, &out, &mut report.stats) {
        return Err(Violation::UnexpectedError {
            op,
            error: e.to_string(),
        });
    }
    let events = copier.events().to_vec();

    // 2. Bounded work, and the outcome agrees with the events.
    let done = out.finished();
    if done > size as usize {
        return Err(Violation::TooMuchWork { op, done, size });
    }
    let delivered: Vec<(u16, u16, u32)> = events
        .iter()
        .filter_map(|e| match *e {
            Event::Delivered {
                peer_head,
                rx_head,
                len,
                ..
            } => Some((peer_head, rx_head, len)),
            Event::Dropped { .. } => None,
        })
        .collect();
    if events.len() != done || delivered.len() != out.moved {
        return Err(Violation::OutcomeMismatch {
            op,
            outcome: out,
            events,
        });
    }

    // 3. Every event counted once, by class; rx_full and kicks too.
    let mut expected: BTreeMap<&'static str, u64> = BTreeMap::new();
    for e in &events {
        match e {
            Event::Delivered { len, .. } => {
                *expected.entry("packets_copied").or_default() += 1;
                *expected.entry("bytes_copied").or_default() += *len as u64;
            }
            Event::Dropped { reason, .. } => {
                *expected.entry("peer_errors").or_default() += 1;
                *expected.entry(drop_counter(reason)).or_default() += 1;
                *report.drops_by_reason.entry(reason.name()).or_default() += 1;
            }
        }
    }
    expected.insert("rx_ring_full", out.rx_full as u64);
    for ((counter, before), (_, after)) in stats_before.iter().zip(counters(&report.stats)) {
        let counted = after - before;
        let want = expected.get(counter).copied().unwrap_or(0);
        if counted != want {
            return Err(Violation::Miscounted {
                op,
                counter,
                counted,
                expected: want,
            });
        }
    }
    let kicks = copier.link().notifies.load(Ordering::Relaxed) - notifies_before;
    if kicks != out.peer_wants_kick as u64 || (out.peer_wants_kick && out.peer_kick_suppressed) {
        return Err(Violation::Miscounted {
            op,
            counter: "notifications_sent",
            counted: kicks,
            expected: out.peer_wants_kick as u64,
        });
    }
    report.moved += out.moved as u64;
    report.dropped += out.dropped as u64;

    // 4. The peer's used index advanced by exactly the finished chains, and
    // the new entries name them in order with length 0. (Between polls the
    // peer may scribble its used ring: check only what this poll wrote.)
    let used_off = peer.info.used;
    let peer_used = peer
        .mem
        .load_u16("fuzz", used_off + 2, Ordering::Acquire)
        .unwrap_or_default();
    let before_used = u16::from_le_bytes([
        peer_before[used_off as usize + 2],
        peer_before[used_off as usize + 3],
    ]);
    let want_used = if done > 0 {
        peer.used.wrapping_add(done as u16)
    } else {
        before_used
    };
    if peer_used != want_used {
        return Err(Violation::PeerUsed {
            op,
            what: format!("index {before_used} -> {peer_used} after {done} chains"),
        });
    }
    for (k, e) in events.iter().enumerate() {
        let head = match *e {
            Event::Delivered { peer_head, .. } | Event::Dropped { peer_head, .. } => peer_head,
        };
        let slot = peer.used.wrapping_add(k as u16) as u64 % size as u64;
        let at = used_off + 4 + 8 * slot;
        let id = peer.mem.load_u32("fuzz", at).unwrap_or(u32::MAX);
        let len = peer.mem.load_u32("fuzz", at + 4).unwrap_or(u32::MAX);
        if id != head as u32 || len != 0 {
            return Err(Violation::PeerUsed {
                op,
                what: format!("entry {k} is ({id}, {len}), event {e:?}"),
            });
        }
    }
    peer.used = peer.used.wrapping_add(done as u16);

    // 5. Our RX used ring: advanced by `moved`; entries name posted,
    // unreaped, undelivered buffers with lengths that fit.
    let rx_used = own
        .load_u16("fuzz", guest.info.used + 2, Ordering::Acquire)
        .unwrap_or_default();
    if rx_used.wrapping_sub(rx_used_before) as usize != out.moved {
        return Err(Violation::RxUsed {
            op,
            what: format!(
                "index {rx_used_before} -> {rx_used} for {} frames",
                out.moved
            ),
        });
    }
    let mut allowed_bufs = Vec::new();
    for (k, &(_, rx_head, len)) in delivered.iter().enumerate() {
        let slot = rx_used_before.wrapping_add(k as u16) as u64 % guest.info.size as u64;
        let at = guest.info.used + 4 + 8 * slot;
        let id = own.load_u32("fuzz", at).unwrap_or(u32::MAX);
        let used_len = own.load_u32("fuzz", at + 4).unwrap_or(u32::MAX);
        if id != rx_head as u32 || used_len != len {
            return Err(Violation::RxUsed {
                op,
                what: format!("entry {k} is ({id}, {used_len}), delivered ({rx_head}, {len})"),
            });
        }
        let fits = guest.posted.get(&rx_head).is_some_and(|&room| len <= room);
        if !fits || guest.delivered.insert(rx_head, len).is_some() {
            return Err(Violation::RxUsed {
                op,
                what: format!(
                    "buffer {rx_head} with {len} bytes: posted {:?}, delivered already: {}",
                    guest.posted.get(&rx_head),
                    guest.delivered.contains_key(&rx_head)
                ),
            });
        }
        let start = guest.bufs + rx_head as u64 * BUF_SIZE;
        allowed_bufs.push(start..start + len as u64);
    }

    // 6. No stray writes: ours only in the RX used ring and the delivered
    // bytes; the peer's only in its used ring.
    let mut allowed = allowed_bufs;
    allowed.push(guest.info.used..guest.info.used + guest.info.used_bytes());
    allowed.sort_by_key(|r| r.start);
    if let Some(offset) = stray_change(&own_before, &snapshot(&own), &allowed) {
        return Err(Violation::StrayWrite {
            op,
            mem: "own",
            offset,
            allowed: "the RX used ring and delivered RX bytes",
        });
    }
    let peer_used_ring = peer.info.used..peer.info.used + peer.info.used_bytes();
    if let Some(offset) = stray_change(
        &peer_before,
        &snapshot(&peer.mem),
        std::slice::from_ref(&peer_used_ring),
    ) {
        return Err(Violation::StrayWrite {
            op,
            mem: "peer",
            offset,
            allowed: "its used ring",
        });
    }

    // 7. Nothing left that this poll could have done.
    if !matches!(copier.has_work(), Ok(false)) {
        return Err(Violation::LeftWork { op });
    }
    Ok(None)
}
