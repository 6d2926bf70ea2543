//! The lab's raw samples turned into a table: printed, and written as
//! bench.json and bench.md.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::machine::Machine;
use super::stats::{Summary, fmt};

fn rows_of(v: &Value) -> Result<Vec<Entry>> {
    let s = |x: &Value| x.as_str().map(String::from);
    Ok(v["rows"]
        .as_array()
        .context("no rows in the bench's output")?
        .iter()
        .map(|r| Entry {
            section: s(&r["section"]).unwrap_or_default(),
            name: s(&r["name"]).unwrap_or_default(),
            unit: s(&r["unit"]).unwrap_or_default(),
            samples: r["samples"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default(),
            reference: s(&r["reference"]),
            note: s(&r["note"]),
            not_measured: s(&r["not_measured"]),
        })
        .collect())
}

/// One row of the lab's output (see tests/src/bin/bench/record.rs).
pub struct Entry {
    pub section: String,
    pub name: String,
    pub unit: String,
    pub samples: Vec<f64>,
    pub reference: Option<String>,
    pub note: Option<String>,
    pub not_measured: Option<String>,
}

pub struct Report {
    pub machine: Machine,
    pub runs: u64,
    pub quick: bool,
    pub entries: Vec<Entry>,
}

impl Report {
    /// Reads the lab's raw JSON; `machine` was described before the lab ran.
    pub fn load(raw: &Path, machine: Machine) -> Result<Report> {
        let text = std::fs::read_to_string(raw)
            .with_context(|| format!("the bench wrote no {}", raw.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", raw.display()))?;
        let entries = rows_of(&v)?;
        Ok(Report {
            machine,
            runs: v["runs"].as_u64().unwrap_or(0),
            quick: v["quick"].as_bool().unwrap_or(false),
            entries,
        })
    }

    /// Adds the rows of another raw file of the same schema (the userspace
    /// pipeline benchmark writes one).
    pub fn merge(&mut self, raw: &Path) -> Result<()> {
        let text = std::fs::read_to_string(raw)
            .with_context(|| format!("the bench wrote no {}", raw.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", raw.display()))?;
        self.entries.extend(rows_of(&v)?);
        Ok(())
    }

    fn title(&self) -> String {
        let scale = if self.quick { "quick" } else { "full" };
        let runs = if self.runs == 1 { "1 run" } else { "runs" };
        let runs = if self.runs == 1 {
            runs.to_string()
        } else {
            format!("{} {runs}", self.runs)
        };
        format!(
            "netprobe bench ({scale}, {runs} each) · {}",
            self.machine.line()
        )
    }

    /// The terminal table, grouped by section.
    pub fn table(&self) -> String {
        let cells: Vec<[String; 4]> = self.entries.iter().map(cells).collect();
        // Widths from measured rows: a "not measured" reason runs on.
        let w = |i: usize| {
            cells
                .iter()
                .filter(|c| !c[2].is_empty() || i == 0)
                .map(|c| width(&c[i]))
                .max()
                .unwrap_or(0)
        };
        let (w0, w1, w2) = (w(0), w(1), w(2));
        let mut out = format!("{}\n", self.title());
        let mut section = "";
        for (e, c) in self.entries.iter().zip(&cells) {
            if e.section != section {
                section = &e.section;
                out += &format!("\n{section}\n");
            }
            let line = if c[2].is_empty() {
                format!("  {}  {}", pad(&c[0], w0), c[1])
            } else {
                format!(
                    "  {}  {}  {}  {}",
                    pad(&c[0], w0),
                    pad(&c[1], w1),
                    pad(&c[2], w2),
                    c[3]
                )
            };
            out += line.trim_end();
            out.push('\n');
        }
        out
    }

    /// One table per section, under a header naming the date and machine.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let scale = if self.quick { "quick" } else { "full" };
        let mut out = format!(
            "# netprobe bench\n\n\
             - Date: {}\n- Machine: kernel {}, {} CPUs, {}; load average {} at start\n\
             - Scale: {scale}, {} runs of each measurement; median and spread \
             (min–max) over the runs; ratios are of paired samples of one run\n",
            m.date, m.kernel, m.nproc, m.cpu, m.load, self.runs
        );
        let mut section = "";
        for e in &self.entries {
            if e.section != section {
                section = &e.section;
                out += &format!(
                    "\n## {section}\n\n\
                     | Measurement | Median | Spread (min–max) | Runs | Reference / notes |\n\
                     |---|---|---|---|---|\n"
                );
            }
            let [median, spread, n, notes] = match (&e.not_measured, Summary::of(&e.samples)) {
                (None, Some(s)) => [
                    format!("{} {}", fmt(s.median), e.unit),
                    format!("{}–{}", fmt(s.min), fmt(s.max)),
                    s.n.to_string(),
                    refs(e),
                ],
                (why, _) => [
                    "not measured".into(),
                    String::new(),
                    String::new(),
                    why.clone().unwrap_or_else(|| "no samples".into()),
                ],
            };
            out += &format!(
                "| {} | {median} | {spread} | {n} | {} |\n",
                e.name,
                notes.replace('|', "\\|")
            );
        }
        out
    }

    pub fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .entries
            .iter()
            .map(|e| {
                let s = Summary::of(&e.samples);
                json!({
                    "section": e.section,
                    "name": e.name,
                    "unit": e.unit,
                    "median": s.map(|s| s.median),
                    "min": s.map(|s| s.min),
                    "max": s.map(|s| s.max),
                    "n": s.map_or(0, |s| s.n),
                    "samples": e.samples,
                    "reference": e.reference,
                    "note": e.note,
                    "not_measured": e.not_measured,
                })
            })
            .collect();
        json!({
            "date": self.machine.date,
            "machine": self.machine.to_json(),
            "runs": self.runs,
            "quick": self.quick,
            "rows": rows,
        })
    }
}

/// Name, median with unit, spread and n, reference and notes.
fn cells(e: &Entry) -> [String; 4] {
    match (&e.not_measured, Summary::of(&e.samples)) {
        (None, Some(s)) => [
            e.name.clone(),
            format!("{} {}", fmt(s.median), e.unit),
            format!("{}–{} (n={})", fmt(s.min), fmt(s.max), s.n),
            refs(e),
        ],
        (why, _) => [
            e.name.clone(),
            format!("not measured: {}", why.as_deref().unwrap_or("no samples")),
            String::new(),
            String::new(),
        ],
    }
}

fn refs(e: &Entry) -> String {
    [e.reference.as_deref(), e.note.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ")
}

fn width(s: &str) -> usize {
    s.chars().count()
}

fn pad(s: &str, w: usize) -> String {
    format!("{s}{}", " ".repeat(w.saturating_sub(width(s))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, samples: &[f64], not_measured: Option<&str>) -> Entry {
        Entry {
            section: "s".into(),
            name: name.into(),
            unit: "s".into(),
            samples: samples.to_vec(),
            reference: Some("ref".into()),
            note: None,
            not_measured: not_measured.map(String::from),
        }
    }

    #[test]
    fn renders_figures_and_reasons() {
        let report = Report {
            machine: Machine {
                date: "2026-11-21T12:00:00Z".into(),
                kernel: "6.18".into(),
                nproc: 2,
                cpu: "cpu".into(),
                load: "0.5 0.4 0.3".into(),
            },
            runs: 3,
            quick: false,
            entries: vec![
                entry("a", &[3.0, 1.5, 2.0], None),
                entry("b", &[], Some("no peer | here")),
                entry("c", &[], None),
            ],
        };
        let t = report.table();
        assert!(t.contains("  a  2 s  1.50–3 (n=3)  ref"), "{t}");
        assert!(t.contains("b  not measured: no peer | here"), "{t}");
        assert!(t.contains("c  not measured: no samples"), "{t}");
        let md = report.markdown();
        assert!(md.contains("- Date: 2026-11-21T12:00:00Z"), "{md}");
        assert!(md.contains("| a | 2 s | 1.50–3 | 3 | ref |"), "{md}");
        assert!(
            md.contains("| b | not measured |  |  | no peer \\| here |"),
            "{md}"
        );
        assert_eq!(report.json()["rows"][0]["median"], 2.0);
    }
}
