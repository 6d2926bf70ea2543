//! A diagnosis as an operator reads it: the verdict on one line, the
//! evidence as bullets, the fix as a command to paste. Coloured on a tty.

use std::fmt::Write as _;

use super::text::Clean;
use crate::model::event::{Diagnosis, Snapshot};

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
        "{} {} -> {}{}: {}",
        paint(RED, &format!("DIAGNOSIS {}", d.cause)),
        d.flow.src,
        d.flow.dst,
        super::text::owner(d.pod.as_ref(), d.container.as_ref()),
        paint(
            DIM,
            &format!("({}, after {} ms)", d.symptom, d.detected_after_ms)
        )
    );
    // Summary, evidence and fix quote the wire (SNI, device names): escape
    // control characters so nothing in them can drive the terminal.
    let _ = writeln!(out, "  {}", Clean(&d.summary));
    for line in &d.evidence {
        let _ = writeln!(out, "  {} {}", paint(YELLOW, "*"), Clean(line));
    }
    match &d.fix {
        Some(fix) => {
            let _ = write!(out, "  {} {}", paint(GREEN, "fix:"), Clean(fix));
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
    Clean(&parts.join(", ")).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::FlowRef;

    #[test]
    fn wire_text_cannot_drive_the_terminal() {
        let d = Diagnosis {
            evidence: vec!["SNI kube\u{1b}[2Jrnetes\r".into()],
            fix: Some("ip neigh del x\u{7}".into()),
            detected_after_ms: 1,
            ..Diagnosis::new(
                "tls_handshake_unanswered",
                "unknown",
                FlowRef {
                    src: "10.0.0.1:1".parse().unwrap(),
                    dst: "10.0.0.2:443".parse().unwrap(),
                },
                "sni kube\u{1b}[2Jrnetes",
            )
        };
        let text = block(&d, false);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(text.contains("kube\\u{1b}[2Jrnetes"), "{text}");
    }

    #[test]
    fn the_first_line_names_the_pod_and_container() {
        let mut d = Diagnosis::new(
            "retransmit_storm",
            "packet_loss",
            FlowRef {
                src: "10.0.0.1:1".parse().unwrap(),
                dst: "10.0.0.2:443".parse().unwrap(),
            },
            "s",
        );
        d.pod = Some(crate::model::pod::Pod {
            namespace: Some("shop".into()),
            name: Some("cart-0".into()),
            uid: "u".into(),
        });
        d.container = Some(crate::model::pod::Container {
            id: "fbaab001dae80c854d21b9e80dfdf899".into(),
            name: Some("web".into()),
        });
        let first = block(&d, false).lines().next().unwrap().to_string();
        assert!(
            first.contains("10.0.0.1:1 -> 10.0.0.2:443 pod shop/cart-0 container web:"),
            "{first}"
        );
        d.container.as_mut().unwrap().name = None;
        d.pod.as_mut().unwrap().name = None;
        let first = block(&d, false).lines().next().unwrap().to_string();
        assert!(first.contains(" pod u container fbaab001dae80:"), "{first}");
    }
}
