//! Pictures, drawn with the `plotters` crate: the output format chosen by the file's extension
//! (`.svg` or `.png`), text in an embedded font (DejaVu Sans, `assets/DejaVuSans.ttf`, licence
//! beside it) so that nothing depends on the machine's font libraries, and the latency
//! histogram of `shoal bench --plot`. The jepsen timeline (`shoal-tests`' `report`) draws
//! through [`write`] too.

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// DejaVu Sans (Bitstream Vera licence, see `assets/DejaVuSans.LICENSE`).
pub const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
/// The size of the bench histogram, in pixels.
pub const HISTOGRAM_SIZE: (u32, u32) = (1000, 500);
/// Bars of the bench histogram (log-spaced from the lowest to the highest latency).
pub const HISTOGRAM_BARS: usize = 60;

/// A picture's file format, by its file's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Svg,
    Png,
}

impl Format {
    /// `.svg` or `.png` (any case); anything else is refused with a sentence.
    pub fn of(path: &Path) -> Result<Format, String> {
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("svg") => Ok(Format::Svg),
            Some("png") => Ok(Format::Png),
            _ => Err(format!("{}: a picture's name must end in .svg or .png", path.display())),
        }
    }
}

/// Checks a `--plot` path before any work: a known extension and an existing directory.
pub fn parse_plot_path(text: &str) -> Result<std::path::PathBuf, String> {
    let path = std::path::PathBuf::from(text);
    Format::of(&path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!("{}: no such directory", dir.display()));
    }
    Ok(path)
}

/// Registers the embedded font as plotters' "sans-serif" (once per process).
pub fn use_embedded_font() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            plotters::style::register_font("sans-serif", style, FONT)
                .unwrap_or_else(|_| panic!("the embedded font is a valid TrueType font"));
        }
    });
}

/// What can be drawn on any plotters backend.
pub trait Picture {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>;
}

/// The picture as SVG text.
pub fn svg(size: (u32, u32), picture: &impl Picture) -> Result<String, String> {
    use_embedded_font();
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        picture.draw(&root).map_err(|e| format!("drawing: {e}"))?;
        root.present().map_err(|e| format!("drawing: {e}"))?;
    }
    Ok(text)
}

/// The picture as RGB pixels (row by row, 3 bytes a pixel).
pub fn pixels(size: (u32, u32), picture: &impl Picture) -> Result<Vec<u8>, String> {
    use_embedded_font();
    let mut buffer = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, size).into_drawing_area();
        picture.draw(&root).map_err(|e| format!("drawing: {e}"))?;
        root.present().map_err(|e| format!("drawing: {e}"))?;
    }
    Ok(buffer)
}

/// Draws `picture` into `path`, SVG or PNG by its extension.
pub fn write(path: &Path, size: (u32, u32), picture: &impl Picture) -> Result<(), String> {
    let fail = |e: String| format!("{}: {e}", path.display());
    match Format::of(path)? {
        Format::Svg => {
            let text = svg(size, picture).map_err(fail)?;
            std::fs::write(path, text).map_err(|e| fail(e.to_string()))
        }
        Format::Png => {
            use_embedded_font();
            let root = BitMapBackend::new(path, size).into_drawing_area();
            picture.draw(&root).map_err(|e| fail(format!("drawing: {e}")))?;
            root.present().map_err(|e| fail(format!("writing: {e}")))
        }
    }
}

/// One bar of a latency histogram: operations whose latency (µs) lay in `[low_us, high_us)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub low_us: f64,
    pub high_us: f64,
    pub count: u64,
}

/// `hist` (nanoseconds) as `bars` log-spaced bars from its lowest to its highest value; every
/// recorded operation is in exactly one bar.
pub fn log_bars(hist: &Histogram<u64>, bars: usize) -> Vec<Bar> {
    if hist.is_empty() || bars == 0 {
        return Vec::new();
    }
    let low = (hist.min().max(1) as f64 / 1000.0).max(0.001);
    let high = (hist.max() as f64 / 1000.0).max(low * 1.01);
    let (log_low, log_high) = (low.log10(), high.log10());
    let step = (log_high - log_low) / bars as f64;
    let edge = |i: usize| 10f64.powf(log_low + step * i as f64);
    let mut out: Vec<Bar> =
        (0..bars).map(|i| Bar { low_us: edge(i), high_us: edge(i + 1), count: 0 }).collect();
    for v in hist.iter_recorded() {
        let us = hist.median_equivalent(v.value_iterated_to()) as f64 / 1000.0;
        let i = ((us.max(low).log10() - log_low) / step).floor().max(0.0) as usize;
        out[i.min(bars - 1)].count += v.count_at_value();
    }
    out
}

/// The latency histogram of one bench run: log-spaced bars of operations by latency, with
/// the p50, p99 and p99.9 marked.
pub struct LatencyHistogram<'a> {
    pub title: String,
    /// Latencies in nanoseconds (as `shoal bench` records them).
    pub hist: &'a Histogram<u64>,
}

/// Colours of the quantile marks.
const P50: RGBColor = RGBColor(0x20, 0x60, 0xc0);
const P99: RGBColor = RGBColor(0xd0, 0x70, 0x00);
const P999: RGBColor = RGBColor(0xc0, 0x20, 0x20);
const BAR: RGBColor = RGBColor(0x2a, 0x8a, 0x2a);

impl Picture for LatencyHistogram<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let bars = log_bars(self.hist, HISTOGRAM_BARS);
        // A little room either side of the lowest and highest bar.
        let (low, high) = match (bars.first(), bars.last()) {
            (Some(f), Some(l)) => (f.low_us / 1.15, l.high_us * 1.15),
            _ => (1.0, 10.0),
        };
        let top = bars.iter().map(|b| b.count).max().unwrap_or(0).max(1);
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d((low..high).log_scale(), 0u64..top + top / 10 + 1)?;
        chart
            .configure_mesh()
            .max_light_lines(1)
            .x_desc("latency (log scale)")
            .y_desc("operations")
            .x_label_formatter(&|v| format_us(*v))
            .label_style(("sans-serif", 12))
            .draw()?;
        chart
            .draw_series(bars.iter().filter(|b| b.count > 0).map(|b| {
                Rectangle::new([(b.low_us, 0), (b.high_us, b.count)], BAR.mix(0.8).filled())
            }))?
            .label(format!("{} operations", self.hist.len()))
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], BAR.filled()));
        if !self.hist.is_empty() {
            for (name, q, colour) in [("p50", 0.5, P50), ("p99", 0.99, P99), ("p99.9", 0.999, P999)]
            {
                let us = self.hist.value_at_quantile(q) as f64 / 1000.0;
                chart
                    .draw_series(LineSeries::new(
                        [(us, 0), (us, top + top / 10)],
                        colour.stroke_width(2),
                    ))?
                    .label(format!("{name} {}", format_us(us)))
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 14, y)], colour.stroke_width(2))
                    });
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()?;
        Ok(())
    }
}

/// A latency in µs as a short label of 3 significant digits: "850 µs", "2.5 ms", "1.2 s".
pub fn format_us(us: f64) -> String {
    let (value, unit) = if us >= 1_000_000.0 {
        (us / 1_000_000.0, "s")
    } else if us >= 1_000.0 {
        (us / 1_000.0, "ms")
    } else {
        (us, "µs")
    };
    format!("{} {unit}", significant(value, 3))
}

/// `value` to `digits` significant digits, without trailing zeros.
pub fn significant(value: f64, digits: i32) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let decimals = (digits - 1 - value.abs().log10().floor() as i32).max(0) as usize;
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// Every text element of an SVG, trimmed, in document order: how the tests of every picture
/// (the bench histogram here, the jepsen timeline, the CLI's `--plot`) read what was drawn.
/// Test support, behind the `svg-texts` feature; panics when `svg` is not well-formed XML
/// with an `svg` root.
#[cfg(any(test, feature = "svg-texts"))]
pub fn svg_texts(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).expect("the SVG is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| {
            let text: String =
                n.descendants().filter(|t| t.is_text()).filter_map(|t| t.text()).collect();
            text.trim().to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_read_in_their_unit() {
        assert_eq!(format_us(850.0), "850 µs");
        assert_eq!(format_us(0.35), "0.35 µs");
        assert_eq!(format_us(1_018.0), "1.02 ms");
        assert_eq!(format_us(29_901.0), "29.9 ms");
        assert_eq!(format_us(10_000.0), "10 ms");
        assert_eq!(format_us(1_234_567.0), "1.23 s");
    }

    #[test]
    fn formats_come_from_the_extension_and_others_are_refused() {
        assert_eq!(Format::of(Path::new("a/b.svg")), Ok(Format::Svg));
        assert_eq!(Format::of(Path::new("b.PNG")), Ok(Format::Png));
        let err = Format::of(Path::new("b.jpg")).unwrap_err();
        assert!(err.contains("must end in .svg or .png"), "{err}");
        assert!(Format::of(Path::new("noext")).is_err());
        assert!(parse_plot_path("/nonexistent-shoal-dir/x.svg").unwrap_err().contains("no such"));
        assert!(parse_plot_path("x.svg").is_ok());
    }

    /// Every recorded operation lands in exactly one bar; bars are contiguous and increasing.
    #[test]
    fn log_bars_hold_every_operation_once() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for i in 1..=10_000u64 {
            h.record(i * 997).unwrap();
        }
        h.record(50_000_000).unwrap();
        let bars = log_bars(&h, 40);
        assert_eq!(bars.len(), 40);
        assert_eq!(bars.iter().map(|b| b.count).sum::<u64>(), h.len());
        for pair in bars.windows(2) {
            assert!((pair[0].high_us - pair[1].low_us).abs() < 1e-9 * pair[1].low_us);
            assert!(pair[0].low_us < pair[0].high_us);
        }
        assert!(bars[0].low_us <= 1.0 && bars[39].high_us >= 50_000.0 * 0.999);
        assert!(log_bars(&Histogram::<u64>::new(3).unwrap(), 40).is_empty());
    }

    /// A deterministic bench histogram: 9 000 ops around 1 ms, 1 000 around 20 ms.
    fn synthetic() -> Histogram<u64> {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for i in 0..9_000u64 {
            h.record(800_000 + (i % 400) * 1_000).unwrap();
        }
        for i in 0..1_000u64 {
            h.record(20_000_000 + i * 10_000).unwrap();
        }
        h
    }

    /// The histogram's SVG is XML with the title, the axis names, the operations legend and
    /// the three quantile marks with their values; its bars are drawn.
    #[test]
    fn histogram_svg_has_axes_legend_and_quantiles() {
        let h = synthetic();
        let picture = LatencyHistogram { title: "shoal bench put <test>".into(), hist: &h };
        let svg = svg(HISTOGRAM_SIZE, &picture).unwrap();
        let texts = svg_texts(&svg);
        for want in
            ["shoal bench put <test>", "latency (log scale)", "operations", "10000 operations"]
        {
            assert!(texts.iter().any(|t| t == want), "no text {want:?} in {texts:?}");
        }
        let p50 = format!("p50 {}", format_us(h.value_at_quantile(0.5) as f64 / 1000.0));
        let p99 = format!("p99 {}", format_us(h.value_at_quantile(0.99) as f64 / 1000.0));
        for want in [&p50, &p99] {
            assert!(texts.contains(want), "no {want:?} in {texts:?}");
        }
        assert!(texts.iter().any(|t| t.starts_with("p99.9 ")), "{texts:?}");
        assert!(p50.contains("ms") && p99.contains("ms"), "{p50} {p99}");
        // One filled rectangle per non-empty bar, in the bar colour.
        let bars = log_bars(&h, HISTOGRAM_BARS).iter().filter(|b| b.count > 0).count();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let green = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect") && n.attribute("fill") == Some("#2A8A2A"))
            .count();
        assert!(green >= bars, "{green} bar rects for {bars} bars");
    }

    /// `write` picks the format from the extension: a decodable PNG of the asked size, with
    /// bars in the bar colour, and an SVG file; a bad extension writes nothing.
    #[test]
    fn write_makes_png_or_svg_by_extension() {
        let h = synthetic();
        let picture = LatencyHistogram { title: "png".into(), hist: &h };
        let dir = std::env::temp_dir().join(format!("shoal-plot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let png_path = dir.join("h.png");
        write(&png_path, HISTOGRAM_SIZE, &picture).unwrap();
        let bytes = std::fs::read(&png_path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().expect("a valid PNG");
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("decodes");
        assert_eq!((info.width, info.height), HISTOGRAM_SIZE);
        let px = &buf[..info.buffer_size()];
        let step = info.line_size / info.width as usize;
        let greenish = px.chunks(step).filter(|p| p[1] > p[0] + 40 && p[1] > p[2] + 40).count();
        assert!(greenish > 1_000, "only {greenish} bar pixels");
        let svg_path = dir.join("h.svg");
        write(&svg_path, HISTOGRAM_SIZE, &picture).unwrap();
        assert!(!svg_texts(&std::fs::read_to_string(&svg_path).unwrap()).is_empty());
        let bad = dir.join("h.gif");
        assert!(write(&bad, HISTOGRAM_SIZE, &picture).unwrap_err().contains(".svg or .png"));
        assert!(!bad.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A run with no successful operation, or with one latency only, still draws.
    #[test]
    fn empty_and_single_value_histograms_draw() {
        let empty = Histogram::<u64>::new(3).unwrap();
        let picture = LatencyHistogram { title: "empty".into(), hist: &empty };
        assert!(svg_texts(&svg(HISTOGRAM_SIZE, &picture).unwrap()).contains(&"0 operations".into()));
        let mut one = Histogram::<u64>::new(3).unwrap();
        one.record_n(5_000, 7).unwrap();
        assert_eq!(log_bars(&one, 10).iter().map(|b| b.count).sum::<u64>(), 7);
        let picture = LatencyHistogram { title: "one".into(), hist: &one };
        let texts = svg_texts(&svg(HISTOGRAM_SIZE, &picture).unwrap());
        assert!(texts.contains(&"7 operations".into()), "{texts:?}");
        assert!(pixels(HISTOGRAM_SIZE, &picture).is_ok());
    }
}
