//! The row model: one line of the results, for a cell or a baseline.
//!
//! One [`Row`] per cell or baseline, the same shape for both so a script
//! can filter on `transport` (`fifo`, `unix`, `eventfd`, or
//! `baseline-seqpacket`, `baseline-spsc`, `baseline-memcpy`,
//! `baseline-devq-sharenet`, `baseline-devq-virtio-queue`,
//! `baseline-rtt-pipe|fifo|eventfd|unix`) and `workload`. Figures that do
//! not apply to a row are `null`.

use super::summary::{combine, spread, Measurement, Spread};
use serde::Serialize;

/// One line of the results.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// What the row is about (transport, modes, size, workload).
    #[serde(flatten)]
    pub key: RowKey,
    /// The figures: medians over the runs that succeeded.
    #[serde(flatten)]
    pub metrics: Measurement,
    /// Runs that succeeded (the medians are over these).
    pub runs: u32,
    /// Runs that failed.
    pub failed_runs: u32,
    /// Min–max of the headline metric over the runs.
    pub spread: Option<Spread>,
    /// Ratio to the relevant baseline: stream Mpps ÷ seqpacket Mpps;
    /// `--wait sleep` ping p50 ÷ raw blocking round-trip p50 of the same
    /// channel (polling pings have none; see [`super::ratios`]).
    pub ratio: Option<f64>,
    /// Which baseline `ratio` is against.
    pub ratio_to: Option<String>,
    /// Stream Mpps ÷ SPSC-ring Mpps at the same size.
    pub ratio_spsc: Option<f64>,
    /// `ok` (at least one run succeeded) or `failed`.
    pub status: String,
    /// The first failure seen, if any run failed.
    pub error: Option<String>,
}

/// What identifies a row, before any figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RowKey {
    /// `fifo`, `unix`, `eventfd`, or `baseline-...`.
    pub transport: String,
    /// Notify mode (sharenet cells only).
    pub notify: Option<String>,
    /// Writes mode (sharenet cells only).
    pub writes: Option<String>,
    /// Wait mode (sharenet cells only).
    pub wait: Option<String>,
    /// Frame (or copy) size in bytes.
    pub size: u32,
    /// `stream`, `ping`, `memcpy` or `devq`.
    pub workload: String,
}

impl Row {
    /// Fold the runs of one cell into a row; `headline` names the metric
    /// whose spread is reported; `failures` are the failed runs' errors.
    pub fn from_runs(
        key: RowKey,
        runs: &[Measurement],
        failures: &[String],
        headline: &str,
    ) -> Row {
        let m = combine(runs);
        let spread = match headline {
            "p50_us" => spread(headline, runs.iter().map(|r| r.p50_us)),
            "gbytes_per_s" => spread(headline, runs.iter().map(|r| r.gbytes_per_s)),
            "cpu_s_per_mpkt" => spread(headline, runs.iter().map(|r| r.cpu_s_per_mpkt)),
            _ => spread(headline, runs.iter().map(|r| r.mpps)),
        };
        Row {
            key,
            metrics: m,
            runs: runs.len() as u32,
            failed_runs: failures.len() as u32,
            spread,
            ratio: None,
            ratio_to: None,
            ratio_spsc: None,
            status: if runs.is_empty() { "failed" } else { "ok" }.into(),
            error: failures.first().cloned(),
        }
    }

    /// A sharenet cell (not a `baseline-...` row).
    pub fn is_cell(&self) -> bool {
        !self.key.transport.starts_with("baseline-")
    }

    /// At least one run succeeded.
    pub fn ok(&self) -> bool {
        self.status == "ok"
    }

    /// `transport notify/writes/wait`, `-` for what does not apply.
    pub fn config_name(&self) -> String {
        format!(
            "{} {}/{}/{}",
            self.key.transport,
            self.key.notify.as_deref().unwrap_or("-"),
            self.key.writes.as_deref().unwrap_or("-"),
            self.key.wait.as_deref().unwrap_or("-")
        )
    }
}

/// Of `rows`, the one with the highest `metric` (the last such, as
/// `max_by` picks), skipping rows without the figure.
pub fn highest<'a>(
    rows: impl Iterator<Item = &'a Row>,
    metric: impl Fn(&Row) -> Option<f64>,
) -> Option<&'a Row> {
    rows.filter_map(|r| metric(r).map(|v| (r, v)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(r, _)| r)
}

/// Of `rows`, the one with the lowest `metric` (the first such, as
/// `min_by` picks), skipping rows without the figure.
pub fn lowest<'a>(
    rows: impl Iterator<Item = &'a Row>,
    metric: impl Fn(&Row) -> Option<f64>,
) -> Option<&'a Row> {
    rows.filter_map(|r| metric(r).map(|v| (r, v)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(r, _)| r)
}

/// The successful cell of `workload` with `key`'s transport, modes and
/// size (`key` is another cell's: the same configuration, another workload).
pub fn same_config<'a>(rows: &'a [Row], key: &RowKey, workload: &str) -> Option<&'a Row> {
    let want = RowKey {
        workload: workload.into(),
        ..key.clone()
    };
    rows.iter().find(|r| r.key == want && r.is_cell() && r.ok())
}

/// The first successful row of `transport` at `size`.
pub fn find<'a>(rows: &'a [Row], transport: &str, size: u32) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.key.transport == transport && r.key.size == size && r.ok())
}
