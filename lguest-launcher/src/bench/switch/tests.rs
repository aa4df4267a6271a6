//! Unit tests of the switch rows: the plan and the ratios.

use super::*;

#[test]
fn plan_pairs_every_switch_row_with_a_direct_one() {
    let cells = plan(&Kind::ALL, &PAIRS, true, 1.0);
    let spread = cells.iter().filter(|c| c.one_cpu.is_none()).count();
    assert_eq!(spread, 12);
    // Direct and push switch again, pinned, for each N and wait.
    let pinned = if crate::cli::online_cpus() > 1 { 8 } else { 0 };
    assert_eq!(cells.len() - spread, pinned);
    assert!(cells.iter().all(|c| c.kind == Kind::Eventfd));
    for c in cells.iter().filter(|c| c.via != Via::Direct) {
        assert!(cells.iter().any(|d| d.via == Via::Direct
            && d.pairs == c.pairs
            && d.wait == c.wait
            && d.one_cpu == c.one_cpu));
    }
    assert!(plan(&[], &PAIRS, true, 1.0).is_empty());
}

#[test]
fn switch_rows_get_their_cpu_ratio_over_the_direct_row() {
    let row = |cell: &SwitchCell, cpu: f64| {
        let m = Measurement {
            packets: 10,
            mpps: Some(1.0),
            cpu_s_per_mpkt: Some(cpu),
            ..Default::default()
        };
        Row::from_runs(cell.key(), &[m], &[], "mpps")
    };
    let cells = plan(&[Kind::Unix], &[2], true, 1.0);
    let mut rows: Vec<Row> = cells
        .iter()
        .map(|c| {
            let cpu = match c.via {
                Via::Direct => 0.4,
                Via::Switch => 0.6,
                Via::SwitchPull => 0.8,
            };
            row(c, cpu)
        })
        .collect();
    add_ratios(&mut rows);
    let sw = rows
        .iter()
        .find(|r| r.key.workload == "pairs-2-switch")
        .unwrap();
    assert!((sw.ratio.unwrap() - 1.5).abs() < 1e-9);
    let md = markdown(&rows);
    assert!(
        md.contains("| pairs-2-switch | unix | adaptive | 1.00 | 0.600 | 0.200 | 1.50 |"),
        "{md}"
    );
    assert!(
        md.contains("| pairs-2-switch-pull | unix | adaptive | 1.00 | 0.800 | 0.400 | 2.00 |"),
        "{md}"
    );
    // A one-CPU switch row is compared with the one-CPU direct row.
    let mut pinned: Vec<Row> = [Via::Direct, Via::Switch]
        .into_iter()
        .zip([0.5, 0.55])
        .map(|(via, cpu)| {
            let c = SwitchCell {
                via,
                one_cpu: Some(0),
                ..cells[0].clone()
            };
            row(&c, cpu)
        })
        .chain(rows.iter().cloned())
        .collect();
    add_ratios(&mut pinned);
    let sw = pinned
        .iter()
        .find(|r| r.key.workload == "pairs-2-switch-one-cpu")
        .unwrap();
    assert!((sw.ratio.unwrap() - 1.1).abs() < 1e-9, "{:?}", sw.ratio);
    assert_eq!(
        sw.ratio_to.as_deref(),
        Some("pairs-2-direct-one-cpu (CPU/frame)")
    );
}

#[test]
fn switch_rows_run_at_least_five_times_unless_one_run_is_asked() {
    let cell = plan(&[Kind::Eventfd], &[2], true, 1.0).remove(0);
    assert_eq!(cell.runs(1), 1, "the smoke test's single run stays single");
    assert_eq!(cell.runs(3), 5);
    assert_eq!(cell.runs(7), 7);
}
