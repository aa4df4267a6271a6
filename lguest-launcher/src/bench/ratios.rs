//! Ratios to the baselines of the same run.
//!
//! Absolute numbers drift on a shared machine, so every sharenet figure is
//! also given against a yardstick measured minutes earlier: a stream cell
//! against SOCK_SEQPACKET (`ratio`) and the SPSC ring (`ratio_spsc`) at the
//! same frame size, a `--wait sleep` ping cell against the raw blocking
//! round trip of its own transport kind. Like with like: a sleeping ping
//! blocks in the same channel the raw round trip blocks in, so the ratio is
//! sharenet's own overhead; a polling ping (`spin`, `adaptive`) never
//! enters the kernel, and dividing it by a blocking round trip would
//! credit sharenet with the wake-up it skipped — those cells get no
//! ratio. One baseline gets a ratio too: our device-side queue
//! against rust-vmm's (`baseline-devq-sharenet` ÷
//! `baseline-devq-virtio-queue` Mchains/s, see [`super::devq`]).

use super::devq::DevqImpl;
use super::row::{find, same_config, Row};

/// Fill in `ratio`, `ratio_to` and `ratio_spsc` of every sharenet row.
pub fn add_ratios(rows: &mut [Row]) {
    let base: Vec<Row> = rows.iter().filter(|r| !r.is_cell()).cloned().collect();
    // What the exchange cells are compared with (rows are being written).
    let stamped: Vec<Row> = rows
        .iter()
        .filter(|r| r.key.workload == "stream-stamp")
        .cloned()
        .collect();
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
            "stream-stamp" => {
                if let (Some(m), Some(b)) = (
                    r.metrics.mpps,
                    find(&base, "baseline-spsc-batched", r.key.size).and_then(|b| b.metrics.mpps),
                ) {
                    r.ratio = Some(m / b);
                    r.ratio_to = Some("baseline-spsc-batched".into());
                }
            }
            // `--share exchange` against `--share guest`, same configuration.
            "stream-stamp-exchange" => {
                let guest =
                    same_config(&stamped, &r.key, "stream-stamp").and_then(|c| c.metrics.mpps);
                if let (Some(m), Some(g)) = (r.metrics.mpps, guest) {
                    r.ratio = Some(m / g);
                    r.ratio_to = Some("stream-stamp (--share guest)".into());
                }
            }
            "ping" if r.key.wait.as_deref() == Some("sleep") => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::row::RowKey;
    use crate::bench::summary::Measurement;

    fn ping(transport: &str, wait: Option<&str>, p50: f64) -> Row {
        let key = RowKey {
            transport: transport.into(),
            notify: wait.map(|_| "event-idx".into()),
            writes: wait.map(|_| "nonblocking".into()),
            wait: wait.map(Into::into),
            size: 64,
            workload: "ping".into(),
        };
        let m = Measurement {
            packets: 10,
            p50_us: Some(p50),
            ..Default::default()
        };
        Row::from_runs(key, &[m], &[], "p50_us")
    }

    #[test]
    fn only_sleeping_pings_are_compared_with_the_blocking_round_trip() {
        let mut rows = vec![
            ping("baseline-rtt-fifo", None, 15.0),
            ping("fifo", Some("sleep"), 21.0),
            ping("fifo", Some("spin"), 1.0),
            ping("fifo", Some("adaptive"), 1.2),
        ];
        add_ratios(&mut rows);
        assert!((rows[1].ratio.unwrap() - 1.4).abs() < 1e-9);
        assert_eq!(rows[1].ratio_to.as_deref(), Some("baseline-rtt-fifo"));
        assert_eq!(rows[2].ratio, None);
        assert_eq!(rows[3].ratio, None);
    }
}
