//! The scale scenario's plots over time, from the CSV files `scale.sh`
//! samples every 2 s during each run (`scale-<system>-<run>.csv`): the
//! subscribers the gateways hold (the ramp and the hold), and for each run
//! every process group's resident memory and CPU. Only the first run of
//! each system is drawn: a run's timeline is not a figure to take a median
//! of.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use plotters::{drawing::DrawingAreaErrorKind, prelude::*};

/// One sampled run: its system (`haproxy@4s`) and its columns by name.
struct Samples {
    system: String,
    columns: BTreeMap<String, Vec<f64>>,
}

/// The process groups, as the CSV names them, with their plot labels.
const GROUPS: [(&str, &str); 4] = [
    ("gateways", "gateways (6)"),
    ("haproxy", "HAProxy"),
    ("load_generator", "load generator"),
    ("redis", "Redis Cluster"),
];

/// Draws the plots into `results`; returns `("scale", file)` for each.
pub(crate) fn plot(results: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let runs = read(results)?;
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let mut plots = Vec::new();
    let subscribers: BTreeMap<String, Vec<(f64, f64)>> =
        runs.iter().map(|run| (run.system.clone(), run.series("subscribers", 1.0))).collect();
    let file = "scale-subscribers-over-time.svg".to_owned();
    draw(
        &results.join(&file),
        "scale: subscribers held by the gateways",
        "subscribers",
        "WebSocket connections the six gateways hold, sampled every 2 s from the start of each run: \
         the ramp, the hold while events are published, and the close.",
        &subscribers,
    )?;
    plots.push(("scale".to_owned(), file));
    for run in &runs {
        let slug = run.system.replace('@', "-");
        for (figure, title, unit, scale) in
            [("rss_mib", "resident memory", "MiB", 1.0), ("cpu", "CPU", "cores", 1.0)]
        {
            let series: BTreeMap<String, Vec<(f64, f64)>> = GROUPS
                .iter()
                .map(|(group, label)| ((*label).to_owned(), run.series(&format!("{group}_{figure}"), scale)))
                .filter(|(_, line)| !line.is_empty())
                .collect();
            let file = format!("scale-{slug}-{}.svg", figure.replace('_', "-"));
            draw(
                &results.join(&file),
                &format!("scale {}: {title} by process group", run.system),
                unit,
                "Each group's processes summed, sampled every 2 s from the start of the run (CPU: cores \
                 busy over the last interval).",
                &series,
            )?;
            plots.push(("scale".to_owned(), file));
        }
    }
    Ok(plots)
}

impl Samples {
    /// `(seconds, value × scale)` for each row with the column.
    fn series(&self, column: &str, scale: f64) -> Vec<(f64, f64)> {
        let (Some(t), Some(values)) = (self.columns.get("t_secs"), self.columns.get(column)) else {
            return Vec::new();
        };
        t.iter()
            .zip(values)
            .filter(|(t, v)| t.is_finite() && v.is_finite())
            .map(|(t, v)| (*t, v * scale))
            .collect()
    }
}

/// The first run's CSV of each system.
fn read(results: &Path) -> anyhow::Result<Vec<Samples>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(results)
        .with_context(|| format!("cannot read {}", results.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("scale-") && n.ends_with("-1.csv"))
        })
        .collect();
    files.sort();
    let mut runs = Vec::new();
    for file in files {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        // scale-haproxy-4s-1.csv: the system is haproxy@4s.
        let inner = name.trim_start_matches("scale-").trim_end_matches("-1.csv");
        let system = match inner.rsplit_once('-') {
            Some((path, cadence)) => format!("{path}@{cadence}"),
            None => inner.to_owned(),
        };
        let text =
            std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
        let mut columns: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for line in lines {
            let cells: Vec<&str> = line.split(',').collect();
            if cells.len() != header.len() {
                continue;
            }
            // An empty cell (a sample that could not be read) keeps its
            // place, so every column stays aligned with the times.
            for (name, cell) in header.iter().zip(cells) {
                let value = cell.trim().parse::<f64>().unwrap_or(f64::NAN);
                columns.entry((*name).to_owned()).or_default().push(value);
            }
        }
        runs.push(Samples { system, columns });
    }
    Ok(runs)
}

/// A line plot over time, linear axes, one line per series.
fn draw(
    path: &Path,
    title: &str,
    unit: &str,
    caption: &str,
    series: &BTreeMap<String, Vec<(f64, f64)>>,
) -> anyhow::Result<()> {
    let err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("{e}");
    let points = || series.values().flatten();
    let x_max = points().map(|p| p.0).fold(1.0_f64, f64::max);
    let y_max = points().map(|p| p.1).fold(0.0_f64, f64::max).max(1e-9) * 1.1;
    let root = SVGBackend::new(path, (720, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (upper, lower) = root.split_vertically(420);
    let axis_text = ("sans-serif", 13).into_font().color(&RGBColor(60, 60, 60));
    let mut chart = ChartBuilder::on(&upper)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .bold_line_style(RGBColor(228, 228, 228))
        .light_line_style(TRANSPARENT)
        .axis_style(RGBColor(120, 120, 120))
        .x_desc("seconds since the run began")
        .y_desc(unit)
        .x_label_style(axis_text.clone())
        .y_label_style(axis_text.clone())
        .axis_desc_style(axis_text)
        .draw()
        .map_err(err)?;
    const COLOURS: [RGBColor; 6] = [
        RGBColor(31, 95, 191),
        RGBColor(224, 123, 0),
        RGBColor(46, 158, 68),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(110, 110, 110),
    ];
    for (index, (name, line)) in series.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()].to_rgba();
        chart
            .draw_series(LineSeries::new(line.iter().copied(), colour.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)?;
    crate::caption::draw(&lower, caption)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_systems_first_run_is_drawn_over_time() {
        let dir = std::env::temp_dir().join(format!("courtside-timeline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let header = "t_secs,subscribers,gateways_rss_mib,haproxy_rss_mib,load_generator_rss_mib,redis_rss_mib,\
                      gateways_cpu,haproxy_cpu,load_generator_cpu,redis_cpu";
        let csv = format!(
            "{header}\n0.0,0,100,10,20,50,0.1,0.0,0.2,0.1\n2.0,,140,30,60,52,1.2,0.4,0.6,0.2\n\
             4.0,5000,150,30,60,52,1.2,0.4,0.6,0.2\n"
        );
        std::fs::write(dir.join("scale-haproxy-4s-1.csv"), &csv).expect("write");
        std::fs::write(dir.join("scale-haproxy-4s-2.csv"), &csv).expect("a second run, not drawn");
        let plots = plot(&dir).expect("plots");
        let files: Vec<&str> = plots.iter().map(|(_, file)| file.as_str()).collect();
        assert_eq!(
            files,
            ["scale-subscribers-over-time.svg", "scale-haproxy-4s-rss-mib.svg", "scale-haproxy-4s-cpu.svg"]
        );
        let svg = std::fs::read_to_string(dir.join(files[0])).expect("svg");
        assert!(svg.contains("haproxy@4s"), "the legend names the run");
        let runs = read(&dir).expect("read");
        assert_eq!(runs.len(), 1, "only the first run");
        assert_eq!(
            runs[0].series("subscribers", 1.0),
            [(0.0, 0.0), (4.0, 5000.0)],
            "the unread sample is left out"
        );
        assert_eq!(runs[0].series("gateways_rss_mib", 1.0).len(), 3);
        let rss = std::fs::read_to_string(dir.join(files[1])).expect("svg");
        assert!(rss.contains("HAProxy") && rss.contains("Redis Cluster"), "one line per group");
        std::fs::remove_dir_all(&dir).ok();
    }
}
