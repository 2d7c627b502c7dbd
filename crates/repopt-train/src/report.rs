//! Reports: SVG plots of training curves and of searched scales per block (the paper's
//! Fig. 7), and the pipeline's comparison table as Markdown.

use std::path::Path;

use plotters::prelude::*;
use repopt_models::any::ScaleMeans;

use crate::error::{Result, TrainError};
use crate::metrics::Metric;

fn plot_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Config(format!("plotting {}: {e}", path.display()))
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    (lo - pad, hi + pad)
}

/// Points of one series, labelled.
type Series = (String, Vec<(f64, f64)>);

/// One chart of line series, each in its own colour.
struct Panel<'a> {
    caption: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    /// Mark every point with a dot (for sparse series).
    dots: bool,
    /// Show the series labels.
    legend: bool,
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    path: &Path,
    panel: Panel,
    series: &[Series],
) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(panel.caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(panel.x, panel.y)
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc(panel.x_desc)
        .y_desc(panel.y_desc)
        .draw()
        .map_err(|e| plot_err(path, e))?;
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| plot_err(path, e))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        if panel.dots {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| plot_err(path, e))?;
        }
    }
    if panel.legend {
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| plot_err(path, e))?;
    }
    Ok(())
}

/// Per run, the points `point` picks out of its metrics.
fn series_of(
    runs: &[(String, Vec<Metric>)],
    point: impl Fn(&Metric) -> Option<(f64, f64)>,
) -> Vec<Series> {
    runs.iter()
        .map(|(name, m)| (name.clone(), m.iter().filter_map(&point).collect()))
        .collect()
}

fn ranges(series: &[Series]) -> ((f64, f64), (f64, f64)) {
    let points = || series.iter().flat_map(|(_, p)| p.iter());
    (range(points().map(|q| q.0)), range(points().map(|q| q.1)))
}

/// Training loss per step and test top-1 per epoch for one or more runs, side by side.
///
/// ```no_run
/// use repopt_train::{metrics::read_metrics, report::plot_training};
/// let m = read_metrics("runs/train/metrics.jsonl".as_ref())?;
/// plot_training(&[("target".to_string(), m)], "runs/train/curves.svg".as_ref())?;
/// # Ok::<(), repopt_train::TrainError>(())
/// ```
pub fn plot_training(runs: &[(String, Vec<Metric>)], path: &Path) -> Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let (left, right) = root.split_horizontally(550);
        let train = series_of(runs, |m| match m {
            Metric::Train { step, loss, .. } => Some((*step as f64, *loss)),
            _ => None,
        });
        let evals = series_of(runs, |m| match m {
            Metric::Eval { epoch, top1, .. } => Some(((*epoch + 1) as f64, *top1)),
            _ => None,
        });
        let ((x0, x1), (y0, y1)) = ranges(&train);
        let panel = Panel {
            caption: "training loss",
            x_desc: "step",
            y_desc: "loss",
            x: x0.max(0.0)..x1,
            y: y0.max(0.0)..y1,
            dots: false,
            legend: true,
        };
        draw_panel(&left, path, panel, &train)?;
        let ((x0, x1), (y0, y1)) = ranges(&evals);
        let panel = Panel {
            caption: "test top-1 (%)",
            x_desc: "epoch",
            y_desc: "top-1 %",
            x: x0..x1,
            y: y0..y1.min(100.5),
            dots: true,
            legend: false,
        };
        draw_panel(&right, path, panel, &evals)?;
        root.present().map_err(|e| plot_err(path, e))?;
    }
    write_whole(path, &svg)
}

/// Histograms of one layer's kernel values for several models (the paper's Figs. 3 and 5),
/// drawn as densities over a common symmetric range in 101 bins.
pub fn plot_histograms(layers: &[(String, Vec<f32>)], title: &str, path: &Path) -> Result<()> {
    const BINS: usize = 101;
    let amax = layers
        .iter()
        .flat_map(|(_, v)| v.iter())
        .fold(0.0f64, |m, v| m.max((*v as f64).abs()))
        .max(1e-12);
    let width = 2.0 * amax / BINS as f64;
    let series: Vec<Series> = layers
        .iter()
        .map(|(label, values)| {
            let mut counts = [0usize; BINS];
            for &v in values {
                let b = ((v as f64 + amax) / width)
                    .floor()
                    .clamp(0.0, (BINS - 1) as f64);
                counts[b as usize] += 1;
            }
            let n = values.len().max(1) as f64;
            let pts = counts
                .iter()
                .enumerate()
                .map(|(i, &c)| (-amax + (i as f64 + 0.5) * width, c as f64 / n / width))
                .collect();
            (label.clone(), pts)
        })
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let (_, (_, y1)) = ranges(&series);
        let panel = Panel {
            caption: title,
            x_desc: "kernel value",
            y_desc: "density",
            x: -amax..amax,
            y: 0.0..y1,
            dots: false,
            legend: true,
        };
        draw_panel(&root, path, panel, &series)?;
        root.present().map_err(|e| plot_err(path, e))?;
    }
    write_whole(path, &svg)
}

/// Mean searched scales per block, one series per kind of scale (`kinds`: key and legend;
/// for RepOpt-VGG s (3x3), t (1x1) and u (identity, where it exists)), as in the paper's
/// Fig. 7.
pub fn plot_scales(
    summary: &[ScaleMeans],
    kinds: &[(&str, &str)],
    title: &str,
    path: &Path,
) -> Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let series: Vec<Series> = kinds
            .iter()
            .map(|(kind, label)| {
                let pts = summary
                    .iter()
                    .enumerate()
                    .filter_map(|(i, b)| b.means.get(kind).map(|v| ((i + 1) as f64, *v as f64)))
                    .collect();
                (label.to_string(), pts)
            })
            .collect();
        let (_, (y0, y1)) = ranges(&series);
        let n = summary.len().max(1) as f64;
        let panel = Panel {
            caption: title,
            x_desc: "block",
            y_desc: "mean scale",
            x: 0.5..n + 0.5,
            y: y0.min(0.0)..y1,
            dots: true,
            legend: true,
        };
        draw_panel(&root, path, panel, &series)?;
        root.present().map_err(|e| plot_err(path, e))?;
    }
    write_whole(path, &svg)
}

/// Plots are drawn in memory and then written whole, like every file of a run.
fn write_whole(path: &Path, svg: &str) -> Result<()> {
    repopt_models::checkpoint::write_atomic(path, svg.as_bytes())?;
    Ok(())
}

/// A Markdown table from a header and rows of cells.
pub fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!(
        "| {} |\n|{}|\n",
        header.join(" | "),
        header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for r in rows {
        out.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_written_as_svg() {
        let dir = std::env::temp_dir().join(format!("repopt-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let m = vec![
            Metric::Train {
                epoch: 0,
                step: 10,
                loss: 2.0,
                lr: 0.1,
                images_per_s: 10.0,
            },
            Metric::Train {
                epoch: 0,
                step: 20,
                loss: 1.5,
                lr: 0.1,
                images_per_s: 10.0,
            },
            Metric::Eval {
                epoch: 0,
                step: 20,
                loss: 1.0,
                top1: 60.0,
                top5: 95.0,
            },
            Metric::Eval {
                epoch: 1,
                step: 40,
                loss: 0.8,
                top1: 70.0,
                top5: 97.0,
            },
        ];
        let p = dir.join("curves.svg");
        plot_training(&[("a".into(), m.clone()), ("b".into(), m)], &p).unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("training loss"));
        let s = vec![
            ScaleMeans {
                block: "stage0".into(),
                means: [("s", 1.0), ("t", 0.9)].into(),
            },
            ScaleMeans {
                block: "stage1.1".into(),
                means: [("s", 0.7), ("t", 1.2), ("u", 0.5)].into(),
            },
        ];
        let p = dir.join("scales.svg");
        let kinds = [("s", "3x3 (s)"), ("t", "1x1 (t)"), ("u", "identity (u)")];
        plot_scales(&s, &kinds, "mean scales", &p).unwrap();
        assert!(
            std::fs::read_to_string(&p)
                .unwrap()
                .contains("identity (u)")
        );
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(
            markdown_table(&["a", "b"], &[vec!["1".into(), "2".into()]]),
            "| a | b |\n|---|---|\n| 1 | 2 |\n"
        );
    }
}
