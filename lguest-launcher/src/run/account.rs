//! The one `match` every packet and every drop of a poll passes.

use crate::copier::{Copier, DropReason, Event, Outcome};
use crate::stats::Stats;
use crate::virtq::ChainError;
use transport::{Notify, Transport};

/// Send one notification to the peer and count what happened.
pub fn notify<T: Transport>(t: &T, stats: &mut Stats) -> Result<(), transport::Error> {
    // Stamped before the write: the peer may run before `notify` returns.
    crate::wait::latency::mark();
    match t.notify()? {
        Notify::Sent => stats.notifications_sent += 1,
        Notify::AlreadyPending => stats.notifications_pending += 1,
    }
    Ok(())
}

/// The one place every packet and every drop of a copier poll passes:
/// counters here, and any per-packet hook (capture, live status) beside
/// them. Then the peer is told its TX buffers are free if it asked.
pub fn account<T: Transport>(
    copier: &mut Copier<T>,
    out: &Outcome,
    stats: &mut Stats,
) -> Result<(), transport::Error> {
    let tap = crate::capture::tap();
    // Deliveries are counted per poll; the events are walked only when
    // something needs each one (a capture tap, a drop to classify).
    stats.packets_copied += out.moved as u64;
    stats.bytes_copied += out.bytes;
    if out.rx_full {
        stats.rx_ring_full += 1;
    }
    stats.add_offloads(copier.take_offload_counts());
    if tap.is_none() && out.dropped == 0 {
        return finish(copier, out, stats);
    }
    // The capture's encoder, held for the poll (none for a poll with
    // nothing to record).
    let mut cap = tap.and_then(|t| t.poll(copier.events().len(), out.rx_full));
    // By index: the capture tap reads frames back through the copier.
    for i in 0..copier.events().len() {
        let ev = copier.events()[i];
        if let Some(cap) = &mut cap {
            cap.event(copier, &ev);
        }
        match ev {
            Event::Delivered { .. } => {}
            Event::Dropped { reason, .. } => {
                stats.peer_errors += 1;
                match stats.drops_by_reason.get_mut(reason.name()) {
                    Some(n) => *n += 1,
                    None => {
                        stats.drops_by_reason.insert(reason.name().to_owned(), 1);
                    }
                }
                match reason {
                    DropReason::Malformed(ChainError::BadIndex { .. }) => stats.peer_bad_index += 1,
                    DropReason::Malformed(ChainError::OutOfBounds { .. }) => {
                        stats.peer_out_of_bounds += 1
                    }
                    DropReason::Malformed(ChainError::Loop { .. }) => stats.peer_loop += 1,
                    DropReason::Malformed(ChainError::WrongDirection { .. }) => {
                        stats.peer_wrong_direction += 1
                    }
                    DropReason::Malformed(ChainError::Indirect { .. }) => stats.peer_indirect += 1,
                    DropReason::Malformed(ChainError::BadLength { .. })
                    | DropReason::Oversized { .. } => stats.peer_bad_length += 1,
                    DropReason::BadOffload(_) => stats.peer_bad_offload += 1,
                }
            }
        }
    }
    if let Some(cap) = cap {
        cap.done(out.rx_full, stats);
    }
    finish(copier, out, stats)
}

/// The rest of the per-poll counters, and the peer's kick if it asked for one.
fn finish<T: Transport>(
    copier: &mut Copier<T>,
    out: &Outcome,
    stats: &mut Stats,
) -> Result<(), transport::Error> {
    if out.throttled {
        stats.peer_throttled += 1;
    }
    if out.peer_wants_kick {
        notify(copier.link(), stats)?;
    } else if out.peer_kick_suppressed {
        stats.notifications_suppressed += 1;
    }
    Ok(())
}
