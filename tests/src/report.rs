//! The report of a run: a text summary of what clients saw (counts, latency percentiles, inside
//! and outside fault windows) and a picture of latency over time with the fault windows
//! shaded, drawn with `plotters` (through `shoal_cli::plot`: an embedded font, SVG or PNG),
//! written as both `<name>.svg` and `<name>.png`.

use crate::nemesis::FaultWindow;
use plotters::coord::Shift;
use plotters::prelude::*;
use shoal_cli::plot::{self, Picture};
use std::fmt;
use std::path::{Path, PathBuf};

/// Most points drawn; beyond this, successful operations are thinned evenly (failed and
/// unknown ones are always drawn) so that the file stays a few MB at most.
pub const POINTS_MAX: usize = 20_000;
/// The picture's size in pixels.
pub const SIZE: (u32, u32) = (1000, 440);
/// The lowest latency the logarithmic axis shows.
const LATENCY_FLOOR_US: u64 = 10;

/// How an operation ended, as its client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpOutcome {
    Ok,
    /// Definitely did not take effect (an error answer).
    Failed,
    /// May or may not have taken effect (a timeout, a lost answer).
    Unknown,
}

impl From<bool> for OpOutcome {
    fn from(ok: bool) -> OpOutcome {
        if ok {
            OpOutcome::Ok
        } else {
            OpOutcome::Failed
        }
    }
}

/// One operation as a client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// When it completed (or failed), ms from the start of the run.
    pub at_ms: u64,
    pub op: String,
    pub latency_us: u64,
    pub outcome: OpOutcome,
}

/// Latency figures of a set of operations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencySummary {
    pub ops: usize,
    /// Operations that did not succeed (failed or of unknown outcome).
    pub failed: usize,
    /// Of `failed`, those whose outcome is unknown.
    pub unknown: usize,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    pub fn of<'a>(samples: impl Iterator<Item = &'a Sample>) -> LatencySummary {
        let mut latencies = Vec::new();
        let (mut failed, mut unknown) = (0, 0);
        for s in samples {
            match s.outcome {
                OpOutcome::Ok => latencies.push(s.latency_us),
                OpOutcome::Failed => failed += 1,
                OpOutcome::Unknown => {
                    failed += 1;
                    unknown += 1;
                }
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
            unknown,
            p50_us: at(0.5),
            p99_us: at(0.99),
            max_us: latencies.last().copied().unwrap_or(0),
        }
    }
}

impl fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unknown =
            if self.unknown > 0 { format!(" ({} unknown)", self.unknown) } else { String::new() };
        write!(
            f,
            "{} ops, {} failed{unknown}, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
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

/// Colours of successful operations, by op family (red and purple are kept for failed and
/// unknown ones).
const PALETTE: [RGBColor; 5] = [
    RGBColor(0x2a, 0x8a, 0x2a),
    RGBColor(0x20, 0x60, 0xc0),
    RGBColor(0x00, 0x80, 0x80),
    RGBColor(0x80, 0x60, 0x20),
    RGBColor(0x60, 0x60, 0x60),
];
/// Failed operations: red crosses.
pub const FAILED: RGBColor = RGBColor(0xd0, 0x20, 0x20);
/// Unknown outcomes: purple triangles.
pub const UNKNOWN: RGBColor = RGBColor(0x90, 0x30, 0xc0);
/// Fault windows: orange bands (this opacity over white).
pub const FAULT: RGBColor = RGBColor(0xff, 0xa5, 0x00);
pub const FAULT_OPACITY: f64 = 0.25;
const FAULT_TEXT: RGBColor = RGBColor(0xa0, 0x40, 0x00);

fn op_family(op: &str) -> &str {
    op.split_whitespace().next().unwrap_or("")
}

/// Latency (log scale) over time: one mark per operation (a dot coloured by the op's first
/// word when it succeeded, a red cross when it failed, a purple triangle when its outcome is
/// unknown), the fault windows as shaded, labelled bands, and a legend.
pub struct Timeline<'a> {
    pub title: &'a str,
    pub history: &'a [Sample],
    pub windows: &'a [FaultWindow],
}

impl Timeline<'_> {
    /// The samples drawn: every failed and unknown one, successful ones thinned evenly to
    /// about [`POINTS_MAX`].
    pub fn drawn(&self) -> Vec<&Sample> {
        let ok_count = self.history.iter().filter(|s| s.outcome == OpOutcome::Ok).count();
        let keep_every = ok_count.div_ceil(POINTS_MAX).max(1);
        let mut ok_seen = 0usize;
        self.history
            .iter()
            .filter(|s| {
                if s.outcome != OpOutcome::Ok {
                    return true;
                }
                ok_seen += 1;
                (ok_seen - 1).is_multiple_of(keep_every)
            })
            .collect()
    }

    /// Op families of successful operations, in order of first appearance.
    pub fn families(&self) -> Vec<&str> {
        let mut families: Vec<&str> = Vec::new();
        for s in self.history.iter().filter(|s| s.outcome == OpOutcome::Ok) {
            let family = op_family(&s.op);
            if !families.contains(&family) {
                families.push(family);
            }
        }
        families
    }
}

impl Picture for Timeline<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let end_ms = self
            .history
            .iter()
            .map(|s| s.at_ms)
            .chain(self.windows.iter().map(|w| w.end_ms))
            .max()
            .unwrap_or(0)
            .max(1);
        let end_s = end_ms as f64 / 1000.0;
        let max_us =
            self.history.iter().map(|s| s.latency_us).max().unwrap_or(0).max(LATENCY_FLOOR_US * 10);
        let top_us = 10f64.powf((max_us as f64).log10().ceil());
        let floor = LATENCY_FLOOR_US as f64;
        let y_of = |us: u64| (us as f64).max(floor);
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..end_s, (floor..top_us).log_scale())?;
        chart
            .configure_mesh()
            .max_light_lines(1)
            .x_desc("time since start (s)")
            .y_desc("latency (log scale)")
            .x_label_formatter(&|s| plot::significant(*s, 3))
            .y_label_formatter(&|us| plot::format_us(*us))
            .label_style(("sans-serif", 12))
            .draw()?;
        // Fault windows under the points; the first carries the legend entry.
        let band = FAULT.mix(FAULT_OPACITY).filled();
        let bands = chart.draw_series(self.windows.iter().map(|w| {
            Rectangle::new(
                [(w.start_ms as f64 / 1000.0, floor), (w.end_ms as f64 / 1000.0, top_us)],
                band,
            )
        }))?;
        if !self.windows.is_empty() {
            bands.label("fault window").legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], FAULT.mix(0.5).filled())
            });
        }
        // Labels at the top of their band, alternating between two rows so that neighbours
        // do not overlap.
        let row = |i: usize| top_us / 10f64.powf(0.12 * (1 + i % 2) as f64);
        chart.draw_series(self.windows.iter().enumerate().map(|(i, w)| {
            Text::new(
                w.label.clone(),
                (w.start_ms as f64 / 1000.0, row(i)),
                ("sans-serif", 12).into_font().color(&FAULT_TEXT),
            )
        }))?;
        let drawn = self.drawn();
        for (i, family) in self.families().into_iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(
                    drawn
                        .iter()
                        .filter(|s| s.outcome == OpOutcome::Ok && op_family(&s.op) == family)
                        .map(|s| {
                            Circle::new(
                                (s.at_ms as f64 / 1000.0, y_of(s.latency_us)),
                                2,
                                colour.filled(),
                            )
                        }),
                )?
                .label(family.to_string())
                .legend(move |(x, y)| Circle::new((x + 6, y), 4, colour.filled()));
        }
        let of = |outcome: OpOutcome| drawn.iter().filter(move |s| s.outcome == outcome);
        let failed = of(OpOutcome::Failed).count();
        if failed > 0 {
            chart
                .draw_series(of(OpOutcome::Failed).map(|s| {
                    Cross::new(
                        (s.at_ms as f64 / 1000.0, y_of(s.latency_us)),
                        4,
                        FAILED.stroke_width(2),
                    )
                }))?
                .label(format!("failed ({failed})"))
                .legend(|(x, y)| Cross::new((x + 6, y), 4, FAILED.stroke_width(2)));
        }
        let unknown = of(OpOutcome::Unknown).count();
        if unknown > 0 {
            chart
                .draw_series(of(OpOutcome::Unknown).map(|s| {
                    TriangleMarker::new(
                        (s.at_ms as f64 / 1000.0, y_of(s.latency_us)),
                        4,
                        UNKNOWN.filled(),
                    )
                }))?
                .label(format!("unknown ({unknown})"))
                .legend(|(x, y)| TriangleMarker::new((x + 6, y), 5, UNKNOWN.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(0x99, 0x99, 0x99))
            .label_font(("sans-serif", 12))
            .draw()?;
        Ok(())
    }
}

/// The timeline as SVG text.
pub fn svg(title: &str, history: &[Sample], windows: &[FaultWindow]) -> String {
    plot::svg(SIZE, &Timeline { title, history, windows })
        .unwrap_or_else(|e| format!("<svg xmlns=\"http://www.w3.org/2000/svg\"><!-- {e} --></svg>"))
}

/// Writes `<dir>/<name>.svg` and `<dir>/<name>.png` (the timeline) and `<dir>/<name>.txt`
/// (the summary); returns the SVG's path and the summary.
pub fn write(
    dir: &Path,
    name: &str,
    title: &str,
    history: &[Sample],
    windows: &[FaultWindow],
) -> std::io::Result<(PathBuf, Summary)> {
    std::fs::create_dir_all(dir)?;
    let summary = summarize(history, windows);
    let timeline = Timeline { title, history, windows };
    let svg_path = dir.join(format!("{name}.svg"));
    for path in [&svg_path, &dir.join(format!("{name}.png"))] {
        plot::write(path, SIZE, &timeline).map_err(std::io::Error::other)?;
    }
    std::fs::write(dir.join(format!("{name}.txt")), format!("{title}\n{summary}"))?;
    Ok((svg_path, summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_cli::plot::svg_texts;

    /// A synthetic history: 1 ms writes every 10 ms for 10 s; inside a partition window at
    /// 3-5 s, 200 ms writes of which every 10th failed and every 25th has an unknown outcome.
    fn synthetic() -> (Vec<Sample>, Vec<FaultWindow>) {
        let windows = vec![
            FaultWindow { label: "partition [1] | rest".into(), start_ms: 3_000, end_ms: 5_000 },
            FaultWindow { label: "loss 10%".into(), start_ms: 7_000, end_ms: 8_000 },
        ];
        let history = (0..1_000u64)
            .map(|i| {
                let at_ms = i * 10;
                let in_partition = (3_000..=5_000).contains(&at_ms);
                let outcome = match (in_partition, i % 10 == 0, i % 25 == 0) {
                    (true, true, _) => OpOutcome::Failed,
                    (true, false, true) => OpOutcome::Unknown,
                    _ => OpOutcome::Ok,
                };
                Sample {
                    at_ms,
                    op: if i % 2 == 0 { "write".into() } else { "read k1".into() },
                    latency_us: if in_partition { 200_000 } else { 1_000 },
                    outcome,
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
        assert_eq!(summary.all.failed, 21 + 4);
        assert_eq!(summary.all.unknown, 4);
        assert_eq!(summary.healthy.failed, 0);
        assert_eq!(summary.healthy.max_us, 1_000);
        let (w, partition) = &summary.windows[0];
        assert_eq!(w.label, "partition [1] | rest");
        assert_eq!(partition.ops, 201);
        assert_eq!(partition.failed, 25);
        assert_eq!(partition.p50_us, 200_000);
        assert_eq!(summary.windows[1].1.max_us, 1_000);
        let text = summary.to_string();
        assert!(text.contains("partition [1] | rest"));
        assert!(text.contains("25 failed (4 unknown)"), "{text}");
    }

    /// Texts and elements of an SVG parsed as XML.
    fn parse(svg: &str) -> roxmltree::Document<'_> {
        let doc = roxmltree::Document::parse(svg).expect("the SVG is well-formed XML");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        doc
    }

    fn hex(c: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }

    /// The SVG is XML with the title (escaped), both axis names, each fault window's label,
    /// a legend naming each op family, the fault window and the failed and unknown counts;
    /// one shaded band per window, a dot per successful operation, a red cross per failed
    /// one and a purple triangle per unknown one.
    #[test]
    fn svg_has_shaded_windows_legend_and_every_outcome() {
        let (history, windows) = synthetic();
        let svg = svg("synthetic <run> & co", &history, &windows);
        let doc = parse(&svg);
        let texts = svg_texts(&svg);
        for want in [
            "synthetic <run> & co",
            "time since start (s)",
            "latency (log scale)",
            "partition [1] | rest",
            "loss 10%",
            "fault window",
            "write",
            "read",
            "failed (21)",
            "unknown (4)",
            "1 ms",
            "100 ms",
        ] {
            assert!(texts.iter().any(|t| t == want), "no text {want:?} in {texts:?}");
        }
        let filled = |colour: &str| {
            doc.descendants()
                .filter(|n| n.attribute("fill") == Some(colour))
                .filter(|n| n.has_tag_name("circle") || n.has_tag_name("polygon"))
                .count()
        };
        // Legend marks add one each.
        let (green, blue) = (hex(PALETTE[0]), hex(PALETTE[1]));
        assert_eq!(filled(&green) + filled(&blue), 1_000 - 25 + 2);
        assert_eq!(filled(&hex(UNKNOWN)), 4 + 1);
        let crosses = doc
            .descendants()
            .filter(|n| n.attribute("stroke") == Some(hex(FAILED).as_str()))
            .count();
        // A cross is two strokes.
        assert_eq!(crosses, 2 * (21 + 1), "failed crosses");
        let bands = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect") && n.attribute("fill") == Some(&hex(FAULT)))
            .count();
        assert_eq!(bands, 2 + 1, "one band per fault window, and the legend's");
    }

    /// In the pixels, a row above every point crosses exactly two shaded bands, in place: the
    /// partition band (3-5 s) twice as wide as the loss band (7-8 s), starting 4 s (two
    /// partition widths) apart.
    #[test]
    fn png_bands_are_where_the_windows_are() {
        let (history, windows) = synthetic();
        let timeline = Timeline { title: "bands", history: &history, windows: &windows };
        let px = plot::pixels(SIZE, &timeline).unwrap();
        if let Some(dir) = std::env::var_os("SHOAL_KEEP_PICTURES") {
            plot::write(&Path::new(&dir).join("timeline.png"), SIZE, &timeline).unwrap();
        }
        let (w, h) = (SIZE.0 as usize, SIZE.1 as usize);
        // 200 ms points sit about 0.14 of the plot height from its top (10 µs..1 s axis):
        // a row at 40 % of the picture is between the two point rows.
        let y = h * 2 / 5;
        let tinted: Vec<bool> = (0..w)
            .map(|x| {
                let p = &px[(y * w + x) * 3..][..3];
                i32::from(p[0]) - i32::from(p[2]) > 40
            })
            .collect();
        let mut runs = Vec::new();
        let mut x = 0;
        while x < w {
            if tinted[x] {
                let start = x;
                while x < w && tinted[x] {
                    x += 1;
                }
                runs.push((start, x - start));
            }
            x += 1;
        }
        assert_eq!(runs.len(), 2, "bands {runs:?}");
        let (first, second) = (runs[0], runs[1]);
        let ratio = first.1 as f64 / second.1 as f64;
        assert!((1.9..=2.1).contains(&ratio), "widths {runs:?}");
        let apart = (second.0 - first.0) as f64 / first.1 as f64;
        assert!((1.95..=2.05).contains(&apart), "positions {runs:?}");
    }

    /// `write` leaves the SVG, a PNG of [`SIZE`] and the summary text.
    #[test]
    fn write_leaves_svg_png_and_summary() {
        let (history, windows) = synthetic();
        let dir = tempfile::tempdir().unwrap();
        let (svg_path, summary) = write(dir.path(), "run", "t", &history, &windows).unwrap();
        assert_eq!(svg_path, dir.path().join("run.svg"));
        parse(&std::fs::read_to_string(&svg_path).unwrap());
        let bytes = std::fs::read(dir.path().join("run.png")).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("a valid PNG");
        assert_eq!((info.width, info.height), SIZE);
        let text = std::fs::read_to_string(dir.path().join("run.txt")).unwrap();
        assert_eq!(text, format!("t\n{summary}"));
    }

    /// Many points are thinned to about POINTS_MAX, and failures are never dropped.
    #[test]
    fn thins_large_histories_but_keeps_failures() {
        let history: Vec<Sample> = (0..100_000u64)
            .map(|i| Sample {
                at_ms: i,
                op: "r".into(),
                latency_us: 500,
                outcome: (i % 1_000 != 0).into(),
            })
            .collect();
        let timeline = Timeline { title: "big", history: &history, windows: &[] };
        let drawn = timeline.drawn();
        let ok = drawn.iter().filter(|s| s.outcome == OpOutcome::Ok).count();
        assert!((POINTS_MAX / 2..=POINTS_MAX).contains(&ok), "{ok} ok points");
        assert_eq!(drawn.len() - ok, 100);
        let svg = svg("big", &history, &[]);
        let doc = parse(&svg);
        let dots = doc.descendants().filter(|n| n.has_tag_name("circle")).count();
        assert_eq!(dots, ok + 1, "dots and the legend's");
    }

    /// An interrupted run with no operation and no fault still leaves a picture.
    #[test]
    fn empty_run_draws_axes_only() {
        let doc_text = svg("empty run", &[], &[]);
        let doc = parse(&doc_text);
        assert!(svg_texts(&doc_text).contains(&"empty run".to_string()));
        assert_eq!(doc.descendants().filter(|n| n.has_tag_name("circle")).count(), 0);
    }
}
