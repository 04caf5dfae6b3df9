//! Percentiles and the printed table: one row per metric with what was measured, the target,
//! and whether the target was met. A missed target is reported, never asserted.

use std::time::Duration;

/// One row of the table.
pub struct Row {
    metric: String,
    measured: String,
    target: String,
    /// `Some(true)` met, `Some(false)` missed, `None` no target or not measured.
    met: Option<bool>,
}

/// Which way a target points.
#[derive(Clone, Copy)]
pub enum Goal {
    /// The measured value must be at least the target.
    AtLeast(f64),
    /// The measured value must be at most the target.
    AtMost(f64),
}

impl Goal {
    fn met_by(self, value: f64) -> bool {
        match self {
            Self::AtLeast(target) => value >= target,
            Self::AtMost(target) => value <= target,
        }
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Self::AtLeast(target) => format!("≥ {} {unit}", group_thousands(target)),
            Self::AtMost(target) => format!("≤ {} {unit}", group_thousands(target)),
        }
    }
}

impl Row {
    /// A row with a target; `value` is `None` when it could not be measured.
    pub fn target(metric: &str, value: Option<f64>, unit: &str, goal: Goal) -> Self {
        let measured = value.map_or_else(|| "n/a".to_owned(), |value| format_value(value, unit));
        Self {
            metric: metric.to_owned(),
            measured,
            target: goal.describe(unit),
            met: value.map(|value| goal.met_by(value)),
        }
    }

    /// A row shown for context, without a target.
    pub fn info(metric: &str, measured: String) -> Self {
        Self { metric: metric.to_owned(), measured, target: "-".to_owned(), met: None }
    }

    fn result(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        }
    }
}

/// Prints the rows as a Markdown table.
pub fn print_table(rows: &[Row]) {
    let header = ["metric", "measured", "target", "result"];
    let cells: Vec<[&str; 4]> =
        rows.iter().map(|row| [&*row.metric, &*row.measured, &*row.target, row.result()]).collect();
    let mut widths = header.map(|cell| cell.chars().count());
    for line in &cells {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    print_line(&header, &widths);
    let rule = widths.map(|width| "-".repeat(width));
    print_line(&rule.each_ref().map(String::as_str), &widths);
    for line in &cells {
        print_line(line, &widths);
    }
}

fn print_line(cells: &[&str; 4], widths: &[usize; 4]) {
    let padded: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(cell, width)| format!("{cell}{}", " ".repeat(width - cell.chars().count())))
        .collect();
    println!("| {} |", padded.join(" | "));
}

/// The `p`-th percentile (0–100) by nearest rank; `None` for no samples.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

/// The median, by nearest rank.
pub fn median(samples: &[Duration]) -> Option<Duration> {
    percentile(samples, 50.0)
}

/// A duration in milliseconds.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// "1.2 ms", "2,731 sends/s", "14.3 MiB".
fn format_value(value: f64, unit: &str) -> String {
    if value >= 100.0 {
        format!("{} {unit}", group_thousands(value))
    } else {
        format!("{value:.1} {unit}")
    }
}

/// A whole number with thousands separators: 2500 → "2,500".
fn group_thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.round());
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// "p50 1.2 ms, p99 4.5 ms" for context rows.
pub fn spread(samples: &[Duration]) -> String {
    match (percentile(samples, 50.0), percentile(samples, 99.0)) {
        (Some(p50), Some(p99)) => format!("p50 {:.1} ms, p99 {:.1} ms", ms(p50), ms(p99)),
        _ => "n/a".to_owned(),
    }
}
