//! The benchmark report: the machine and versions, Markdown tables, and SVG plots (the
//! latency CDF of both operators, and bars of CPU per object, peak RSS and PATCH requests
//! per object). The SVG is written by hand: a few polylines and rectangles.

use std::fmt::Write as _;
use std::process::Command;

use super::reactor::Figures;

/// The machine and software versions a report was measured with.
#[derive(Debug, Clone)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Cores available to the process.
    pub cores: usize,
    /// Kernel (`uname -sr`).
    pub kernel: String,
    /// Total memory in GiB.
    pub memory_gib: f64,
    /// The 1-minute load average when the report started.
    pub load: String,
    /// `kopf version`'s first line.
    pub kopf: String,
    /// The git commit of the sources measured (`-dirty` with uncommitted changes).
    pub source: String,
    /// `rustc --version`.
    pub rustc: String,
    /// `python3 --version`.
    pub python: String,
    /// Python Kopf's version.
    pub python_kopf: String,
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The commit checked out where the report runs (the binaries are built from it), marked
/// `-dirty` when tracked files differ from it.
fn source_commit() -> String {
    let commit = command_line("git", &["rev-parse", "--short=12", "HEAD"]);
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    if dirty && commit != "unknown" {
        format!("{commit}-dirty")
    } else {
        commit
    }
}

impl Machine {
    /// Probes this machine; `kopf` is the binary measured.
    pub fn probe(kopf: &std::path::Path) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_gib = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_owned))
            .unwrap_or_else(|| "unknown".into());
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            kernel: command_line("uname", &["-sr"]),
            memory_gib,
            load,
            kopf: command_line(&kopf.display().to_string(), &["version"]),
            source: source_commit(),
            rustc: command_line("rustc", &["--version"]),
            python: command_line("python3", &["--version"]),
            python_kopf: super::python_kopf_version().unwrap_or_else(|| "not installed".into()),
        }
    }

    /// A Markdown table of the machine and versions.
    pub fn markdown_table(&self) -> String {
        format!(
            "| | |\n|---|---|\n| CPU | {} |\n| cores | {} |\n| memory | {:.1} GiB |\n| kernel | {} |\n| load (1 min) at start | {} |\n| kopf | {} |\n| source | {} |\n| rustc | {} |\n| Python | {} |\n| Python Kopf | {} |\n",
            self.cpu,
            self.cores,
            self.memory_gib,
            self.kernel,
            self.load,
            self.kopf,
            self.source,
            self.rustc,
            self.python,
            self.python_kopf
        )
    }
}

const COLORS: [&str; 3] = ["#d9480f", "#1c7ed6", "#2f9e44"];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG of the latency CDFs (log-scaled milliseconds on x, share of objects on y).
pub fn latency_cdf_svg(rows: &[Figures]) -> String {
    let (w, h) = (720.0, 380.0);
    let (left, right, top, bottom) = (60.0, 20.0, 40.0, 50.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let all: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.latencies_ms.iter().copied())
        .filter(|v| v.is_finite())
        .collect();
    let min = all.iter().copied().fold(f64::INFINITY, f64::min);
    let min = if min.is_finite() { min.max(0.1) } else { 1.0 };
    let max = all.iter().copied().fold(0.0f64, f64::max).max(min * 10.0);
    let (lo, hi) = (min.log10().floor(), max.log10().ceil());
    let x = |ms: f64| left + pw * (ms.max(0.1).log10() - lo) / (hi - lo);
    let y = |share: f64| top + ph * (1.0 - share);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{h}" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">Latency from creation to status.create_fn stored (CDF over objects)</text>
"#,
        w / 2.0
    );
    // Grid and axes.
    let mut decade = lo;
    while decade <= hi {
        let ms = 10f64.powf(decade);
        let gx = x(ms);
        let label = if ms >= 1.0 {
            format!("{ms:.0}")
        } else {
            format!("{ms}")
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{gx:.1}" y1="{top}" x2="{gx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            top + ph,
            top + ph + 16.0
        );
        decade += 1.0;
    }
    for i in 0..=4 {
        let share = f64::from(i) / 4.0;
        let gy = y(share);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{:.0}%</text>"##,
            left + pw,
            left - 6.0,
            gy + 4.0,
            share * 100.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">milliseconds (log scale)</text>"#,
        left + pw / 2.0,
        h - 10.0
    );
    for (i, row) in rows.iter().enumerate() {
        let n = row.latencies_ms.len();
        if n == 0 {
            continue;
        }
        let color = COLORS[i % COLORS.len()];
        let step = (n / 400).max(1);
        let mut points = String::new();
        for (k, ms) in row.latencies_ms.iter().enumerate() {
            if k % step == 0 || k + 1 == n {
                let _ = write!(points, "{:.1},{:.1} ", x(*ms), y((k + 1) as f64 / n as f64));
            }
        }
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.trim_end()
        );
        let ly = top + 16.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="14" height="4" fill="{color}"/><text x="{:.1}" y="{:.1}">{} (p50 {:.0} ms, p95 {:.0} ms)</text>"#,
            left + 12.0,
            ly - 4.0,
            left + 32.0,
            ly + 1.0,
            escape(row.name),
            row.p50_ms(),
            row.p95_ms()
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// An SVG of bar panels comparing the operators: CPU ms per object, peak RSS MiB, and
/// PATCH requests per object.
pub fn resources_svg(rows: &[Figures]) -> String {
    type Metric = fn(&Figures) -> f64;
    let panels: [(&str, Metric); 3] = [
        ("CPU ms per object", |r| r.cpu_ms_per_object),
        ("peak RSS MiB", |r| r.peak_rss_mib),
        ("PATCH requests per object", |r| r.patches_per_object),
    ];
    let (w, h) = (720.0, 300.0);
    let (top, bottom) = (50.0, 60.0);
    let panel_w = w / panels.len() as f64;
    let ph = h - top - bottom;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{h}" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">Resources per object lifecycle (lower is better)</text>
"#,
        w / 2.0
    );
    for (p, (title, metric)) in panels.iter().enumerate() {
        let x0 = panel_w * p as f64;
        let max = rows
            .iter()
            .map(metric)
            .fold(0.0f64, f64::max)
            .max(f64::MIN_POSITIVE);
        let bar_w = (panel_w - 60.0) / rows.len().max(1) as f64;
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{title}</text><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#888"/>"##,
            x0 + panel_w / 2.0,
            h - 18.0,
            x0 + 20.0,
            top + ph,
            x0 + panel_w - 20.0,
            top + ph
        );
        for (i, row) in rows.iter().enumerate() {
            let value = metric(row);
            let bh = ph * value / max;
            let bx = x0 + 30.0 + bar_w * i as f64;
            let by = top + ph - bh;
            let _ = writeln!(
                svg,
                r#"<rect x="{bx:.1}" y="{by:.1}" width="{:.1}" height="{bh:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{value:.2}</text><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                bar_w - 8.0,
                COLORS[i % COLORS.len()],
                bx + (bar_w - 8.0) / 2.0,
                by - 4.0,
                bx + (bar_w - 8.0) / 2.0,
                top + ph + 14.0,
                escape(row.name)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(name: &'static str, scale: f64) -> Figures {
        Figures {
            name,
            objects: 3,
            cpu_ms_per_object: 1.0 * scale,
            peak_rss_mib: 40.0 * scale,
            latencies_ms: vec![10.0 * scale, 20.0 * scale, 300.0 * scale],
            requests_per_object: 6.0,
            patches_per_object: 6.0,
            wall_s: 1.0,
            start_to_watch_ms: 100.0,
        }
    }

    #[test]
    fn comparisons_name_each_peer_present() {
        let kopf = figures("kopf (Rust)", 1.0);
        let python = figures("Python Kopf 1.45", 10.0);
        let peer = figures("hand-written kube-rs", 2.0);
        let all = super::super::reactor::comparisons(&[kopf.clone(), python.clone(), peer.clone()]);
        assert!(all.contains("kopf vs Python Kopf: 10.0x less CPU"), "{all}");
        assert!(
            all.contains("kopf vs hand-written kube-rs: 0.50x its CPU"),
            "{all}"
        );
        let only_python = super::super::reactor::comparisons(&[kopf, python]);
        assert!(!only_python.contains("kube-rs"), "{only_python}");
        assert_eq!(
            super::super::reactor::comparisons(&[peer]),
            "",
            "nothing to compare without kopf"
        );
    }

    #[test]
    fn svgs_are_well_formed_and_name_both_operators() {
        let rows = [figures("kopf (Rust)", 1.0), figures("Python <Kopf>", 10.0)];
        for svg in [latency_cdf_svg(&rows), resources_svg(&rows)] {
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
            assert!(
                svg.contains("kopf (Rust)") && svg.contains("Python &lt;Kopf&gt;"),
                "{svg}"
            );
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
        assert_eq!(latency_cdf_svg(&rows).matches("<polyline").count(), 2);
        assert_eq!(resources_svg(&rows).matches("<rect x=").count(), 6);
    }

    #[test]
    fn svgs_of_empty_runs_do_not_break() {
        let mut empty = figures("empty", 1.0);
        empty.latencies_ms.clear();
        let svg = latency_cdf_svg(&[empty]);
        assert!(!svg.contains("NaN"), "{svg}");
    }
}
