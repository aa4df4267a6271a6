//! The measuring loop every sharenet cell and every baseline shares.

use super::error::BenchError;
use super::row::{Row, RowKey};
use super::summary::Measurement;

/// Run `once` for runs `0..runs` (calling `tick` after each, for the
/// progress bar) and fold the results into a row. A failed run is counted
/// and its error kept (the first one becomes the row's `error`); the
/// others carry on.
pub fn measure(
    key: RowKey,
    runs: u32,
    headline: &str,
    mut once: impl FnMut(u32) -> Result<Measurement, BenchError>,
    mut tick: impl FnMut(),
) -> Row {
    let mut ok = Vec::new();
    let mut failures = Vec::new();
    for run in 0..runs {
        match once(run) {
            Ok(m) => ok.push(m),
            Err(e) => failures.push(e.to_string()),
        }
        tick();
    }
    Row::from_runs(key, &ok, &failures, headline)
}
