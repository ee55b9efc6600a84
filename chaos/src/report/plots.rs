//! The report's three plots as SVG strings: latency and throughput over time with the
//! faults shaded, and the histogram of revoke ack → last command / safe-stop.

use super::{Clock, Drawn, FaultBand};
use crate::history::{Body, History, Outcome};
use plotters::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;

const FAULT_SHADE: RGBColor = RGBColor(250, 200, 120);
const OK: RGBColor = RGBColor(40, 150, 60);
const FAIL: RGBColor = RGBColor(220, 140, 0);
const INFO: RGBColor = RGBColor(200, 30, 30);
const SIZE: (u32, u32) = (980, 280);
const FONT: (&str, u32) = ("sans-serif", 15);

fn outcome_colour(o: Outcome) -> RGBColor {
    match o {
        Outcome::Ok => OK,
        Outcome::Fail => FAIL,
        Outcome::Info => INFO,
    }
}

/// Draws a chart's legend and finishes its drawing.
macro_rules! legend_and_present {
    ($chart:expr, $root:expr) => {
        $chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        $root.present()?;
    };
}

/// Shades every fault band over the whole height of a chart.
macro_rules! shade {
    ($chart:expr, $bands:expr, $low:expr, $high:expr) => {
        $chart.draw_series($bands.iter().map(|b| {
            Rectangle::new(
                [(b.from_s, $low), (b.to_s, $high)],
                FAULT_SHADE.mix(0.45).filled(),
            )
        }))?
    };
}

/// Every completed operation's latency (log scale) over time, by outcome.
pub(super) fn latency_plot(history: &History, clock: &Clock, bands: &[FaultBand]) -> Drawn {
    let mut points: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for op in history.operations() {
        let (Some(a), Some(b)) = (op.invoke_ms(), op.complete_ms()) else {
            continue;
        };
        let name = match op.outcome() {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
        };
        points
            .entry(name)
            .or_default()
            .push((clock.s(a), (b - a).max(0.1)));
    }
    let high = points.values().flatten().map(|p| p.1).fold(10.0, f64::max) * 1.5;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Operation latency (faults shaded)", FONT)
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..clock.end_s, (0.1f64..high).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("seconds since the run began")
            .y_desc("ms")
            .draw()?;
        shade!(chart, bands, 0.1, high);
        for (name, outcome) in [
            ("ok", Outcome::Ok),
            ("fail", Outcome::Fail),
            ("info", Outcome::Info),
        ] {
            let colour = outcome_colour(outcome);
            let series = points.get(name).cloned().unwrap_or_default();
            chart
                .draw_series(
                    series
                        .into_iter()
                        .map(|p| Circle::new(p, 2, colour.mix(0.6).filled())),
                )?
                .label(name)
                .legend(move |(x, y)| Circle::new((x, y), 4, colour.filled()));
        }
        legend_and_present!(chart, root);
    }
    Ok(svg)
}

/// Per half second: operations by outcome and the robots' applied commands, per second.
pub(super) fn throughput_plot(history: &History, clock: &Clock, bands: &[FaultBand]) -> Drawn {
    const BUCKET_S: f64 = 0.5;
    let buckets = (clock.end_s / BUCKET_S).ceil() as usize + 1;
    let mut rows: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for name in ["ok", "fail", "info", "commands"] {
        rows.insert(name, vec![0.0; buckets]);
    }
    let mut stops = Vec::new();
    for e in &history.events {
        let name = match &e.body {
            Body::Ok { .. } => "ok",
            Body::Fail { .. } => "fail",
            Body::Info { .. } => "info",
            Body::CommandApplied { .. } => "commands",
            Body::SafeStop { .. } => {
                stops.push(clock.s(e.t_ms));
                continue;
            }
            _ => continue,
        };
        let i = ((clock.s(e.t_ms) / BUCKET_S) as usize).min(buckets - 1);
        if let Some(row) = rows.get_mut(name) {
            row[i] += 1.0 / BUCKET_S;
        }
    }
    let high = rows.values().flatten().fold(1.0, |a: f64, b| a.max(*b)) * 1.15;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Throughput and robot commands per second (faults shaded, safe-stops as ticks)",
                FONT,
            )
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..clock.end_s, 0f64..high)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the run began")
            .y_desc("per second")
            .draw()?;
        shade!(chart, bands, 0.0, high);
        let lines = [
            ("ok", OK),
            ("fail", FAIL),
            ("info", INFO),
            ("commands", BLUE),
        ];
        for (name, colour) in lines {
            let row = &rows[name];
            let series = row
                .iter()
                .enumerate()
                .map(|(i, v)| (i as f64 * BUCKET_S, *v));
            chart
                .draw_series(LineSeries::new(series, colour.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour));
        }
        chart
            .draw_series(
                stops.iter().map(|s| {
                    PathElement::new([(*s, 0.0), (*s, high * 0.08)], BLACK.stroke_width(2))
                }),
            )?
            .label("safe-stop")
            .legend(|(x, y)| PathElement::new([(x + 8, y - 6), (x + 8, y + 6)], BLACK));
        legend_and_present!(chart, root);
    }
    Ok(svg)
}

/// The bounded-control checker's samples in `verdicts`: (bound, figure) → milliseconds.
pub(super) fn control_samples(verdicts: &Value) -> BTreeMap<(String, String), Vec<f64>> {
    let mut out = BTreeMap::new();
    let bounded = verdicts
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["checker"] == "bounded_control");
    for bound in ["push", "lease"] {
        for figure in ["ack_to_last_command_ms", "ack_to_safe_stop_ms"] {
            let values: Vec<f64> = bounded
                .and_then(|v| v["detail"][bound]["samples"][figure].as_array())
                .into_iter()
                .flatten()
                .filter_map(Value::as_f64)
                .collect();
            out.insert((bound.to_owned(), figure.to_owned()), values);
        }
    }
    out
}

/// Histograms of revoke ack → last command and → safe-stop, over both bounds.
pub(super) fn control_histogram(verdicts: &Value) -> Drawn {
    const BINS: usize = 24;
    let samples = control_samples(verdicts);
    let series: Vec<(String, RGBColor, Vec<f64>)> = [
        ("ack_to_last_command_ms", "revoke ack → last command", FAIL),
        ("ack_to_safe_stop_ms", "revoke ack → safe-stop", BLUE),
    ]
    .into_iter()
    .map(|(figure, label, colour)| {
        let all: Vec<f64> = samples
            .iter()
            .filter(|((_, f), _)| f == figure)
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        (label.to_owned(), colour, all)
    })
    .collect();
    let max = series
        .iter()
        .flat_map(|s| s.2.iter().copied())
        .fold(1.0, f64::max);
    let width = max * 1.05 / BINS as f64;
    let count = |values: &[f64]| {
        let mut bins = vec![0u32; BINS];
        for v in values {
            bins[((v / width) as usize).min(BINS - 1)] += 1;
        }
        bins
    };
    let tallest = series
        .iter()
        .flat_map(|s| count(&s.2))
        .max()
        .unwrap_or(0)
        .max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Revoked sessions that were driving", FONT)
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..width * BINS as f64, 0u32..tallest + 1)?;
        chart
            .configure_mesh()
            .x_desc("ms after the revocation was acknowledged")
            .y_desc("sessions")
            .draw()?;
        for (k, (label, colour, values)) in series.into_iter().enumerate() {
            // Two bars side by side in each bin.
            let half = width / 2.0;
            let bars = count(&values).into_iter().enumerate().filter(|b| b.1 > 0);
            chart
                .draw_series(bars.map(|(i, n)| {
                    let x = i as f64 * width + k as f64 * half;
                    Rectangle::new([(x, 0), (x + half * 0.9, n)], colour.mix(0.8).filled())
                }))?
                .label(format!("{label} (n = {})", values.len()))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
                });
        }
        legend_and_present!(chart, root);
    }
    Ok(svg)
}
