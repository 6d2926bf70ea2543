//! report.md: what the capture found, for whoever receives the bundle. The
//! diagnoses with their evidence and fix, a timeline of the key events
//! (TLS hellos, neighbour changes, ARP announcements, resets, first
//! retransmits, state reads, diagnoses), retransmits per flow, and what
//! each file holds. Bounded in size whatever the capture saw.

use std::{
    collections::{HashMap, VecDeque},
    fmt::Write as _,
    net::SocketAddr,
};

use chrono::{DateTime, Utc};

use super::progress::{Counts, human_bytes, plural};
use crate::model::event::{Diagnosis, Event, EventBody, Stats};

/// Timeline lines: diagnoses, state reads, TLS hellos and the capture's
/// own notes are pinned (up to [`PINNED`]); other key events keep the first
/// [`HEAD`] and the last [`TAIL`]; first retransmits of flows at most
/// [`RETRANSMIT_LINES`] (a storm of thousands of flows would bury the rest).
const PINNED: usize = 400;
const HEAD: usize = 200;
const TAIL: usize = 100;
const RETRANSMIT_LINES: usize = 50;
/// Diagnoses rendered in full; later ones get one line each.
const FULL_DIAGNOSES: usize = 20;
const MAX_LISTED_DIAGNOSES: usize = 200;
/// Flows whose retransmits are counted, and shown.
const MAX_FLOWS: usize = 10_000;
const SHOWN_FLOWS: usize = 20;

struct Retransmits {
    count: u64,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    state: String,
}

struct Line {
    time: DateTime<Utc>,
    text: String,
}

impl Line {
    fn new(time: DateTime<Utc>, text: String) -> Self {
        // One line each, and no way out of the code block.
        let text = text.replace('\n', " ").replace("```", "'''");
        Self { time, text }
    }
}

/// The key events of the capture, bounded.
#[derive(Default)]
pub struct Timeline {
    pinned: Vec<Line>,
    pinned_omitted: u64,
    head: Vec<Line>,
    tail: VecDeque<Line>,
    omitted: u64,
    retransmit_lines: usize,
    arp_requests: u64,
    retransmits: HashMap<(SocketAddr, SocketAddr), Retransmits>,
    retransmits_uncounted: u64,
}

impl Timeline {
    /// Takes note of `e` if it is a key event.
    pub fn observe(&mut self, e: &Event) {
        match &e.body {
            EventBody::Stats(_) => {}
            EventBody::Arp(a) if a.op == "request" => self.arp_requests += 1,
            EventBody::Retransmit(r) => self.retransmit(e, r.src, r.dst, &r.state),
            EventBody::Diagnosis(d) => self.pin(Line::new(
                e.time,
                format!(
                    "{} DIAGNOSIS {} {} -> {} ({})",
                    clock(e.time),
                    d.cause,
                    d.flow.src,
                    d.flow.dst,
                    d.symptom
                ),
            )),
            EventBody::Snapshot(_)
            | EventBody::TlsClientHello(_)
            | EventBody::TlsServerHello(_) => self.pin(Line::new(e.time, e.to_string())),
            _ => self.push(Line::new(e.time, e.to_string())),
        }
    }

    /// A line of the capture's own (tables read, cap reached).
    pub fn note(&mut self, time: DateTime<Utc>, text: &str) {
        let text = format!("{} {:<8} {text}", clock(time), "CAPTURE");
        self.pin(Line::new(time, text));
    }

    fn retransmit(&mut self, e: &Event, src: SocketAddr, dst: SocketAddr, state: &str) {
        if let Some(f) = self.retransmits.get_mut(&(src, dst)) {
            f.count += 1;
            f.last = e.time;
            state.clone_into(&mut f.state);
            return;
        }
        if self.retransmits.len() >= MAX_FLOWS {
            self.retransmits_uncounted += 1;
            return;
        }
        let first = Retransmits {
            count: 1,
            first: e.time,
            last: e.time,
            state: state.to_string(),
        };
        self.retransmits.insert((src, dst), first);
        if self.retransmit_lines < RETRANSMIT_LINES {
            self.retransmit_lines += 1;
            self.push(Line::new(
                e.time,
                format!("{e} (first retransmit of this flow)"),
            ));
        }
    }

    fn pin(&mut self, line: Line) {
        if self.pinned.len() < PINNED {
            self.pinned.push(line);
        } else {
            self.pinned_omitted += 1;
        }
    }

    fn push(&mut self, line: Line) {
        if self.head.len() < HEAD {
            self.head.push(line);
            return;
        }
        if self.tail.len() == TAIL {
            self.tail.pop_front();
            self.omitted += 1;
        }
        self.tail.push_back(line);
    }

    fn is_empty(&self) -> bool {
        self.pinned.is_empty() && self.head.is_empty()
    }

    /// Every kept line in time order, with a marker where lines were left out.
    fn lines(&self) -> Vec<String> {
        let mut all: Vec<(DateTime<Utc>, String)> =
            self.head.iter().map(|l| (l.time, l.text.clone())).collect();
        if let Some(next) = self.tail.front()
            && self.omitted > 0
        {
            let gap = format!(
                "... {} other key events omitted here (all are in events.jsonl) ...",
                self.omitted
            );
            all.push((next.time, gap));
        }
        all.extend(self.tail.iter().map(|l| (l.time, l.text.clone())));
        all.extend(self.pinned.iter().map(|l| (l.time, l.text.clone())));
        // Stable: the gap marker stays before the first tail line.
        all.sort_by_key(|(t, _)| *t);
        all.into_iter().map(|(_, l)| l).collect()
    }
}

fn clock(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S%.6f").to_string()
}

/// Everything report.md says.
pub struct Input<'a> {
    pub started: DateTime<Utc>,
    pub ended: DateTime<Utc>,
    pub command: String,
    pub netns: Option<String>,
    pub ports: Vec<u16>,
    pub stopped: String,
    pub counts: Counts,
    pub last_stats: Option<&'a Stats>,
    pub diagnoses: &'a [(DateTime<Utc>, Diagnosis)],
    pub timeline: &'a Timeline,
}

pub fn render(r: &Input) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# netprobe capture report\n");
    let secs = (r.ended - r.started).num_milliseconds() as f64 / 1000.0;
    let lost = r.last_stats.map_or(0, |s| s.lost);
    let rows = [
        (
            "started",
            format!("{} UTC", r.started.format("%Y-%m-%d %H:%M:%S%.3f")),
        ),
        (
            "ended",
            format!(
                "{} UTC ({secs:.1} s)",
                r.ended.format("%Y-%m-%d %H:%M:%S%.3f")
            ),
        ),
        ("command", format!("`{}`", r.command.replace('`', "'"))),
        (
            "namespace",
            r.netns
                .as_deref()
                .map_or("netprobe's own".to_string(), |n| format!("`{n}`")),
        ),
        (
            "TLS ports",
            r.ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("stopped", r.stopped.clone()),
        (
            "recorded",
            format!(
                "{}, {}, {}, {}, {} written",
                plural(r.counts.events, "event"),
                plural(r.counts.packets, "packet"),
                plural(r.counts.flows, "flow"),
                plural(r.counts.diagnoses, "diagnosis"),
                human_bytes(r.counts.bytes)
            ),
        ),
        (
            "ring buffer losses",
            if lost == 0 {
                "none".to_string()
            } else {
                format!("{lost} records lost")
            },
        ),
    ];
    let _ = writeln!(out, "| | |\n|---|---|");
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {} |", v.replace('|', "\\|"));
    }

    let _ = writeln!(out, "\n## Diagnoses\n");
    if r.diagnoses.is_empty() {
        let _ = writeln!(
            out,
            "None: netprobe named no cause while it ran. The timeline and the files below show what it saw.\n"
        );
    }
    for (i, (time, d)) in r.diagnoses.iter().enumerate().take(MAX_LISTED_DIAGNOSES) {
        if i < FULL_DIAGNOSES {
            diagnosis(&mut out, i + 1, *time, d);
        } else {
            let _ = writeln!(
                out,
                "- {}. `{}` {} -> {} at {} UTC",
                i + 1,
                d.cause,
                d.flow.src,
                d.flow.dst,
                clock(*time)
            );
        }
    }
    if r.diagnoses.len() > MAX_LISTED_DIAGNOSES {
        let _ = writeln!(
            out,
            "- ... and {} more in events.jsonl",
            r.diagnoses.len() - MAX_LISTED_DIAGNOSES
        );
    }

    timeline(&mut out, r.timeline);
    retransmits(&mut out, r.timeline);

    let _ = writeln!(
        out,
        "\n## Files\n\n\
         - `packets.pcapng`: frames copied by the TC classifier on each interface: packet headers, TLS handshake \
         bytes, ARP and NDP; no other payload. `tshark -r packets.pcapng -Y tls.handshake.type==1` shows the \
         ClientHellos, `-Y tcp.analysis.retransmission` the retransmissions.\n\
         - `events.jsonl`: every event and diagnosis as `netprobe trace --json` writes them, with the kernel state \
         read for each symptom. `netprobe replay events.jsonl` reaches the diagnoses above again, without root.\n\
         - `neighbours.json`, `conntrack.json`: the whole neighbour and conntrack tables of the namespace, read at \
         the start and at each diagnosis (`reason` says which).\n\
         - `report.md`: this report."
    );
    out
}

fn diagnosis(out: &mut String, n: usize, time: DateTime<Utc>, d: &Diagnosis) {
    let _ = writeln!(
        out,
        "### {n}. `{}`: {} -> {}\n",
        d.cause, d.flow.src, d.flow.dst
    );
    let _ = writeln!(
        out,
        "Symptom `{}`, named at {} UTC, {} ms after the first sign of trouble.\n",
        d.symptom,
        clock(time),
        d.detected_after_ms
    );
    let _ = writeln!(out, "{}\n", d.summary);
    if !d.evidence.is_empty() {
        let _ = writeln!(out, "**Evidence**\n");
        for line in &d.evidence {
            let _ = writeln!(out, "- {line}");
        }
        out.push('\n');
    }
    match &d.fix {
        Some(fix) => {
            let _ = writeln!(
                out,
                "**Fix**\n\n```sh\n{}\n```\n",
                fix.replace("```", "'''")
            );
        }
        None => {
            let _ = writeln!(out, "**Fix**: none known; see the evidence.\n");
        }
    }
}

fn timeline(out: &mut String, t: &Timeline) {
    let _ = writeln!(out, "## Timeline (UTC)\n");
    if t.is_empty() {
        let _ = writeln!(out, "No key events.");
    } else {
        let _ = writeln!(out, "```text");
        for line in t.lines() {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "```");
    }
    if t.pinned_omitted > 0 {
        let _ = writeln!(
            out,
            "\n{} more TLS hellos, state reads and diagnoses are in events.jsonl.",
            t.pinned_omitted
        );
    }
    let more_flows = t.retransmits.len() - t.retransmit_lines;
    if more_flows > 0 {
        let _ = writeln!(
            out,
            "\nThe first retransmit of {} more flows is not listed (see the table below).",
            more_flows
        );
    }
    if t.arp_requests > 0 {
        let _ = writeln!(
            out,
            "\nPlus {} ARP requests (in events.jsonl and packets.pcapng).",
            t.arp_requests
        );
    }
}

fn retransmits(out: &mut String, t: &Timeline) {
    if t.retransmits.is_empty() {
        return;
    }
    let mut flows: Vec<_> = t.retransmits.iter().collect();
    flows.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.1.first.cmp(&b.1.first)));
    let _ = writeln!(
        out,
        "\n## Retransmits by flow\n\n| flow | retransmits | state | first | last |\n|---|---|---|---|---|"
    );
    for ((src, dst), f) in flows.iter().take(SHOWN_FLOWS) {
        let _ = writeln!(
            out,
            "| {src} -> {dst} | {} | {} | {} | {} |",
            f.count,
            f.state.replace('|', "\\|"),
            clock(f.first),
            clock(f.last)
        );
    }
    if flows.len() > SHOWN_FLOWS {
        let _ = writeln!(
            out,
            "\n{} more flows retransmitted (see events.jsonl).",
            flows.len() - SHOWN_FLOWS
        );
    }
    if t.retransmits_uncounted > 0 {
        let _ = writeln!(
            out,
            "\n{} retransmits of further flows were not counted here.",
            t.retransmits_uncounted
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::event::FlowRef,
        sinks::output::samples::{self, at},
    };

    fn diag() -> Diagnosis {
        Diagnosis {
            evidence: vec![
                "neighbour 10.0.0.100 dev eth0: 02:00:00:00:00:03 STALE".into(),
                "two MACs answer for 10.0.0.100".into(),
            ],
            fix: Some("ip neigh del 10.0.0.100 dev eth0".into()),
            detected_after_ms: 3120,
            ..Diagnosis::new(
                "tls_handshake_unanswered",
                "stale_neighbour",
                FlowRef {
                    src: "10.0.0.1:40000".parse().unwrap(),
                    dst: "10.0.0.100:6443".parse().unwrap(),
                },
                "The ClientHello went to 02:00:00:00:00:03, not to the VIP's owner.",
            )
        }
    }

    fn input<'a>(diagnoses: &'a [(DateTime<Utc>, Diagnosis)], timeline: &'a Timeline) -> Input<'a> {
        Input {
            started: at(),
            ended: at() + chrono::Duration::milliseconds(4500),
            command: "netprobe capture --out /tmp/b --until-diagnosis".into(),
            netns: Some("client".into()),
            ports: vec![443, 6443],
            stopped: "first diagnosis (--until-diagnosis)".into(),
            counts: Counts {
                events: 10,
                packets: 20,
                flows: 2,
                diagnoses: diagnoses.len() as u64,
                bytes: 4096,
            },
            last_stats: None,
            diagnoses,
            timeline,
        }
    }

    #[test]
    fn diagnoses_with_evidence_fix_and_timeline() {
        let mut t = Timeline::default();
        for e in samples::all() {
            t.observe(&e);
        }
        let mut again = samples::retransmit();
        again.time = at() + chrono::Duration::seconds(1);
        t.observe(&again);
        t.note(at(), "neighbour and conntrack tables read (start)");
        let d = Event {
            time: at(),
            netns: None,
            body: EventBody::Diagnosis(Box::new(diag())),
        };
        t.observe(&d);
        let ds = [(at(), diag())];
        let md = render(&input(&ds, &t));
        assert!(md.starts_with("# netprobe capture report\n"), "{md}");
        assert!(
            md.contains("### 1. `stale_neighbour`: 10.0.0.1:40000 -> 10.0.0.100:6443"),
            "{md}"
        );
        assert!(md.contains("- two MACs answer for 10.0.0.100\n"), "{md}");
        assert!(
            md.contains("```sh\nip neigh del 10.0.0.100 dev eth0\n```"),
            "{md}"
        );
        assert!(md.contains("3120 ms after"), "{md}");
        assert!(md.contains("| namespace | `client` |"), "{md}");
        assert!(
            md.contains("12:00:00.123456 TLS CH   10.0.0.1:40000 -> 10.0.0.2:6443 sni=api.example"),
            "{md}"
        );
        assert!(
            md.contains(
                "12:00:00.123456 DIAGNOSIS stale_neighbour 10.0.0.1:40000 -> 10.0.0.100:6443"
            ),
            "{md}"
        );
        assert!(
            md.contains("CAPTURE  neighbour and conntrack tables read (start)"),
            "{md}"
        );
        // The first retransmit of a flow is a key event; the rest are counted.
        assert_eq!(md.matches("RETRANS").count(), 1, "{md}");
        assert!(
            md.contains("| 10.0.0.1:40000 -> 10.0.0.2:8000 | 2 | ESTABLISHED |"),
            "{md}"
        );
        assert!(!md.contains("STATS"), "{md}");
        assert!(md.contains("netprobe replay events.jsonl"));
    }

    #[test]
    fn nothing_found_says_so() {
        let t = Timeline::default();
        let md = render(&input(&[], &t));
        assert!(md.contains("None: netprobe named no cause"), "{md}");
        assert!(md.contains("No key events."), "{md}");
    }

    #[test]
    fn size_is_bounded_however_long_the_capture_and_a_storm_buries_nothing() {
        let ms = chrono::Duration::milliseconds;
        let mut t = Timeline::default();
        t.observe(&samples::client_hello());
        // A retransmit storm of 20000 flows elsewhere on the node...
        for i in 0..20_000u32 {
            let mut e = samples::retransmit();
            e.time = at() + ms(i64::from(i));
            if let EventBody::Retransmit(r) = &mut e.body {
                r.src.set_port(1024 + (i % 60_000) as u16);
                r.src
                    .set_ip(std::net::Ipv4Addr::from(0x0a00_0000 + i).into());
            }
            t.observe(&e);
        }
        // ...neighbour churn and more hellos than the pinned lines hold.
        for i in 0..50_000 {
            let mut e = samples::neighbour();
            e.time = at() + ms(i);
            t.observe(&e);
        }
        for i in 0..5_000 {
            let mut e = samples::server_hello();
            e.time = at() + ms(i);
            t.observe(&e);
        }
        let many: Vec<_> = (0..1000).map(|_| (at(), diag())).collect();
        let md = render(&input(&many, &t));
        assert!(md.len() < 200 * 1024, "{} bytes", md.len());
        assert!(md.contains("sni=api.example"), "the first hello is kept");
        assert_eq!(
            md.matches("first retransmit of this flow").count(),
            RETRANSMIT_LINES
        );
        assert!(md.contains(&format!(
            "The first retransmit of {} more flows is not listed",
            10_000 - RETRANSMIT_LINES
        )));
        assert!(md.contains("retransmits of further flows were not counted"));
        let omitted = 50_000 + RETRANSMIT_LINES - HEAD - TAIL;
        assert!(
            md.contains(&format!("... {omitted} other key events omitted")),
            "{md}"
        );
        assert!(md.contains(&format!("\n{} more TLS hellos", 5_001 - PINNED)));
        assert!(md.contains("and 800 more in events.jsonl"));
        // The last events are kept, in time order.
        assert!(md.contains("12:00:50.122456 NEIGH"), "last event kept");
        let times: Vec<&str> = md
            .split("```text\n")
            .nth(1)
            .unwrap()
            .lines()
            .take_while(|l| *l != "```")
            .filter(|l| !l.starts_with("..."))
            .map(|l| &l[..15])
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "timeline out of order"
        );
    }

    #[test]
    fn wire_text_cannot_break_the_code_block() {
        let mut t = Timeline::default();
        let mut e = samples::client_hello();
        if let EventBody::TlsClientHello(ch) = &mut e.body {
            ch.sni = Some("```\n# pwned".into());
        }
        t.observe(&e);
        let md = render(&input(&[], &t));
        assert!(!md.contains("\n# pwned"), "{md}");
        assert_eq!(md.matches("```").count(), 2, "{md}");
    }
}
