//! A diagnosis as an operator reads it: the verdict on one line, the
//! evidence as bullets, the fix as a command to paste. Coloured on a tty.

use std::fmt::Write as _;

use crate::event::{Diagnosis, Snapshot};

const RED: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[33m";
const GREEN: &str = "\x1b[1;32m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// The block, without a trailing newline.
pub fn block(d: &Diagnosis, colour: bool) -> String {
    let paint = |code: &str, text: &str| {
        if colour {
            format!("{code}{text}{RESET}")
        } else {
            text.to_string()
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} -> {}: {}",
        paint(RED, &format!("DIAGNOSIS {}", d.cause)),
        d.flow.src,
        d.flow.dst,
        paint(
            DIM,
            &format!("({}, after {} ms)", d.symptom, d.detected_after_ms)
        )
    );
    let _ = writeln!(out, "  {}", d.summary);
    for line in &d.evidence {
        let _ = writeln!(out, "  {} {line}", paint(YELLOW, "*"));
    }
    match &d.fix {
        Some(fix) => {
            let _ = write!(out, "  {} {}", paint(GREEN, "fix:"), fix);
        }
        None => {
            let _ = write!(out, "  fix: none known; see the evidence");
        }
    }
    out
}

/// One line saying what kernel state was read for a symptom.
pub fn snapshot_line(s: &Snapshot) -> String {
    let mut parts = vec![s.symptom.clone()];
    if let Some(f) = &s.flow {
        parts.push(format!("{} -> {}", f.src, f.dst));
    }
    if let Some(n) = &s.neighbour {
        parts.push(format!(
            "neigh {} {} {}",
            n.ip,
            n.mac.as_deref().unwrap_or("-"),
            n.state
        ));
    }
    if let Some(p) = &s.probe {
        parts.push(format!("probe answers [{}]", p.distinct_macs().join(" ")));
    }
    if let Some(c) = &s.conntrack {
        parts.push(format!(
            "conntrack {} -> {} reply from {}",
            c.orig_src, c.orig_dst, c.reply_src
        ));
    }
    if !s.errors.is_empty() {
        parts.push(format!("errors: {}", s.errors.join("; ")));
    }
    parts.join(", ")
}
