//! `--svg`: two charts in one SVG file.
//!
//! * **Top — stream throughput by frame size.** One line per transport ×
//!   wait mode (the best notify/writes configuration of that pair at each
//!   size, so the chart stays readable; the table has every cell), with the
//!   SOCK_SEQPACKET and SPSC baselines drawn in black and grey. Both axes
//!   are logarithmic: 64 B and 9000 B differ by two orders of magnitude,
//!   and so do sleeping and spinning.
//! * **Bottom — ping latency per transport.** One bar per transport × wait
//!   mode (the best notify configuration), p50 as the bar and p99 as a
//!   dot, above the raw round trips of pipe, FIFO, eventfd and unix socket;
//!   the x axis is logarithmic.
//!
//! Drawn with plotters' SVG backend only (no font files: text is left to
//! the SVG viewer).

use super::json::Document;
use super::row::{lowest, Row};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use std::path::Path;

const WAITS: [&str; 3] = ["sleep", "spin", "adaptive"];
const TRANSPORTS: [&str; 3] = ["fifo", "unix", "eventfd"];
/// One colour per transport × wait (Tableau 10), so no pale yellow.
const COLORS: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(23, 190, 207),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(188, 189, 34),
    RGBColor(44, 160, 44),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];

fn color_of(transport: &str, wait: &str) -> RGBColor {
    let t = TRANSPORTS.iter().position(|x| *x == transport).unwrap_or(0);
    let w = WAITS.iter().position(|x| *x == wait).unwrap_or(0);
    COLORS[t * 3 + w]
}

fn fmt_log(x: f64) -> String {
    if x < 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.0}")
    }
}

type DrawResult<T> = Result<T, Box<dyn std::error::Error>>;

fn ok_cells<'a>(doc: &'a Document, workload: &'a str) -> impl Iterator<Item = &'a Row> + 'a {
    doc.results
        .iter()
        .filter(move |r| r.status == "ok" && r.key.workload == workload)
}

/// Write both charts to `path`.
pub fn write_svg(doc: &Document, path: &Path) -> DrawResult<()> {
    let root = SVGBackend::new(path, (1100, 1150)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(560);
    throughput(doc, &top)?;
    latency(doc, &bottom)?;
    root.present()?;
    Ok(())
}

/// One series: a label, its colour and (size, Mpps) points.
type Series = (String, RGBColor, Vec<(f64, f64)>);

fn throughput_series(doc: &Document) -> Vec<Series> {
    let mut out = Vec::new();
    for t in TRANSPORTS {
        for w in WAITS {
            let mut pts: Vec<(f64, f64)> = Vec::new();
            let mut sizes: Vec<u32> = ok_cells(doc, "stream")
                .filter(|r| r.key.transport == t && r.key.wait.as_deref() == Some(w))
                .map(|r| r.key.size)
                .collect();
            sizes.sort_unstable();
            sizes.dedup();
            for s in sizes {
                let best = ok_cells(doc, "stream")
                    .filter(|r| {
                        r.key.transport == t && r.key.wait.as_deref() == Some(w) && r.key.size == s
                    })
                    .filter_map(|r| r.metrics.mpps)
                    .fold(f64::NAN, f64::max);
                if best.is_finite() && best > 0.0 {
                    pts.push((s as f64, best));
                }
            }
            if !pts.is_empty() {
                out.push((format!("{t} {w}"), color_of(t, w), pts));
            }
        }
    }
    out
}

fn baseline_series(doc: &Document, transport: &str) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = doc
        .results
        .iter()
        .filter(|r| r.status == "ok" && r.key.transport == transport)
        .filter_map(|r| {
            r.metrics
                .mpps
                .filter(|m| *m > 0.0)
                .map(|m| (r.key.size as f64, m))
        })
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts
}

fn throughput(
    doc: &Document,
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
) -> DrawResult<()> {
    let series = throughput_series(doc);
    let seq = baseline_series(doc, "baseline-seqpacket");
    let spsc = baseline_series(doc, "baseline-spsc");
    let all = series
        .iter()
        .flat_map(|(_, _, p)| p.iter())
        .chain(seq.iter())
        .chain(spsc.iter());
    let (lo, hi) = all.fold((f64::INFINITY, 0.0f64), |(lo, hi), &(_, y)| {
        (lo.min(y), hi.max(y))
    });
    let (lo, hi) = if hi > 0.0 {
        (lo / 2.0, hi * 2.0)
    } else {
        (0.01, 100.0)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(
            "One-way stream: Mpps by frame size (best notify/writes per transport × wait)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        // Room right of 9000 B for the legend.
        .build_cartesian_2d((40f64..80_000f64).log_scale(), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("frame size (bytes)")
        .y_desc("Mpps (log)")
        .x_label_formatter(&|x| fmt_log(*x))
        .y_label_formatter(&|y| fmt_log(*y))
        .light_line_style(WHITE)
        .draw()?;
    for (label, color, pts) in &series {
        let color = color.to_rgba();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    for (label, pts, color) in [
        ("baseline SOCK_SEQPACKET", &seq, BLACK.to_rgba()),
        (
            "baseline SPSC ring (spin)",
            &spsc,
            RGBAColor(128, 128, 128, 1.0),
        ),
    ] {
        if pts.is_empty() {
            continue;
        }
        chart
            .draw_series(DashedLineSeries::new(
                pts.clone(),
                6,
                4,
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            pts.iter()
                .map(|&p| TriangleMarker::new(p, 5, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}

/// One bar: label, p50, p99, and whether it is a baseline.
type Bar = (String, f64, Option<f64>, bool);

fn latency_bars(doc: &Document) -> Vec<Bar> {
    let raw = |k: &str| {
        let name = format!("baseline-rtt-{k}");
        doc.results
            .iter()
            .find(|r| r.status == "ok" && r.key.transport == name)
            .and_then(|r| {
                r.metrics
                    .p50_us
                    .map(|p50| (format!("raw {k} round trip"), p50, r.metrics.p99_us, true))
            })
    };
    // Drawn bottom-up: each transport's own raw round trip under its cells.
    let mut bars: Vec<Bar> = raw("pipe").into_iter().collect();
    for t in TRANSPORTS {
        bars.extend(raw(t));
        for w in WAITS {
            let best = lowest(
                ok_cells(doc, "ping")
                    .filter(|r| r.key.transport == t && r.key.wait.as_deref() == Some(w)),
                |r| r.metrics.p50_us,
            );
            if let Some(r) = best {
                bars.push((
                    format!("{t} {w} ({})", r.key.notify.as_deref().unwrap_or("-")),
                    r.metrics.p50_us.unwrap_or(0.0),
                    r.metrics.p99_us,
                    false,
                ));
            }
        }
    }
    bars
}

fn latency(
    doc: &Document,
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
) -> DrawResult<()> {
    let bars = latency_bars(doc);
    let n = bars.len().max(1) as i32;
    // A segmented range 0..=last has exactly one segment per bar.
    let last = n - 1;
    let hi = bars
        .iter()
        .map(|b| b.2.unwrap_or(b.1).max(b.1))
        .fold(1.0f64, f64::max)
        * 2.0;
    let lo = bars.iter().map(|b| b.1).fold(f64::INFINITY, f64::min);
    let lo = if lo.is_finite() && lo > 0.0 {
        lo / 3.0
    } else {
        0.1
    };
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Ping-pong 64 B: round trip p50 (bar) and p99 (dot), µs — best notify per transport × wait",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(230)
        .build_cartesian_2d((lo..hi).log_scale(), (0..last).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(bars.len().max(1))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("µs (log)")
        .x_label_formatter(&|x| fmt_log(*x))
        .light_line_style(WHITE)
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let i = i as i32;
        let color = if b.3 {
            RGBAColor(150, 150, 150, 1.0)
        } else {
            let mut words = b.0.split(' ');
            let (t, w) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            color_of(t, w).to_rgba()
        };
        let mut r = Rectangle::new(
            [
                (lo, SegmentValue::Exact(i)),
                (b.1, SegmentValue::Exact(i + 1)),
            ],
            color.filled(),
        );
        r.set_margin(4, 4, 0, 0);
        r
    }))?;
    chart.draw_series(bars.iter().enumerate().filter_map(|(i, b)| {
        b.2.map(|p99| Circle::new((p99, SegmentValue::CenterOf(i as i32)), 4, BLACK.filled()))
    }))?;
    Ok(())
}
