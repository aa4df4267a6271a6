//! Ratios to the baselines of the same run.
//!
//! Absolute numbers drift on a shared machine, so every sharenet figure is
//! also given against a yardstick measured minutes earlier: a stream cell
//! against SOCK_SEQPACKET (`ratio`) and the SPSC ring (`ratio_spsc`) at the
//! same frame size, a ping cell against the raw round trip of its own
//! transport kind. One baseline gets a ratio too: our device-side queue
//! against rust-vmm's (`baseline-devq-sharenet` ÷
//! `baseline-devq-virtio-queue` Mchains/s, see [`super::devq`]).

use super::devq::DevqImpl;
use super::row::{find, Row};

/// Fill in `ratio`, `ratio_to` and `ratio_spsc` of every sharenet row.
pub fn add_ratios(rows: &mut [Row]) {
    let base: Vec<Row> = rows.iter().filter(|r| !r.is_cell()).cloned().collect();
    for r in rows.iter_mut().filter(|r| r.is_cell() && r.ok()) {
        match r.key.workload.as_str() {
            "stream" => {
                if let (Some(m), Some(b)) = (
                    r.metrics.mpps,
                    find(&base, "baseline-seqpacket", r.key.size).and_then(|b| b.metrics.mpps),
                ) {
                    r.ratio = Some(m / b);
                    r.ratio_to = Some("baseline-seqpacket".into());
                }
                if let (Some(m), Some(b)) = (
                    r.metrics.mpps,
                    find(&base, "baseline-spsc", r.key.size).and_then(|b| b.metrics.mpps),
                ) {
                    r.ratio_spsc = Some(m / b);
                }
            }
            "ping" => {
                let to = format!("baseline-rtt-{}", r.key.transport);
                if let (Some(p), Some(b)) = (
                    r.metrics.p50_us,
                    base.iter()
                        .find(|b| b.key.transport == to && b.ok())
                        .and_then(|b| b.metrics.p50_us),
                ) {
                    r.ratio = Some(p / b);
                    r.ratio_to = Some(to);
                }
            }
            _ => {}
        }
    }
    let theirs = find(
        &base,
        DevqImpl::VirtioQueue.transport(),
        super::devq::BUF_LEN,
    )
    .and_then(|b| b.metrics.mpps);
    let ours = DevqImpl::Sharenet.transport();
    for r in rows
        .iter_mut()
        .filter(|r| r.key.transport == ours && r.ok())
    {
        if let (Some(m), Some(b)) = (r.metrics.mpps, theirs) {
            r.ratio = Some(m / b);
            r.ratio_to = Some(DevqImpl::VirtioQueue.transport().into());
        }
    }
}
