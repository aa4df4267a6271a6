//! Repeats into one figure: the median, and the min–max spread.
//!
//! Each cell runs a few times; a single run on a noisy 2-vCPU guest can be
//! off by 2–3× (vCPU placement), so the report gives the median of each
//! metric over the runs that succeeded and the range of the headline one.

use serde::Serialize;

/// One successful run of a cell or baseline. Fields that do not apply are
/// `None`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Measurement {
    /// Packets moved (or round trips timed).
    pub packets: u64,
    /// Million packets per second.
    pub mpps: Option<f64>,
    /// Gigabits per second of frame bytes.
    pub gbps: Option<f64>,
    /// Gigabytes per second (memcpy).
    pub gbytes_per_s: Option<f64>,
    /// Notifications written by both sides, per packet.
    pub notifications_per_packet: Option<f64>,
    /// Wake-ups from sleep on both sides, per packet.
    pub wakeups_per_packet: Option<f64>,
    /// CPU seconds of both processes per million packets.
    pub cpu_s_per_mpkt: Option<f64>,
    /// Idle periods of both sides that ended in work while spinning, per
    /// packet (`spin_hits` in the stats).
    pub spin_hits_per_packet: Option<f64>,
    /// Sleeps of both sides per packet (`sleeps` in the stats).
    pub sleeps_per_packet: Option<f64>,
    /// One-way blocking wake-up latency over a channel of the cell's
    /// transport kind, p50 and p99 in µs: the HDR histogram `adaptive`
    /// measures at connect to calibrate its spin (measuring side; none
    /// for other wait modes).
    pub wakeup_p50_us: Option<f64>,
    /// See `wakeup_p50_us`.
    pub wakeup_p99_us: Option<f64>,
    /// Wake-up latency measured during the run on the measuring side, from
    /// the peer's kick to running (`wakeup_latency_p50_us` of its stats:
    /// the upper bound of the log2 bucket), µs; none when it never slept.
    pub wakeup_latency_p50_us: Option<f64>,
    /// See `wakeup_latency_p50_us`, 99th percentile.
    pub wakeup_latency_p99_us: Option<f64>,
    /// Round trip, median, µs.
    pub p50_us: Option<f64>,
    /// Round trip, 99th percentile, µs.
    pub p99_us: Option<f64>,
    /// Round trip, 99.9th percentile, µs.
    pub p999_us: Option<f64>,
}

/// The range of the headline metric over the runs, in that metric's unit.
#[derive(Clone, Debug, Serialize)]
pub struct Spread {
    /// Which metric (`mpps`, `p50_us`, `gbytes_per_s`).
    pub metric: String,
    /// The unit of `min` and `max` (`Mpps`, `µs`, `GB/s`): the unit of
    /// the figure the spread belongs to, never another column's.
    pub unit: String,
    /// Smallest value seen.
    pub min: f64,
    /// Largest value seen.
    pub max: f64,
    /// The runs disagree too much to trust the median alone: a run below
    /// half the median or above twice it (see [`is_wide`]).
    pub wide: bool,
}

/// How far a run may stray from the median before the cell is flagged:
/// a factor of 2 either way. A cell whose slowest run is under half its
/// median is bimodal (one run lost a vCPU, say), not merely noisy.
pub const WIDE_FACTOR: f64 = 2.0;

/// A spread is wide when its min is below `median / WIDE_FACTOR` or its
/// max above `median * WIDE_FACTOR`.
pub fn is_wide(min: f64, max: f64, median: f64) -> bool {
    median > 0.0 && (min < median / WIDE_FACTOR || max > median * WIDE_FACTOR)
}

/// The unit a headline metric is given in.
pub fn unit_of(metric: &str) -> &'static str {
    match metric {
        "p50_us" => "µs",
        "gbytes_per_s" => "GB/s",
        "cpu_s_per_mpkt" => "CPU s/Mpkt",
        _ => "Mpps",
    }
}

/// Median of the values present; `None` when no run had one.
pub fn median(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let mut v: Vec<f64> = values
        .into_iter()
        .flatten()
        .filter(|x| x.is_finite())
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Min and max of the values present, flagged [`Spread::wide`] against
/// their median; `None` when no run had a value.
pub fn spread(metric: &str, values: impl IntoIterator<Item = Option<f64>>) -> Option<Spread> {
    let v: Vec<f64> = values
        .into_iter()
        .flatten()
        .filter(|x| x.is_finite())
        .collect();
    let min = v.iter().copied().reduce(f64::min)?;
    let max = v.iter().copied().reduce(f64::max)?;
    let mid = median(v.iter().copied().map(Some))?;
    Some(Spread {
        metric: metric.into(),
        unit: unit_of(metric).into(),
        min,
        max,
        wide: is_wide(min, max, mid),
    })
}

/// Combine runs metric by metric.
pub fn combine(runs: &[Measurement]) -> Measurement {
    macro_rules! med {
        ($f:ident) => {
            median(runs.iter().map(|m| m.$f))
        };
    }
    Measurement {
        packets: runs.iter().map(|m| m.packets).max().unwrap_or(0),
        mpps: med!(mpps),
        gbps: med!(gbps),
        gbytes_per_s: med!(gbytes_per_s),
        notifications_per_packet: med!(notifications_per_packet),
        wakeups_per_packet: med!(wakeups_per_packet),
        cpu_s_per_mpkt: med!(cpu_s_per_mpkt),
        spin_hits_per_packet: med!(spin_hits_per_packet),
        sleeps_per_packet: med!(sleeps_per_packet),
        wakeup_p50_us: med!(wakeup_p50_us),
        wakeup_p99_us: med!(wakeup_p99_us),
        wakeup_latency_p50_us: med!(wakeup_latency_p50_us),
        wakeup_latency_p99_us: med!(wakeup_latency_p99_us),
        p50_us: med!(p50_us),
        p99_us: med!(p99_us),
        p999_us: med!(p999_us),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_count_is_mean_of_middle_two() {
        assert_eq!(
            median([Some(1.0), Some(3.0), None, Some(2.0), Some(10.0)]),
            Some(2.5)
        );
        assert_eq!(median([Some(5.0), Some(1.0), Some(3.0)]), Some(3.0));
        assert_eq!(median([None, None]), None);
    }

    #[test]
    fn spread_ignores_missing_and_non_finite_values() {
        let s = spread("mpps", [Some(2.0), None, Some(f64::NAN), Some(1.0)]).unwrap();
        assert_eq!((s.min, s.max), (1.0, 2.0));
        assert!(spread("mpps", [None]).is_none());
    }

    #[test]
    fn spread_is_in_the_unit_of_its_own_metric() {
        let unit = |m| spread(m, [Some(1.0)]).unwrap().unit;
        assert_eq!(unit("mpps"), "Mpps");
        assert_eq!(unit("p50_us"), "µs");
        assert_eq!(unit("gbytes_per_s"), "GB/s");
    }

    #[test]
    fn run_under_half_the_median_flags_the_spread_as_wide() {
        // The cell: 0.99 Mpps among neighbours at 3.8.
        assert!(
            spread("mpps", [Some(3.8), Some(0.99), Some(3.9)])
                .unwrap()
                .wide
        );
        assert!(
            !spread("mpps", [Some(3.8), Some(3.0), Some(3.9)])
                .unwrap()
                .wide
        );
        // Latency: one round trip far above the median is the outlier.
        assert!(
            spread("p50_us", [Some(2.0), Some(2.1), Some(9.0)])
                .unwrap()
                .wide
        );
        assert!(!spread("p50_us", [Some(20.0)]).unwrap().wide);
    }
}
