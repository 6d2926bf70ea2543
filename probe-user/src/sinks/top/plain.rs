//! `netprobe top` when stdout is not a terminal: the same state as a plain
//! text block every refresh, for logs and pipes.

use std::fmt::Write as _;

use chrono::{SecondsFormat, Utc};

use super::{
    app::{App, INTERVAL_LABELS, PER_FLOW_LABELS},
    view::{addr_or_dash, age, short_state},
};

/// Flows listed per block.
const TOP_FLOWS: usize = 10;
/// Handshakes and diagnoses listed per block.
const TOP_OTHER: usize = 5;

/// One block, ending in a blank line.
pub fn summary(app: &App) -> String {
    let d = app.data();
    let now = d.now.unwrap_or_else(Utc::now);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== netprobe top {} ==",
        now.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let events = match &d.stats {
        Some(s) => format!("ring buffer: {} events, {} lost", s.events, s.lost),
        None => "ring buffer: no stats yet".into(),
    };
    let _ = writeln!(
        out,
        "{events}; flows {}; retransmits {} ({} in the last 10 s)",
        d.flows.len(),
        d.retransmits,
        app.recent_retransmits(10)
    );
    let pairs = |labels: &[&str], counts: &[u64]| {
        labels
            .iter()
            .zip(counts)
            .map(|(l, n)| format!("{l} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "retransmit gaps: {}",
        pairs(&INTERVAL_LABELS, &d.intervals)
    );
    let _ = writeln!(
        out,
        "flows by retransmit count: {}",
        pairs(&PER_FLOW_LABELS, &app.per_flow_histogram())
    );

    let rows = app.rows();
    if rows.is_empty() {
        let _ = writeln!(out, "top flows: none");
    } else {
        let _ = writeln!(out, "top flows by {}:", app.sort().name());
        let _ = writeln!(
            out,
            "  {:>6}  {:<10}  {:<22}  {:<22}  {:<22}  {:<5}  LAST",
            "RETX", "STATE", "SRC", "DST", "NAT TARGET", "PROC"
        );
        for r in rows.iter().take(TOP_FLOWS) {
            let _ = writeln!(
                out,
                "  {:>6}  {:<10}  {:<22}  {:<22}  {:<22}  {:<5}  {}",
                r.retransmits,
                short_state(&r.state),
                addr_or_dash(r.src),
                r.dst,
                addr_or_dash(r.nat),
                r.process.as_deref().unwrap_or("-"),
                age(now, r.last)
            );
        }
    }

    let (pending, unanswered) = app.handshake_counts();
    let _ = writeln!(
        out,
        "TLS handshakes: {pending} pending, {unanswered} unanswered ({} answered, {} unanswered in all)",
        d.answered, d.unanswered_total
    );
    for h in app.handshakes().iter().take(TOP_OTHER) {
        let _ = writeln!(
            out,
            "  {} {} -> {} sni {} waiting {}",
            if h.unanswered {
                "UNANSWERED"
            } else {
                "pending"
            },
            h.flow.src,
            h.flow.dst,
            h.sni.as_deref().unwrap_or("-"),
            age(now, h.since)
        );
    }
    let diagnoses: Vec<_> = app.diagnoses().take(TOP_OTHER).collect();
    if diagnoses.is_empty() {
        let _ = writeln!(out, "diagnoses: none");
    } else {
        let _ = writeln!(out, "diagnoses, latest first:");
        for g in diagnoses {
            let _ = writeln!(
                out,
                "  {} {} ({}) {} -> {}: {}",
                g.time.format("%H:%M:%S"),
                g.cause,
                g.symptom,
                g.flow.src,
                g.flow.dst,
                g.summary
            );
            if let Some(fix) = &g.fix {
                let _ = writeln!(out, "    fix: {fix}");
            }
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::top::app::{
        Config,
        tests::{diagnosis, hello, retx, stats, t},
    };

    #[test]
    fn block_names_flows_counts_handshakes_and_diagnoses() {
        let mut app = App::new(Config::default());
        app.tick(t(0));
        assert!(summary(&app).contains("top flows: none"));
        app.apply(&stats(0, 42, 1));
        app.apply(&retx(0, "10.0.0.1:40000", "10.0.0.2:8000", 1));
        app.apply(&retx(200, "10.0.0.1:40000", "10.0.0.2:8000", 2));
        app.apply(&hello(0, "10.0.0.1:40001", "10.0.0.2:443"));
        app.apply(&diagnosis(
            300,
            "10.0.0.1:40000",
            "10.0.0.2:8000",
            "packet_loss",
        ));
        app.tick(t(1000));
        let s = summary(&app);
        for want in [
            "ring buffer: 42 events, 1 lost",
            "retransmits 2",
            "200ms 1",
            "     2  ESTAB       10.0.0.1:40000",
            "TLS handshakes: 1 pending, 0 unanswered",
            "pending 10.0.0.1:40001 -> 10.0.0.2:443 sni api.example waiting 1.0s",
            "packet_loss (retransmit_storm) 10.0.0.1:40000 -> 10.0.0.2:8000",
            "fix: conntrack -D",
        ] {
            assert!(s.contains(want), "{want:?} missing from\n{s}");
        }
        assert!(!s.contains('\x1b'), "no escape sequences in plain mode");
    }
}
