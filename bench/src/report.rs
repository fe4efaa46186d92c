//! The benchmark's results: the JSON document (every sample kept), and its Markdown rendering
//! with medians, ranges, ratios to plain and to gocryptfs, and the file-mode targets.

use super::systems::System;
use super::workloads::{Sample, Sizes, Workload, GIB};
use super::Store;
use std::fmt::Write;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Host {
    pub started_unix: u64,
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub secretfs: String,
    pub gocryptfs: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Skipped {
    pub system: System,
    pub reason: String,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Series {
    pub system: System,
    pub workload: Workload,
    pub samples: Vec<Sample>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MemorySeries {
    pub system: System,
    pub rss_kib_after_untar: Vec<u64>,
    pub peak_kib: Option<u64>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StoreReport {
    pub store: Store,
    pub fstype: String,
    pub systems: Vec<System>,
    pub series: Vec<Series>,
    pub memory: Vec<MemorySeries>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub format: u32,
    pub host: Host,
    pub quick: bool,
    pub rounds: u32,
    pub sizes: Sizes,
    pub tree: String,
    pub tree_bytes: u64,
    pub skipped: Vec<Skipped>,
    pub stores: Vec<StoreReport>,
}

/// Median and range of a set of values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

impl StoreReport {
    pub fn series(&self, system: System, workload: Workload) -> Option<&Series> {
        self.series
            .iter()
            .find(|s| s.system == system && s.workload == workload)
    }

    pub fn stats(&self, system: System, workload: Workload) -> Option<Stats> {
        Stats::of(
            self.series(system, workload)?
                .samples
                .iter()
                .map(|s| s.value),
        )
    }

    pub fn cpu_per_gib(&self, system: System, workload: Workload) -> Option<Stats> {
        Stats::of(
            self.series(system, workload)?
                .samples
                .iter()
                .filter_map(Sample::cpu_per_gib),
        )
    }

    /// How much faster `a` is than `b` on this workload (> 1: faster), from the medians.
    pub fn speedup(&self, a: System, b: System, workload: Workload) -> Option<f64> {
        let (x, y) = (
            self.stats(a, workload)?.median,
            self.stats(b, workload)?.median,
        );
        let r = if workload.higher_is_better() {
            x / y
        } else {
            y / x
        };
        r.is_finite().then_some(r)
    }
}

fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{:.0}", v)
    } else if v >= 10.0 {
        format!("{:.1}", v)
    } else {
        format!("{:.2}", v)
    }
}

fn fmt_stats(s: Stats) -> String {
    format!(
        "{} ({}–{})",
        fmt_value(s.median),
        fmt_value(s.min),
        fmt_value(s.max)
    )
}

fn fmt_bytes(b: u64) -> String {
    if b >= GIB && b % GIB == 0 {
        format!("{} GiB", b / GIB)
    } else {
        format!("{} MiB", b.div_ceil(1 << 20))
    }
}

/// Civil date (UTC) of a Unix time, for the report header.
fn utc_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs / 60) % 60
    )
}

/// One file-mode target from the issue, checked against a tmpfs run.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    pub met: Option<bool>,
}

fn ratio_target(
    store: &StoreReport,
    subject: System,
    workload: Workload,
    peer: System,
    min_speedup: f64,
    text: &str,
) -> TargetCheck {
    let r = store.speedup(subject, peer, workload);
    TargetCheck {
        target: text.to_string(),
        measured: match r {
            Some(r) if workload.higher_is_better() => format!("{r:.2}×"),
            Some(r) => format!("{:.2}× the time", 1.0 / r),
            None => format!("n/a ({} or {} not measured)", subject.name(), peer.name()),
        },
        met: r.map(|r| r >= min_speedup),
    }
}

/// The performance targets of file mode (tmpfs store, one interleaved run).
pub fn targets(store: &StoreReport) -> Vec<TargetCheck> {
    use System::{Control, Gocryptfs, Secretfs, SecretfsWriteback};
    use Workload::*;
    let mut out = vec![
        ratio_target(
            store,
            Secretfs,
            SeqWrite,
            Gocryptfs,
            1.5,
            "seq write ≥ 1.5× gocryptfs",
        ),
        ratio_target(
            store,
            Secretfs,
            SeqRead,
            Gocryptfs,
            1.5,
            "seq read ≥ 1.5× gocryptfs",
        ),
        ratio_target(
            store,
            Secretfs,
            SeqRead,
            Control,
            0.9,
            "seq read ≥ 0.9× passthrough control",
        ),
        ratio_target(
            store,
            Secretfs,
            RandWrite,
            Gocryptfs,
            3.0,
            "rand 4 KiB write ≥ 3× gocryptfs",
        ),
        // The same target for a mount with the kernel's writeback cache (off by default: it
        // moves a full disk's error from write to fsync, see docs/SEMANTICS.md).
        ratio_target(
            store,
            SecretfsWriteback,
            RandWrite,
            Gocryptfs,
            3.0,
            "rand 4 KiB write ≥ 3× gocryptfs, with `-o writeback`",
        ),
        ratio_target(
            store,
            Secretfs,
            RandRead,
            Gocryptfs,
            1.3,
            "rand 4 KiB read ≥ 1.3× gocryptfs",
        ),
    ];
    for w in [Create, ListRecursive, ReadAll, Delete, Untar] {
        out.push(ratio_target(
            store,
            Secretfs,
            w,
            Gocryptfs,
            1.0 / 0.75,
            &format!("{} ≤ 0.75× gocryptfs's time", w.label()),
        ));
    }
    for w in [SeqWrite, SeqRead] {
        let cpu = store.cpu_per_gib(System::Secretfs, w);
        out.push(TargetCheck {
            target: format!("{}: ≤ 1.0 CPU-s per GiB (client + daemon)", w.label()),
            measured: cpu.map_or("n/a".into(), |c| format!("{:.2} CPU-s/GiB", c.median)),
            met: cpu.map(|c| c.median <= 1.0),
        });
    }
    let mem = store.memory.iter().find(|m| m.system == System::Secretfs);
    if let Some(m) = mem.filter(|m| !m.rss_kib_after_untar.is_empty()) {
        let rss = &m.rss_kib_after_untar;
        let last = rss[rss.len() - 1] as f64 / 1024.0;
        // The first round warms caches up; growth is judged from the second on.
        let base = rss[1.min(rss.len() - 1)] as f64 / 1024.0;
        out.push(TargetCheck {
            target: format!(
                "daemon RSS ≤ 64 MiB after {} untar rounds, not growing",
                rss.len()
            ),
            measured: format!("{last:.1} MiB (round 2: {base:.1} MiB)"),
            met: Some(last <= 64.0 && last - base <= 4.0),
        });
    }
    out
}

fn mark(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "✅ met",
        Some(false) => "❌ not met",
        None => "–",
    }
}

/// The whole report as Markdown.
pub fn markdown(r: &Report) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# secretfs comparison benchmark\n");
    let _ = writeln!(
        md,
        "{}, {} × {}, kernel {}, secretfs {}{}.  ",
        utc_date(r.host.started_unix),
        r.host.cpus,
        r.host.cpu_model,
        r.host.kernel,
        r.host.secretfs,
        r.host
            .gocryptfs
            .as_deref()
            .map(|g| format!(", {g}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        md,
        "{} run: {} rounds, systems interleaved round by round; sequential file {}, {} random \
         4 KiB operations, {} small files of 4 KiB, tree `{}` ({}). Each cell: median (min–max).\n",
        if r.quick { "Quick" } else { "Full" },
        r.rounds,
        fmt_bytes(r.sizes.seq_bytes),
        r.sizes.rand_ops,
        r.sizes.files,
        r.tree,
        fmt_bytes(r.tree_bytes)
    );
    if !r.skipped.is_empty() {
        let _ = writeln!(md, "Not measured:");
        for s in &r.skipped {
            let _ = writeln!(md, "- {}: {}", s.system.name(), s.reason);
        }
        md.push('\n');
    }
    for store in &r.stores {
        store_markdown(&mut md, store);
    }
    md
}

fn store_markdown(md: &mut String, store: &StoreReport) {
    let systems = &store.systems;
    let _ = writeln!(
        md,
        "## Backing store: {} ({})\n",
        store.store.name(),
        store.fstype
    );
    let header = |md: &mut String, first: &str| {
        let _ = write!(md, "| {first} |");
        for s in systems {
            let _ = write!(md, " {} |", s.name());
        }
        md.push('\n');
        md.push_str("|---|");
        for _ in systems {
            md.push_str("---:|");
        }
        md.push('\n');
    };
    header(md, "workload");
    for w in Workload::ALL {
        let _ = write!(md, "| {} ({}) |", w.label(), w.unit());
        for &s in systems {
            let cell = store
                .stats(s, w)
                .map(fmt_stats)
                .unwrap_or_else(|| "–".into());
            let _ = write!(md, " {cell} |");
        }
        md.push('\n');
    }

    let peers: Vec<(System, System)> = systems
        .iter()
        .filter(|s| **s != System::Plain)
        .map(|s| (*s, System::Plain))
        .chain(
            [System::Secretfs, System::SecretfsWriteback, System::Block]
                .into_iter()
                .filter(|s| systems.contains(s) && systems.contains(&System::Gocryptfs))
                .map(|s| (s, System::Gocryptfs)),
        )
        .chain(
            (systems.contains(&System::Secretfs) && systems.contains(&System::Control))
                .then_some((System::Secretfs, System::Control)),
        )
        .collect();
    if !peers.is_empty() {
        let _ = writeln!(md, "\nSpeed ratios of the medians (> 1: faster):\n");
        let _ = write!(md, "| workload |");
        for (a, b) in &peers {
            let _ = write!(md, " {} / {} |", a.name(), b.name());
        }
        md.push_str("\n|---|");
        for _ in &peers {
            md.push_str("---:|");
        }
        md.push('\n');
        for w in Workload::ALL {
            let _ = write!(md, "| {} |", w.label());
            for (a, b) in &peers {
                let cell = store
                    .speedup(*a, *b, w)
                    .map(|r| format!("{r:.2}×"))
                    .unwrap_or_else(|| "–".into());
                let _ = write!(md, " {cell} |");
            }
            md.push('\n');
        }
    }

    let _ = writeln!(
        md,
        "\nCPU seconds per GiB (benchmark process + FUSE daemon; kernel threads such as \
         dm-crypt's kcryptd are not counted):\n"
    );
    header(md, "workload");
    for w in Workload::ALL.into_iter().filter(|w| w.moves_bulk_data()) {
        let _ = write!(md, "| {} |", w.label());
        for &s in systems {
            let cell = store
                .cpu_per_gib(s, w)
                .map(fmt_stats)
                .unwrap_or_else(|| "–".into());
            let _ = write!(md, " {cell} |");
        }
        md.push('\n');
    }

    if !store.memory.is_empty() {
        let _ = writeln!(
            md,
            "\nDaemon memory (MiB): resident after each untar + delete round, and peak:\n"
        );
        let _ = writeln!(
            md,
            "| system | RSS after each round | peak |\n|---|---|---:|"
        );
        for m in &store.memory {
            let rounds: Vec<String> = m
                .rss_kib_after_untar
                .iter()
                .map(|k| format!("{:.1}", *k as f64 / 1024.0))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                m.system.name(),
                rounds.join(", "),
                m.peak_kib
                    .map(|k| format!("{:.1}", k as f64 / 1024.0))
                    .unwrap_or_else(|| "–".into())
            );
        }
    }

    if store.store == Store::Tmpfs && systems.contains(&System::Secretfs) {
        let _ = writeln!(md, "\nFile-mode targets (tmpfs, this run):\n");
        let _ = writeln!(md, "| target | measured | |\n|---|---|---|");
        for t in targets(store) {
            let _ = writeln!(md, "| {} | {} | {} |", t.target, t.measured, mark(t.met));
        }
    }
    md.push('\n');
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(value: f64) -> Sample {
        Sample {
            value,
            seconds: 1.0,
            cpu_client: 0.25,
            cpu_daemon: Some(0.25),
            bytes: GIB,
        }
    }

    pub(crate) fn report() -> Report {
        let mut series = Vec::new();
        let figures = [
            (System::Plain, 2000.0, 1.0),
            (System::Control, 1000.0, 2.0),
            (System::Secretfs, 900.0, 2.5),
            (System::Gocryptfs, 400.0, 4.0),
        ];
        for (system, speed, time) in figures {
            for w in Workload::ALL {
                let v = if w.higher_is_better() { speed } else { time };
                series.push(Series {
                    system,
                    workload: w,
                    samples: vec![sample(v * 0.9), sample(v), sample(v * 1.2)],
                });
            }
        }
        Report {
            format: 1,
            host: Host {
                started_unix: 1_795_000_000,
                cpus: 2,
                cpu_model: "Test CPU".into(),
                kernel: "6.18".into(),
                secretfs: "0.1.0".into(),
                gocryptfs: Some("gocryptfs 2.3".into()),
            },
            quick: true,
            rounds: 3,
            sizes: Sizes {
                seq_bytes: 64 << 20,
                rand_ops: 100,
                files: 10,
            },
            tree: "/usr/include/linux".into(),
            tree_bytes: 7 << 20,
            skipped: vec![Skipped {
                system: System::Block,
                reason: "no device-mapper".into(),
            }],
            stores: vec![StoreReport {
                store: Store::Tmpfs,
                fstype: "tmpfs".into(),
                systems: figures.iter().map(|f| f.0).collect(),
                series,
                memory: vec![MemorySeries {
                    system: System::Secretfs,
                    rss_kib_after_untar: vec![20_000, 21_000, 21_500],
                    peak_kib: Some(30_000),
                }],
            }],
        }
    }

    #[test]
    fn stats_are_median_and_range() {
        let s = Stats::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Stats::of([4.0, 1.0]).unwrap().median, 2.5);
        assert!(Stats::of([]).is_none());
        assert!(Stats::of([f64::NAN]).is_none());
    }

    #[test]
    fn speedups_invert_for_times() {
        let r = report();
        let s = &r.stores[0];
        let seq = s
            .speedup(System::Secretfs, System::Gocryptfs, Workload::SeqWrite)
            .unwrap();
        assert!((seq - 2.25).abs() < 1e-9);
        let untar = s
            .speedup(System::Secretfs, System::Gocryptfs, Workload::Untar)
            .unwrap();
        assert!((untar - 1.6).abs() < 1e-9);
    }

    #[test]
    fn targets_are_checked_both_ways() {
        let r = report();
        let checks = targets(&r.stores[0]);
        let find = |t: &str| checks.iter().find(|c| c.target.starts_with(t)).unwrap();
        assert_eq!(find("seq write ≥ 1.5×").met, Some(true));
        assert_eq!(find("rand 4 KiB write ≥ 3×").met, Some(false));
        assert_eq!(find("seq read ≥ 0.9× passthrough").met, Some(true));
        assert_eq!(find("untar tree ≤ 0.75×").met, Some(true));
        assert_eq!(find("seq write (fsync): ≤ 1.0 CPU-s").met, Some(true));
        assert_eq!(find("daemon RSS").met, Some(true));
    }

    #[test]
    fn markdown_has_every_system_ratio_and_the_skip_reason() {
        let md = markdown(&report());
        assert!(md.contains("| workload | plain | control | secretfs | gocryptfs |"));
        assert!(md.contains("secretfs / gocryptfs"));
        assert!(md.contains("secretfs / control"));
        assert!(md.contains("block: no device-mapper"));
        assert!(md.contains("900 (810–1080)"));
        assert!(md.contains("2026-"));
    }

    #[test]
    fn json_round_trips() {
        let r = report();
        let text = serde_json::to_string(&r).unwrap();
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(markdown(&back), markdown(&r));
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00 UTC");
    }
}
