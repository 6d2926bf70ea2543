//! Rows of the bench's raw output, runs that may fail, and the JSON file
//! xtask reads (`{"runs", "quick", "rows": [{section, name, unit, samples,
//! reference, note, not_measured}]}`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

use crate::Config;

/// One figure: its samples (one per successful run), or why there are none.
pub struct Row {
    pub section: &'static str,
    pub name: String,
    pub unit: &'static str,
    pub samples: Vec<f64>,
    /// A reference point printed beside it (kubectl's timeout, a target).
    pub reference: Option<String>,
    pub note: Option<String>,
    pub not_measured: Option<String>,
}

impl Row {
    pub fn new(section: &'static str, name: impl Into<String>, unit: &'static str) -> Row {
        Row {
            section,
            name: name.into(),
            unit,
            samples: Vec::new(),
            reference: None,
            note: None,
            not_measured: None,
        }
    }

    /// A figure this bench does not produce, and why.
    pub fn not_measured(section: &'static str, name: impl Into<String>, why: &str) -> Row {
        let mut r = Row::new(section, name, "");
        r.not_measured = Some(why.to_string());
        r
    }

    pub fn samples(mut self, s: impl IntoIterator<Item = f64>) -> Row {
        self.samples = s.into_iter().filter(|x| x.is_finite()).collect();
        self
    }

    pub fn reference(mut self, r: impl Into<String>) -> Row {
        self.reference = Some(r.into());
        self
    }

    pub fn note(mut self, n: impl Into<String>) -> Row {
        let n = n.into();
        self.note = Some(match self.note.take() {
            Some(old) => format!("{old}; {n}"),
            None => n,
        });
        self
    }

    fn to_json(&self) -> Value {
        json!({
            "section": self.section,
            "name": self.name,
            "unit": self.unit,
            "samples": self.samples,
            "reference": self.reference,
            "note": self.note,
            "not_measured": self.not_measured,
        })
    }
}

/// The outcome of running one measurement `attempted` times.
pub struct Runs<T> {
    pub ok: Vec<T>,
    pub errors: Vec<String>,
    pub attempted: usize,
}

/// Runs `f` `cfg.runs` times; a panicking run (the lab harness panics on
/// any failed step, after its guards cleaned up) is recorded, not fatal.
pub fn repeat<T>(what: &str, cfg: &Config, mut f: impl FnMut(usize) -> T) -> Runs<T> {
    let mut runs = Runs {
        ok: Vec::new(),
        errors: Vec::new(),
        attempted: cfg.runs,
    };
    for i in 0..cfg.runs {
        eprintln!("bench: {what}: run {}/{}", i + 1, cfg.runs);
        let t = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| f(i))) {
            Ok(v) => runs.ok.push(v),
            Err(payload) => {
                let msg = panic_message(payload.as_ref());
                eprintln!("bench: {what}: run {} failed: {msg}", i + 1);
                runs.errors.push(msg);
            }
        }
        eprintln!("bench: {what}: run {} took {:.1?}", i + 1, t.elapsed());
    }
    runs
}

impl<T> Runs<T> {
    /// Marks rows without samples as not measured, and notes failed runs.
    pub fn finish(&self, rows: Vec<Row>) -> Vec<Row> {
        let first = self.errors.first().map(String::as_str).unwrap_or("");
        rows.into_iter()
            .map(|mut r| {
                if r.not_measured.is_some() {
                    return r;
                }
                if r.samples.is_empty() {
                    r.not_measured = Some(if self.errors.is_empty() {
                        "no sample in any run".to_string()
                    } else {
                        format!("all {} runs failed: {first}", self.attempted)
                    });
                } else if !self.errors.is_empty() {
                    r = r.note(format!(
                        "{} of {} runs failed: {first}",
                        self.errors.len(),
                        self.attempted
                    ));
                }
                r
            })
            .collect()
    }

    /// One value per successful run.
    pub fn each<U>(&self, f: impl Fn(&T) -> U) -> Vec<U> {
        self.ok.iter().map(f).collect()
    }
}

/// The first line of a panic message, cut to a table-friendly length.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    let text = p
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| p.downcast_ref::<&str>().copied())
        .unwrap_or("panic without a message");
    let line = text.lines().next().unwrap_or("").trim();
    let mut cut: String = line.chars().take(160).collect();
    if cut.len() < line.len() {
        cut.push('…');
    }
    cut
}

/// Writes the raw results for xtask.
pub fn write(path: &Path, cfg: &Config, rows: &[Row]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let doc = json!({
        "runs": cfg.runs,
        "quick": cfg.quick,
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
    });
    std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
}

/// Per-run ratios `a[i] / b[i]` (paired samples of the same run), ×100 if
/// `percent`.
pub fn ratios(a: &[f64], b: &[f64], percent: bool) -> Vec<f64> {
    let k = if percent { 100.0 } else { 1.0 };
    a.iter()
        .zip(b)
        .filter(|(_, y)| **y != 0.0)
        .map(|(x, y)| k * x / y)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_runs_are_reported() {
        let cfg = Config {
            runs: 3,
            quick: true,
        };
        let runs = repeat("t", &cfg, |i| {
            assert!(i != 1, "boom {i}\nmore");
            i as f64
        });
        assert_eq!(runs.ok, [0.0, 2.0]);
        assert_eq!(runs.errors, ["boom 1"]);
        let rows = runs.finish(vec![
            Row::new("s", "a", "s").samples(runs.each(|x| *x)),
            Row::new("s", "b", "s"),
        ]);
        assert!(
            rows[0]
                .note
                .as_deref()
                .unwrap()
                .contains("1 of 3 runs failed")
        );
        assert!(rows[1].not_measured.as_deref().unwrap().contains("boom 1"));
        assert_eq!(ratios(&[1.0, 2.0], &[2.0, 0.0], true), [50.0]);
    }
}
