//! The bench's report: `report.md` with tables and SVG plots, and
//! `results.json` with every sample, in one directory per run.
//!
//! Sections fill in what they measured; nothing here measures. A figure
//! that could not be measured is absent (with the reason in the section's
//! notes), never a zero.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde::Serialize;

use super::stats::Summary;

/// One measured figure: what, of which implementation, at which scale.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// What was measured, e.g. "new flow".
    pub case: String,
    /// Which implementation or program, e.g. "lb", "XDP_PASS floor",
    /// "iptables (kube-proxy)".
    pub subject: String,
    /// Services loaded when it was measured.
    pub services: usize,
    pub unit: String,
    pub summary: Summary,
}

/// A plot of one case against the Service count, a line per subject.
#[derive(Clone, Debug, Serialize)]
pub struct Plot {
    /// File name inside the run directory (`*.svg`).
    pub file: String,
    pub title: String,
    pub y_label: String,
    /// Which figures it draws: those of this section with this case.
    pub case: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Section {
    pub title: String,
    /// How it was measured, in a few sentences.
    pub method: String,
    pub figures: Vec<Figure>,
    /// Derived comparisons, e.g. ("lb new flow vs iptables", 5.2).
    pub ratios: Vec<(String, f64)>,
    pub plots: Vec<Plot>,
    /// What could not be measured and why, and anything a reader must know.
    pub notes: Vec<String>,
}

impl Section {
    pub fn new(title: &str, method: &str) -> Section {
        Section {
            title: title.to_string(),
            method: method.to_string(),
            ..Section::default()
        }
    }

    /// Records a figure; `samples` empty (nothing measured) records nothing.
    pub fn figure(
        &mut self,
        case: &str,
        subject: &str,
        services: usize,
        unit: &str,
        samples: &[f64],
    ) {
        if let Some(summary) = Summary::of(samples) {
            self.figures.push(Figure {
                case: case.to_string(),
                subject: subject.to_string(),
                services,
                unit: unit.to_string(),
                summary,
            });
        }
    }

    /// The figure of `subject` for `case` at `services`, if measured.
    pub fn find(&self, case: &str, subject: &str, services: usize) -> Option<&Figure> {
        self.figures
            .iter()
            .find(|f| f.case == case && f.subject == subject && f.services == services)
    }

    /// Records `a / b` of two measured figures' medians under `label`.
    pub fn ratio(&mut self, label: &str, a: (&str, &str, usize), b: (&str, &str, usize)) {
        let (Some(a), Some(b)) = (self.find(a.0, a.1, a.2), self.find(b.0, b.1, b.2)) else {
            return;
        };
        if let Some(r) = super::stats::ratio(&a.summary, &b.summary) {
            self.ratios.push((label.to_string(), r));
        }
    }

    pub fn plot(&mut self, file: &str, title: &str, y_label: &str, case: &str) {
        self.plots.push(Plot {
            file: file.to_string(),
            title: title.to_string(),
            y_label: y_label.to_string(),
            case: case.to_string(),
        });
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }
}

/// The machine a run happened on, for the report's header.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub kernel: String,
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
}

impl Machine {
    pub fn this() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(|| "unknown".into());
        let cores = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let memory_kib: f64 = fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or(0.0);
        Machine {
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            cpu,
            cores,
            memory_gib: memory_kib / (1024.0 * 1024.0),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub date: String,
    pub quick: bool,
    pub repetitions: usize,
    pub machine: Machine,
    pub sections: Vec<Section>,
}

impl Report {
    /// Writes `report.md`, `results.json` and the plots into `dir`.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::write(dir.join("results.json"), serde_json::to_vec_pretty(self)?)?;
        for section in &self.sections {
            for plot in &section.plots {
                draw(section, plot, &dir.join(&plot.file))
                    .with_context(|| format!("drawing {}", plot.file))?;
            }
        }
        let path = dir.join("report.md");
        fs::write(&path, self.markdown())?;
        Ok(path)
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "# lb bench, {}{}\n\nMachine: {}, {} cores, {:.0} GiB, kernel {}. Every figure is the median of {} interleaved repetitions, with the smallest and largest sample; ratios are of medians measured in this run.\n",
            self.date,
            if self.quick { " (quick)" } else { "" },
            m.cpu,
            m.cores,
            m.memory_gib,
            m.kernel,
            self.repetitions
        );
        for section in &self.sections {
            section_markdown(&mut out, section);
        }
        out
    }
}

fn section_markdown(out: &mut String, section: &Section) {
    let _ = writeln!(out, "## {}\n\n{}\n", section.title, section.method);
    if !section.figures.is_empty() {
        out.push_str(
            "| case | subject | services | median | min | max |\n|---|---|---:|---:|---:|---:|\n",
        );
        for f in &section.figures {
            let s = &f.summary;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} {} | {} | {} |",
                f.case,
                f.subject,
                f.services,
                number(s.median),
                f.unit,
                number(s.min),
                number(s.max)
            );
        }
        out.push('\n');
    }
    if !section.ratios.is_empty() {
        out.push_str("| comparison | ratio |\n|---|---:|\n");
        for (label, r) in &section.ratios {
            let _ = writeln!(out, "| {label} | {r:.2}x |");
        }
        out.push('\n');
    }
    for plot in &section.plots {
        let _ = writeln!(out, "![{}]({})\n", plot.title, plot.file);
    }
    for note in &section.notes {
        let _ = writeln!(out, "- {note}");
    }
    if !section.notes.is_empty() {
        out.push('\n');
    }
}

/// Three significant digits, without exponent noise.
fn number(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// One line per subject (median), with min-max bars, over a log axis of
/// Service counts.
fn draw(section: &Section, plot: &Plot, path: &Path) -> Result<()> {
    let figures: Vec<&Figure> = section
        .figures
        .iter()
        .filter(|f| f.case == plot.case)
        .collect();
    if figures.is_empty() {
        return Ok(());
    }
    let mut subjects: Vec<&str> = figures.iter().map(|f| f.subject.as_str()).collect();
    subjects.dedup();
    subjects.sort_unstable();
    subjects.dedup();
    let x_max = figures
        .iter()
        .map(|f| f.services)
        .max()
        .unwrap_or(1)
        .max(10) as f64;
    let y_max = figures.iter().map(|f| f.summary.max).fold(0.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&plot.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d((1f64..x_max * 1.5).log_scale(), 0f64..y_max.max(1e-9))?;
    chart
        .configure_mesh()
        .x_desc("Services")
        .y_desc(plot.y_label.as_str())
        .draw()?;
    for (i, subject) in subjects.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut points: Vec<&&Figure> = figures.iter().filter(|f| f.subject == *subject).collect();
        points.sort_by_key(|f| f.services);
        let line: Vec<(f64, f64)> = points
            .iter()
            .map(|f| (f.services.max(1) as f64, f.summary.median))
            .collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?
            .label(*subject)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(points.iter().map(|f| {
            ErrorBar::new_vertical(
                f.services.max(1) as f64,
                f.summary.min,
                f.summary.median,
                f.summary.max,
                color.filled(),
                6,
            )
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// "1 Service", "10,000 Services".
pub fn label(services: usize) -> String {
    let noun = if services == 1 { "Service" } else { "Services" };
    format!("{} {noun}", thousands(services))
}

pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section() -> Section {
        let mut s = Section::new("Per packet", "BPF_PROG_TEST_RUN, a fresh frame per run.");
        s.figure("new flow", "lb", 1, "ns", &[50.0, 52.0, 51.0]);
        s.figure("new flow", "lb", 1000, "ns", &[60.0, 61.0, 59.0]);
        s.figure("new flow", "XDP_PASS floor", 1, "ns", &[20.0, 21.0, 22.0]);
        s.figure("new flow", "not measured", 1, "ns", &[]);
        s.ratio(
            "lb / floor",
            ("new flow", "lb", 1),
            ("new flow", "XDP_PASS floor", 1),
        );
        s.plot("per-packet.svg", "ns per packet", "ns", "new flow");
        s
    }

    #[test]
    fn unmeasured_figures_are_absent_and_ratios_use_medians() {
        let s = section();
        assert_eq!(s.figures.len(), 3);
        assert_eq!(s.ratios, vec![("lb / floor".to_string(), 51.0 / 21.0)]);
    }

    #[test]
    fn writes_markdown_json_and_plots() {
        let dir = tempfile::tempdir().unwrap();
        let report = Report {
            date: "2026-12-01".into(),
            quick: true,
            repetitions: 3,
            machine: Machine::this(),
            sections: vec![section()],
        };
        let md = report.write(dir.path()).unwrap();
        let text = fs::read_to_string(md).unwrap();
        assert!(
            text.contains("| new flow | lb | 1000 | 60.0 ns | 59.0 | 61.0 |"),
            "{text}"
        );
        assert!(text.contains("| lb / floor | 2.43x |"), "{text}");
        assert!(text.contains("![ns per packet](per-packet.svg)"));
        let svg = fs::read_to_string(dir.path().join("per-packet.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("XDP_PASS floor"));
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("results.json")).unwrap()).unwrap();
        assert_eq!(json["sections"][0]["figures"][1]["summary"]["median"], 60.0);
    }
}
