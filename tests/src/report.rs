//! The report of a run: a text summary of what clients saw (counts, latency percentiles, inside
//! and outside fault windows) and an SVG picture of latency over time with the fault windows
//! shaded. The SVG is written by hand (a few rects, circles and lines), no plotting crate.

use crate::nemesis::FaultWindow;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

/// Most points drawn; beyond this, successful operations are thinned evenly (failures are
/// always drawn) so that the file stays a few MB at most.
pub const POINTS_MAX: usize = 20_000;
pub const WIDTH_PX: f64 = 1000.0;
pub const HEIGHT_PX: f64 = 420.0;
const MARGIN_LEFT_PX: f64 = 70.0;
const MARGIN_RIGHT_PX: f64 = 20.0;
const MARGIN_TOP_PX: f64 = 40.0;
const MARGIN_BOTTOM_PX: f64 = 50.0;
/// The lowest latency the logarithmic axis shows.
const LATENCY_FLOOR_US: u64 = 10;

/// One operation as a client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// When it completed (or failed), ms from the start of the run.
    pub at_ms: u64,
    pub op: String,
    pub latency_us: u64,
    pub ok: bool,
}

/// Latency figures of a set of operations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencySummary {
    pub ops: usize,
    pub failed: usize,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    pub fn of<'a>(samples: impl Iterator<Item = &'a Sample>) -> LatencySummary {
        let mut latencies = Vec::new();
        let mut failed = 0;
        for s in samples {
            if s.ok {
                latencies.push(s.latency_us);
            } else {
                failed += 1;
            }
        }
        latencies.sort_unstable();
        let at = |q: f64| -> u64 {
            if latencies.is_empty() {
                return 0;
            }
            latencies[((latencies.len() - 1) as f64 * q).round() as usize]
        };
        LatencySummary {
            ops: latencies.len() + failed,
            failed,
            p50_us: at(0.5),
            p99_us: at(0.99),
            max_us: latencies.last().copied().unwrap_or(0),
        }
    }
}

impl fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ops, {} failed, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.ops,
            self.failed,
            self.p50_us as f64 / 1000.0,
            self.p99_us as f64 / 1000.0,
            self.max_us as f64 / 1000.0
        )
    }
}

/// The summary of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub all: LatencySummary,
    /// Operations that completed while no fault was in force.
    pub healthy: LatencySummary,
    /// Per fault window: its label and the operations that completed inside it.
    pub windows: Vec<(FaultWindow, LatencySummary)>,
}

fn inside(sample: &Sample, window: &FaultWindow) -> bool {
    (window.start_ms..=window.end_ms).contains(&sample.at_ms)
}

/// Counts and latency percentiles overall, outside faults, and per fault window.
pub fn summarize(history: &[Sample], windows: &[FaultWindow]) -> Summary {
    Summary {
        all: LatencySummary::of(history.iter()),
        healthy: LatencySummary::of(
            history.iter().filter(|s| !windows.iter().any(|w| inside(s, w))),
        ),
        windows: windows
            .iter()
            .map(|w| (w.clone(), LatencySummary::of(history.iter().filter(|s| inside(s, w)))))
            .collect(),
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "all:        {}", self.all)?;
        writeln!(f, "no fault:   {}", self.healthy)?;
        for (w, s) in &self.windows {
            writeln!(f, "{:>6}-{:<6} ms {:<24} {}", w.start_ms, w.end_ms, w.label, s)?;
        }
        Ok(())
    }
}

/// Escapes text for SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// An SVG of latency (log scale) over time: one dot per operation (green ok, red failed), the
/// fault windows as shaded, labelled bands.
pub fn svg(title: &str, history: &[Sample], windows: &[FaultWindow]) -> String {
    let end_ms = history
        .iter()
        .map(|s| s.at_ms)
        .chain(windows.iter().map(|w| w.end_ms))
        .max()
        .unwrap_or(0)
        .max(1);
    let max_us = history.iter().map(|s| s.latency_us).max().unwrap_or(0).max(LATENCY_FLOOR_US * 10);
    let decades_low = (LATENCY_FLOOR_US as f64).log10();
    let decades_high = (max_us as f64).log10().ceil().max(decades_low + 1.0);
    let plot_w = WIDTH_PX - MARGIN_LEFT_PX - MARGIN_RIGHT_PX;
    let plot_h = HEIGHT_PX - MARGIN_TOP_PX - MARGIN_BOTTOM_PX;
    let x = |ms: u64| MARGIN_LEFT_PX + plot_w * ms as f64 / end_ms as f64;
    let y = |us: u64| {
        let v = (us.max(LATENCY_FLOOR_US) as f64).log10();
        MARGIN_TOP_PX + plot_h * (1.0 - (v - decades_low) / (decades_high - decades_low))
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_PX}" height="{HEIGHT_PX}" viewBox="0 0 {WIDTH_PX} {HEIGHT_PX}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        out,
        r#"<rect x="0" y="0" width="{WIDTH_PX}" height="{HEIGHT_PX}" fill="white"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN_LEFT_PX}" y="20" font-size="14">{}</text>"#,
        escape(title)
    );
    // Fault windows first, under everything else.
    for (i, w) in windows.iter().enumerate() {
        let (x0, x1) = (x(w.start_ms), x(w.end_ms));
        let _ = writeln!(
            out,
            r#"<rect class="fault" x="{x0:.1}" y="{MARGIN_TOP_PX}" width="{:.1}" height="{plot_h}" fill="orange" fill-opacity="0.25"><title>{}</title></rect>"#,
            (x1 - x0).max(1.0),
            escape(&w.label)
        );
        // Labels alternate between two rows so that neighbours do not overlap.
        let label_y = MARGIN_TOP_PX + 12.0 + 12.0 * (i % 2) as f64;
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{label_y}" fill="#a04000">{}</text>"##,
            x0 + 2.0,
            escape(&w.label)
        );
    }
    // Axes and grid.
    let bottom = MARGIN_TOP_PX + plot_h;
    let _ = writeln!(
        out,
        r#"<rect x="{MARGIN_LEFT_PX}" y="{MARGIN_TOP_PX}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    let mut decade = decades_low as i32;
    while f64::from(decade) <= decades_high {
        let us = 10u64.pow(decade as u32);
        let yy = y(us);
        let label = if us >= 1000 { format!("{} ms", us / 1000) } else { format!("{us} µs") };
        let _ = writeln!(
            out,
            r##"<line x1="{MARGIN_LEFT_PX}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            MARGIN_LEFT_PX + plot_w,
            MARGIN_LEFT_PX - 5.0,
            yy + 4.0
        );
        decade += 1;
    }
    let step_ms = nice_step(end_ms);
    let mut t = 0;
    while t <= end_ms {
        let xx = x(t);
        let _ = writeln!(
            out,
            r#"<line x1="{xx:.1}" y1="{bottom}" x2="{xx:.1}" y2="{:.1}" stroke="black"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{:.1} s</text>"#,
            bottom + 5.0,
            bottom + 18.0,
            t as f64 / 1000.0
        );
        t += step_ms;
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since start (latency: log scale; red: failed)</text>"#,
        MARGIN_LEFT_PX + plot_w / 2.0,
        HEIGHT_PX - 10.0
    );
    // Points: thin successful ones evenly when there are too many.
    let ok_count = history.iter().filter(|s| s.ok).count();
    let keep_every = ok_count.div_ceil(POINTS_MAX).max(1);
    let mut ok_seen = 0usize;
    // Successful operations are coloured by the op's first word ("deliver", "multicast",
    // "write", ...), in order of first appearance, with a legend.
    let mut families: Vec<&str> = Vec::new();
    for s in history.iter().filter(|s| s.ok) {
        let family = op_family(&s.op);
        if !families.contains(&family) {
            families.push(family);
        }
    }
    for s in history {
        if s.ok {
            ok_seen += 1;
            if !(ok_seen - 1).is_multiple_of(keep_every) {
                continue;
            }
        }
        let (fill, class) = if s.ok {
            let i = families.iter().position(|f| *f == op_family(&s.op)).unwrap_or(0);
            (PALETTE[i % PALETTE.len()], "ok")
        } else {
            ("#d02020", "failed")
        };
        let _ = writeln!(
            out,
            r#"<circle class="{class}" cx="{:.1}" cy="{:.1}" r="1.6" fill="{fill}"/>"#,
            x(s.at_ms),
            y(s.latency_us)
        );
    }
    // The legend last, above the points.
    let mut legend = String::new();
    if !families.is_empty() {
        let height = 14.0 * families.len() as f64 + 6.0;
        let _ = writeln!(
            legend,
            r##"<rect x="{:.1}" y="{:.1}" width="100" height="{height:.1}" fill="white" fill-opacity="0.85" stroke="#999"/>"##,
            MARGIN_LEFT_PX + plot_w - 118.0,
            MARGIN_TOP_PX + plot_h - 8.0 - height
        );
    }
    for (i, family) in families.iter().enumerate() {
        let lx = MARGIN_LEFT_PX + plot_w - 110.0;
        let ly = MARGIN_TOP_PX + plot_h - 10.0 - 14.0 * (families.len() - 1 - i) as f64;
        let _ = writeln!(
            legend,
            r#"<circle cx="{lx:.1}" cy="{:.1}" r="4" fill="{}"/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
            ly - 4.0,
            PALETTE[i % PALETTE.len()],
            lx + 8.0,
            escape(family)
        );
    }
    out.push_str(&legend);
    out.push_str("</svg>\n");
    out
}

/// Colours of successful operations, by op family (red is kept for failures).
const PALETTE: [&str; 5] = ["#2a8a2a", "#2060c0", "#8040a0", "#008080", "#806020"];

fn op_family(op: &str) -> &str {
    op.split_whitespace().next().unwrap_or("")
}

/// A round tick step giving about 10 ticks over `end_ms`.
fn nice_step(end_ms: u64) -> u64 {
    let raw = (end_ms / 10).max(1);
    let magnitude = 10u64.pow((raw as f64).log10().floor() as u32);
    for m in [1, 2, 5, 10] {
        if magnitude * m >= raw {
            return magnitude * m;
        }
    }
    magnitude * 10
}

/// Writes `<dir>/<name>.svg` and `<dir>/<name>.txt` (the summary); returns the SVG's path and
/// the summary.
pub fn write(
    dir: &Path,
    name: &str,
    title: &str,
    history: &[Sample],
    windows: &[FaultWindow],
) -> std::io::Result<(PathBuf, Summary)> {
    std::fs::create_dir_all(dir)?;
    let summary = summarize(history, windows);
    let svg_path = dir.join(format!("{name}.svg"));
    std::fs::write(&svg_path, svg(title, history, windows))?;
    std::fs::write(dir.join(format!("{name}.txt")), format!("{title}\n{summary}"))?;
    Ok((svg_path, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic history: 1 ms ops every 10 ms for 10 s, 200 ms ops and failures inside a
    /// partition window at 3-5 s.
    fn synthetic() -> (Vec<Sample>, Vec<FaultWindow>) {
        let windows = vec![
            FaultWindow { label: "partition [1] | rest".into(), start_ms: 3_000, end_ms: 5_000 },
            FaultWindow { label: "loss 10%".into(), start_ms: 7_000, end_ms: 8_000 },
        ];
        let history = (0..1_000u64)
            .map(|i| {
                let at_ms = i * 10;
                let in_partition = (3_000..=5_000).contains(&at_ms);
                Sample {
                    at_ms,
                    op: "write".into(),
                    latency_us: if in_partition { 200_000 } else { 1_000 },
                    ok: !(in_partition && i % 10 == 0),
                }
            })
            .collect();
        (history, windows)
    }

    /// The summary splits operations by fault window and finds the slow ones inside it.
    #[test]
    fn summary_separates_fault_windows_from_healthy_time() {
        let (history, windows) = synthetic();
        let summary = summarize(&history, &windows);
        assert_eq!(summary.all.ops, 1_000);
        assert_eq!(summary.all.failed, 21);
        assert_eq!(summary.healthy.failed, 0);
        assert_eq!(summary.healthy.max_us, 1_000);
        let (w, partition) = &summary.windows[0];
        assert_eq!(w.label, "partition [1] | rest");
        assert_eq!(partition.ops, 201);
        assert_eq!(partition.failed, 21);
        assert_eq!(partition.p50_us, 200_000);
        assert_eq!(summary.windows[1].1.max_us, 1_000);
        assert!(summary.to_string().contains("partition [1] | rest"));
    }

    /// The SVG shades each fault window, draws every point (red for failures), and is
    /// well-formed enough to open and close once.
    #[test]
    fn svg_has_shaded_windows_and_points() {
        let (history, windows) = synthetic();
        let svg = svg("synthetic <run>", &history, &windows);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches(r#"class="fault""#).count(), 2);
        assert_eq!(svg.matches(r#"class="ok""#).count(), 979);
        assert_eq!(svg.matches(r#"class="failed""#).count(), 21);
        assert!(svg.contains("synthetic &lt;run&gt;"), "title not escaped");
        assert!(svg.contains("loss 10%"));
        // The partition band spans 3 s to 5 s of a 10 s axis: x from 70 + 910·0.3.
        let x0 = MARGIN_LEFT_PX + (WIDTH_PX - MARGIN_LEFT_PX - MARGIN_RIGHT_PX) * 3_000.0 / 9_990.0;
        assert!(svg.contains(&format!(r#"class="fault" x="{x0:.1}""#)), "band misplaced");
    }

    /// Many points are thinned to about POINTS_MAX, and failures are never dropped.
    #[test]
    fn svg_thins_large_histories_but_keeps_failures() {
        let history: Vec<Sample> = (0..100_000u64)
            .map(|i| Sample { at_ms: i, op: "r".into(), latency_us: 500, ok: i % 1_000 != 0 })
            .collect();
        let svg = svg("big", &history, &[]);
        let ok = svg.matches(r#"class="ok""#).count();
        assert!((POINTS_MAX / 2..=POINTS_MAX).contains(&ok), "{ok} ok points");
        assert_eq!(svg.matches(r#"class="failed""#).count(), 100);
    }

    #[test]
    fn nice_steps_are_round() {
        assert_eq!(nice_step(10_000), 1_000);
        assert_eq!(nice_step(25_000), 5_000);
        assert_eq!(nice_step(7), 1);
        assert_eq!(nice_step(130_000), 20_000);
    }
}
