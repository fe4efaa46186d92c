//! The benchmark's SVG chart: per store and workload, each system's median speed relative to
//! gocryptfs (or to plain when gocryptfs was not measured), drawn by hand, no dependency.

use super::report::{Report, StoreReport};
use super::systems::System;
use super::workloads::Workload;
use std::fmt::Write;

const WIDTH: f64 = 900.0;
const LABEL_W: f64 = 190.0;
const BAR_AREA: f64 = WIDTH - LABEL_W - 70.0;
const BAR_H: f64 = 11.0;
const GROUP_GAP: f64 = 9.0;

fn color(s: System) -> &'static str {
    match s {
        System::Plain => "#555555",
        System::Control => "#a0a0a0",
        System::Secretfs => "#1f6fd1",
        System::SecretfsWriteback => "#7fb0ea",
        System::Block => "#2e9e4f",
        System::Gocryptfs => "#e07b1a",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// What the bars are relative to: the peer users compare with, else the plain store. (Against
/// plain tmpfs every FUSE bar would be a sliver, and plain against a FUSE peer would flatten the
/// others, so plain is drawn only as the baseline.)
fn baseline(store: &StoreReport) -> Option<System> {
    [System::Gocryptfs, System::Plain]
        .into_iter()
        .find(|s| store.systems.contains(s))
        .or_else(|| store.systems.first().copied())
}

fn panel(svg: &mut String, store: &StoreReport, top: f64) -> f64 {
    let Some(base) = baseline(store) else {
        return top;
    };
    let bars: Vec<System> = store
        .systems
        .iter()
        .copied()
        .filter(|s| *s != base && *s != System::Plain)
        .collect();
    let rel: Vec<Vec<Option<f64>>> = Workload::ALL
        .iter()
        .map(|w| bars.iter().map(|s| store.speedup(*s, base, *w)).collect())
        .collect();
    let max = rel
        .iter()
        .flatten()
        .flatten()
        .fold(1.0f64, |m, v| m.max(*v));
    let scale = BAR_AREA / max;
    let mut y = top;
    let _ = writeln!(
        svg,
        r#"<text x="10" y="{:.0}" font-size="15" font-weight="bold">{} store ({}): speed relative to {}</text>"#,
        y + 15.0,
        store.store.name(),
        escape(&store.fstype),
        base.name()
    );
    y += 28.0;
    let group_h = bars.len() as f64 * BAR_H + GROUP_GAP;
    let x1 = LABEL_W + scale;
    let _ = writeln!(
        svg,
        r##"<line x1="{x1:.1}" y1="{:.1}" x2="{x1:.1}" y2="{:.1}" stroke="#555" stroke-dasharray="4 3"/>"##,
        y - 4.0,
        y + group_h * Workload::ALL.len() as f64
    );
    for (w, values) in Workload::ALL.iter().zip(&rel) {
        let _ = writeln!(
            svg,
            r#"<text x="{:.0}" y="{:.1}" font-size="12" text-anchor="end">{}</text>"#,
            LABEL_W - 8.0,
            y + bars.len() as f64 * BAR_H / 2.0 + 4.0,
            escape(w.label())
        );
        for (i, (s, v)) in bars.iter().zip(values).enumerate() {
            let by = y + i as f64 * BAR_H;
            if let Some(v) = v {
                let _ = writeln!(
                    svg,
                    r#"<rect x="{LABEL_W:.0}" y="{by:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {v:.2}×</title></rect>"#,
                    (v * scale).max(1.0),
                    BAR_H - 2.0,
                    color(*s),
                    s.name()
                );
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" font-size="9">{v:.2}×</text>"#,
                    LABEL_W + (v * scale).max(1.0) + 3.0,
                    by + BAR_H - 3.0
                );
            }
        }
        y += group_h;
    }
    // Legend.
    let mut x = LABEL_W;
    for s in &bars {
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.0}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.0}" y="{:.1}" font-size="12">{}</text>"#,
            y + 4.0,
            color(*s),
            x + 16.0,
            y + 14.0,
            s.name()
        );
        x += 26.0 + 8.0 * s.name().len() as f64;
    }
    y + 34.0
}

/// The chart for every store of the report, stacked.
pub fn svg(report: &Report) -> String {
    let mut body = String::new();
    let mut y = 10.0;
    for store in &report.stores {
        y = panel(&mut body, store, y);
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH:.0}\" height=\"{y:.0}\" \
         viewBox=\"0 0 {WIDTH:.0} {y:.0}\" font-family=\"sans-serif\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bar_per_system_and_workload_relative_to_gocryptfs() {
        let mut r = crate::report::tests::report();
        let svg_text = svg(&r);
        assert!(svg_text.starts_with("<svg") && svg_text.trim_end().ends_with("</svg>"));
        // control and secretfs × 9 workloads, plus 2 legend boxes and the background.
        assert_eq!(svg_text.matches("<rect").count(), 2 * 9 + 2 + 1);
        assert!(svg_text.contains("speed relative to gocryptfs"));
        // secretfs at 900 MB/s vs gocryptfs at 400: 2.25×.
        assert!(svg_text.contains("<title>secretfs: 2.25×</title>"));

        // Without gocryptfs (block mode in the VM) the bars are relative to plain.
        let store = &mut r.stores[0];
        store.systems.retain(|s| *s != System::Gocryptfs);
        let svg_text = svg(&r);
        assert!(svg_text.contains("speed relative to plain"));
        assert!(svg_text.contains("<title>secretfs: 0.45×</title>"));
    }
}
