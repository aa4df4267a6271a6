//! "What to use": the run's own answer to "which configuration should I
//! pick?", derived from the rows of the same run, never written by hand.
//!
//! Four picks, each naming the configuration and the figure it won with:
//!
//! * **lowest latency** — the ping cell with the lowest p50;
//! * **highest throughput** — the stream cell with the highest Mpps at
//!   [`SIZE`] bytes;
//! * **lowest CPU per packet** — the stream cell at [`SIZE`] bytes with the
//!   fewest CPU seconds (both processes) per million packets;
//! * **best default** — a choice of *modes* (notify/writes/wait), since
//!   the transport is the user's to choose; see [`RULE`].
//!
//! The first three are single cells and may be flukes of a noisy machine
//! (a cell whose runs disagree is marked, as in the tables). The default
//! is judged on each mode's median over the transports, which one stray
//! cell cannot move.

use super::row::Row;
use super::summary::median;
use serde::Serialize;
use std::collections::BTreeMap;

/// Frame size the throughput and CPU picks are judged at: the usual MTU.
pub const SIZE: u32 = 1500;
/// A default must answer a ping within this many µs (p50).
pub const MAX_DEFAULT_PING_US: f64 = 10.0;
/// Figures within this fraction of the best count as ties on this machine.
pub const TIE: f64 = 0.10;

/// How the best default is chosen (printed with the pick).
pub const RULE: &str = "Per notify/writes/wait mode, the median over transports of \
Mpps and CPU s/Mpkt at 1500 B and of ping p50. Leave out wait spin (it burns a core on an \
idle link) and modes whose ping p50 is above 10 µs. Keep the modes within 10% of the best \
Mpps, then those within 10% of the lowest CPU per packet among them (closer than that is \
noise here), and take the lowest ping p50.";

/// One configuration picked for one reason.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Pick {
    /// `transport notify/writes/wait`.
    pub config: String,
    /// The figure it won with.
    pub value: f64,
    /// Its unit (`µs`, `Mpps`, `CPU s/Mpkt`).
    pub unit: String,
    /// Its runs disagreed by more than 2× (see the tables' marker).
    pub wide: bool,
}

/// The recommended modes and the medians they were judged by.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DefaultPick {
    /// Notify mode.
    pub notify: String,
    /// Writes mode.
    pub writes: String,
    /// Wait mode.
    pub wait: String,
    /// Median stream Mpps at [`SIZE`] B over the transports.
    pub mpps: f64,
    /// Median CPU s per million packets at [`SIZE`] B over the transports.
    pub cpu_s_per_mpkt: f64,
    /// Median ping p50 over the transports, µs.
    pub p50_us: f64,
    /// How many transports the medians are over.
    pub transports: u32,
}

/// The "What to use" section (`advice` in the JSON).
#[derive(Clone, Debug, Serialize, Default)]
pub struct Advice {
    /// Ping cell with the lowest p50.
    pub lowest_latency: Option<Pick>,
    /// Stream cell with the highest Mpps at [`SIZE`] B.
    pub highest_throughput: Option<Pick>,
    /// Stream cell with the lowest CPU per packet at [`SIZE`] B.
    pub lowest_cpu: Option<Pick>,
    /// The modes [`RULE`] picks; `None` when no mode qualifies.
    pub best_default: Option<DefaultPick>,
    /// [`RULE`].
    pub rule: String,
}

fn pick(rows: &[&Row], value: fn(&Row) -> Option<f64>, unit: &str, low: bool) -> Option<Pick> {
    let best = rows
        .iter()
        .filter_map(|r| value(r).filter(|v| v.is_finite()).map(|v| (r, v)))
        .reduce(|a, b| {
            let better = if low { b.1 < a.1 } else { b.1 > a.1 };
            if better {
                b
            } else {
                a
            }
        })?;
    Some(Pick {
        config: best.0.config_name(),
        value: best.1,
        unit: unit.into(),
        wide: best.0.spread.as_ref().is_some_and(|s| s.wide),
    })
}

/// Derive the advice from the rows of one run.
pub fn advise(rows: &[Row]) -> Advice {
    let cells: Vec<&Row> = rows.iter().filter(|r| r.is_cell() && r.ok()).collect();
    let pings: Vec<&Row> = cells
        .iter()
        .copied()
        .filter(|r| r.key.workload == "ping")
        .collect();
    let streams: Vec<&Row> = cells
        .iter()
        .copied()
        .filter(|r| r.key.workload == "stream" && r.key.size == SIZE)
        .collect();
    Advice {
        lowest_latency: pick(&pings, |r| r.metrics.p50_us, "µs", true),
        highest_throughput: pick(&streams, |r| r.metrics.mpps, "Mpps", false),
        lowest_cpu: pick(&streams, |r| r.metrics.cpu_s_per_mpkt, "CPU s/Mpkt", true),
        best_default: best_default(&streams, &pings),
        rule: RULE.into(),
    }
}

type Modes = (String, String, String);

fn modes(r: &Row) -> Option<Modes> {
    Some((
        r.key.notify.clone()?,
        r.key.writes.clone()?,
        r.key.wait.clone()?,
    ))
}

fn best_default(streams: &[&Row], pings: &[&Row]) -> Option<DefaultPick> {
    let mut by_mode: BTreeMap<Modes, (Vec<&Row>, Vec<&Row>)> = BTreeMap::new();
    for r in streams {
        if let Some(m) = modes(r) {
            by_mode.entry(m).or_default().0.push(r);
        }
    }
    for r in pings {
        if let Some(m) = modes(r) {
            by_mode.entry(m).or_default().1.push(r);
        }
    }
    let candidates: Vec<DefaultPick> = by_mode
        .into_iter()
        .filter(|((_, _, wait), _)| wait != "spin")
        .filter_map(|((notify, writes, wait), (st, pg))| {
            Some(DefaultPick {
                mpps: median(st.iter().map(|r| r.metrics.mpps))?,
                cpu_s_per_mpkt: median(st.iter().map(|r| r.metrics.cpu_s_per_mpkt))?,
                p50_us: median(pg.iter().map(|r| r.metrics.p50_us))?,
                transports: st.len() as u32,
                notify,
                writes,
                wait,
            })
        })
        .filter(|c| c.p50_us <= MAX_DEFAULT_PING_US)
        .collect();
    let best_mpps = candidates.iter().map(|c| c.mpps).reduce(f64::max)?;
    let fast: Vec<&DefaultPick> = candidates
        .iter()
        .filter(|c| c.mpps >= best_mpps * (1.0 - TIE))
        .collect();
    let low_cpu = fast.iter().map(|c| c.cpu_s_per_mpkt).reduce(f64::min)?;
    fast.into_iter()
        .filter(|c| c.cpu_s_per_mpkt <= low_cpu * (1.0 + TIE))
        .min_by(|a, b| a.p50_us.total_cmp(&b.p50_us))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::row::RowKey;
    use crate::bench::summary::Measurement;

    fn cell(t: &str, notify: &str, wait: &str, workload: &str, m: Measurement) -> Row {
        let key = RowKey {
            transport: t.into(),
            notify: Some(notify.into()),
            writes: Some("nonblocking".into()),
            wait: Some(wait.into()),
            size: if workload == "ping" { 64 } else { SIZE },
            workload: workload.into(),
        };
        let headline = if workload == "ping" { "p50_us" } else { "mpps" };
        Row::from_runs(key, &[m], &[], headline)
    }

    fn stream(t: &str, notify: &str, wait: &str, mpps: f64, cpu: f64) -> Row {
        let m = Measurement {
            packets: 1,
            mpps: Some(mpps),
            cpu_s_per_mpkt: Some(cpu),
            ..Default::default()
        };
        cell(t, notify, wait, "stream", m)
    }

    fn ping(t: &str, notify: &str, wait: &str, p50: f64) -> Row {
        let m = Measurement {
            packets: 1,
            p50_us: Some(p50),
            ..Default::default()
        };
        cell(t, notify, wait, "ping", m)
    }

    #[test]
    fn picks_come_from_the_runs_own_numbers() {
        let rows = vec![
            stream("fifo", "always", "sleep", 3.0, 0.40),
            stream("fifo", "always", "spin", 4.0, 0.60),
            stream("fifo", "event-idx", "adaptive", 3.6, 0.66),
            stream("fifo", "always", "adaptive", 3.7, 0.64),
            ping("fifo", "always", "sleep", 20.0),
            ping("fifo", "always", "spin", 0.9),
            ping("fifo", "event-idx", "adaptive", 1.5),
            ping("fifo", "always", "adaptive", 3.5),
        ];
        let a = advise(&rows);
        let name = |p: Option<Pick>| p.map(|p| p.config).unwrap_or_default();
        assert_eq!(name(a.lowest_latency), "fifo always/nonblocking/spin");
        assert_eq!(name(a.highest_throughput), "fifo always/nonblocking/spin");
        assert_eq!(name(a.lowest_cpu), "fifo always/nonblocking/sleep");
        // sleep is out (ping 20 µs), spin is out (burns a core); the two
        // adaptive modes tie on Mpps and CPU, so the lower ping wins.
        let d = a.best_default.expect("a default");
        assert_eq!(
            (d.notify.as_str(), d.wait.as_str()),
            ("event-idx", "adaptive")
        );
    }

    #[test]
    fn no_default_when_no_mode_answers_a_ping_in_time() {
        let rows = vec![
            stream("fifo", "always", "sleep", 3.0, 0.40),
            ping("fifo", "always", "sleep", 20.0),
        ];
        assert!(advise(&rows).best_default.is_none());
    }
}
