//! The state behind `netprobe top`, with no terminal in sight: events go in
//! ([`App::apply`]), time moves on ([`App::tick`]), keys change the view
//! ([`App::key`]), and the drawing code reads the result ([`App::rows`],
//! [`App::rate_series`], ...). Everything here is unit-tested.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use chrono::{DateTime, Utc};

use crate::model::event::{Diagnosis, Event, EventBody, FlowRef, Retransmit, Snapshot, Stats};

/// Labels of the retransmit-gap histogram: each gap goes to the nearest
/// RTO back-off step (200 ms doubling), on a log scale, so timer jitter
/// (a 410 ms gap) does not split a step over two buckets.
pub const INTERVAL_LABELS: [&str; 8] = [
    "<140ms", "200ms", "400ms", "800ms", "1.6s", "3.2s", "6.4s", "12.8s+",
];
/// Lower bounds (ms) of buckets 1.. of [`INTERVAL_LABELS`]: 200 ms * 2^(k - 1/2).
const INTERVAL_BOUNDS_MS: [u64; 7] = [141, 283, 566, 1131, 2263, 4525, 9051];

/// Labels of the retransmits-per-flow histogram (powers of two).
pub const PER_FLOW_LABELS: [&str; 8] = ["1", "2", "3-4", "5-8", "9-16", "17-32", "33-64", "65+"];

/// Bucket of [`INTERVAL_LABELS`] for the gap between two retransmits of a flow.
pub fn interval_bucket(gap: Duration) -> usize {
    let ms = gap.as_millis() as u64;
    INTERVAL_BOUNDS_MS.iter().filter(|b| ms >= **b).count()
}

/// Bucket of [`PER_FLOW_LABELS`] for a flow with `n` (>= 1) retransmits.
pub fn per_flow_bucket(n: u64) -> usize {
    // 1 -> 0, 2 -> 1, 3..=4 -> 2, 5..=8 -> 3, ...: ceil(log2 n).
    let b = (u64::BITS - n.max(1).saturating_sub(1).leading_zeros()) as usize;
    b.min(PER_FLOW_LABELS.len() - 1)
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Flows tracked at most; the least recently retransmitting go first.
    pub max_flows: usize,
    /// ClientHellos waiting for an answer, at most.
    pub max_handshakes: usize,
    /// Seconds of per-second retransmit counts kept for the sparkline.
    pub history_secs: usize,
    /// Diagnoses kept (latest first).
    pub max_diagnoses: usize,
    /// A ClientHello without ServerHello this long is unanswered.
    pub handshake_timeout: Duration,
    /// An unanswered handshake leaves the list after this long.
    pub unanswered_keep: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_flows: 10_000,
            max_handshakes: 10_000,
            history_secs: 300,
            max_diagnoses: 50,
            handshake_timeout: Duration::from_secs(3),
            unanswered_keep: Duration::from_secs(300),
        }
    }
}

/// One retransmitting flow.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowStats {
    pub flow: FlowRef,
    /// TCP state at the latest retransmit (`RESET` once the peer reset it).
    pub state: String,
    pub retransmits: u64,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    /// Where conntrack sends this flow (its reply source), when a snapshot
    /// or diagnosis said so and it differs from the destination.
    pub nat: Option<SocketAddr>,
    /// Owning pod (`namespace/name`) and process (`comm/pid`), when known.
    pub process: Option<String>,
}

/// A ClientHello still waiting for its ServerHello.
#[derive(Clone, Debug, PartialEq)]
pub struct Handshake {
    pub flow: FlowRef,
    pub sni: Option<String>,
    pub since: DateTime<Utc>,
    pub nat: Option<SocketAddr>,
    /// Already counted as unanswered.
    pub unanswered: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DiagnosisRow {
    pub time: DateTime<Utc>,
    pub symptom: String,
    pub cause: String,
    pub flow: FlowRef,
    pub summary: String,
    pub fix: Option<String>,
}

/// Everything the screen shows, as of `now`. Cloned whole on pause.
#[derive(Clone, Debug, Default)]
pub struct Data {
    pub now: Option<DateTime<Utc>>,
    pub flows: HashMap<FlowRef, FlowStats>,
    /// Flows dropped to stay under `max_flows`.
    pub evicted: u64,
    pub retransmits: u64,
    /// Retransmits per second, oldest first; the last entry is `second`.
    per_second: VecDeque<u64>,
    second: Option<i64>,
    pub intervals: [u64; INTERVAL_LABELS.len()],
    pub handshakes: HashMap<FlowRef, Handshake>,
    pub answered: u64,
    /// Handshakes that passed the timeout without an answer, since start.
    pub unanswered_total: u64,
    pub diagnoses: VecDeque<DiagnosisRow>,
    pub stats: Option<Stats>,
    /// Ring-buffer records per second between the last two stats events.
    pub events_per_sec: Option<f64>,
    stats_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortKey {
    #[default]
    Retransmits,
    Recent,
    Source,
    Destination,
    State,
}

impl SortKey {
    pub fn next(self) -> SortKey {
        match self {
            SortKey::Retransmits => SortKey::Recent,
            SortKey::Recent => SortKey::Source,
            SortKey::Source => SortKey::Destination,
            SortKey::Destination => SortKey::State,
            SortKey::State => SortKey::Retransmits,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SortKey::Retransmits => "retransmits",
            SortKey::Recent => "last seen",
            SortKey::Source => "source",
            SortKey::Destination => "destination",
            SortKey::State => "state",
        }
    }
}

/// Rows are flows, or destinations with their flows summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Group {
    #[default]
    Flows,
    Destinations,
}

/// What `/` accepts: a port, an address, an endpoint, else a substring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    Port(u16),
    Addr(IpAddr),
    Endpoint(SocketAddr),
    Text(String),
}

impl Filter {
    /// None for blank text (no filter).
    pub fn parse(text: &str) -> Option<Filter> {
        let t = text.trim();
        if t.is_empty() {
            return None;
        }
        let t = t.strip_prefix(':').unwrap_or(t);
        Some(if let Ok(p) = t.parse() {
            Filter::Port(p)
        } else if let Ok(a) = t.trim_start_matches('[').trim_end_matches(']').parse() {
            Filter::Addr(a)
        } else if let Ok(e) = t.parse() {
            Filter::Endpoint(e)
        } else {
            Filter::Text(t.to_ascii_lowercase())
        })
    }

    /// True if any of `addrs` (a flow's ends, its NAT target) matches.
    pub fn matches(&self, addrs: &[SocketAddr]) -> bool {
        addrs.iter().any(|a| match self {
            Filter::Port(p) => a.port() == *p,
            Filter::Addr(ip) => a.ip() == *ip,
            Filter::Endpoint(e) => a == e,
            Filter::Text(t) => a.to_string().contains(t.as_str()),
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Filter::Port(p) => format!("port {p}"),
            Filter::Addr(a) => format!("address {a}"),
            Filter::Endpoint(e) => format!("endpoint {e}"),
            Filter::Text(t) => format!("\"{t}\""),
        }
    }
}

/// Keys the view knows, independent of the terminal library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Esc,
    Backspace,
    CtrlC,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOutcome {
    /// Nothing visible changed.
    None,
    Redraw,
    Quit,
}

/// One line of the top table: a flow, or a destination (`src` None).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub src: Option<SocketAddr>,
    pub dst: SocketAddr,
    pub state: String,
    pub retransmits: u64,
    pub last: DateTime<Utc>,
    pub nat: Option<SocketAddr>,
    pub process: Option<String>,
    /// Flows summed in this row (1 for a flow).
    pub flows: usize,
}

/// Choices made with keys.
#[derive(Clone, Debug, Default)]
struct Ui {
    sort: SortKey,
    group: Group,
    filter: Option<Filter>,
    /// Text being typed after `/`, if the filter prompt is open.
    editing: Option<String>,
    help: bool,
}

/// Longest filter text accepted (an IPv6 endpoint fits).
const MAX_FILTER_LEN: usize = 64;

pub struct App {
    config: Config,
    live: Data,
    /// The data as it was when `p` was pressed; shown instead of `live`.
    frozen: Option<Box<Data>>,
    ui: Ui,
}

impl App {
    pub fn new(config: Config) -> App {
        App {
            config,
            live: Data::default(),
            frozen: None,
            ui: Ui::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What the screen shows: frozen while paused, live otherwise.
    pub fn data(&self) -> &Data {
        self.frozen.as_deref().unwrap_or(&self.live)
    }

    pub fn paused(&self) -> bool {
        self.frozen.is_some()
    }

    pub fn sort(&self) -> SortKey {
        self.ui.sort
    }

    pub fn group(&self) -> Group {
        self.ui.group
    }

    pub fn filter(&self) -> Option<&Filter> {
        self.ui.filter.as_ref()
    }

    /// The filter prompt's text while it is open.
    pub fn editing(&self) -> Option<&str> {
        self.ui.editing.as_deref()
    }

    pub fn help(&self) -> bool {
        self.ui.help
    }

    /// Takes in one event of the session (always, paused or not).
    pub fn apply(&mut self, event: &Event) {
        let d = &mut self.live;
        match &event.body {
            EventBody::Retransmit(r) => d.retransmit(&self.config, event.time, r),
            EventBody::TlsClientHello(h) => {
                let flow = FlowRef {
                    src: h.src,
                    dst: h.dst,
                };
                // A retransmitted ClientHello keeps the first one's time.
                if !d.handshakes.contains_key(&flow) {
                    evict_oldest(&mut d.handshakes, self.config.max_handshakes, |h| h.since);
                    d.handshakes.insert(
                        flow,
                        Handshake {
                            flow,
                            sni: h.sni.clone(),
                            since: event.time,
                            nat: None,
                            unanswered: false,
                        },
                    );
                }
            }
            EventBody::TlsServerHello(h) => {
                // The server's hello travels server -> client.
                if d.handshakes
                    .remove(&FlowRef {
                        src: h.dst,
                        dst: h.src,
                    })
                    .is_some()
                {
                    d.answered += 1;
                }
            }
            EventBody::Reset(r) => {
                let flow = FlowRef {
                    src: r.src,
                    dst: r.dst,
                };
                d.handshakes.remove(&flow);
                if let Some(f) = d.flows.get_mut(&flow) {
                    f.state = "RESET".into();
                }
            }
            EventBody::Snapshot(s) => d.snapshot(s),
            EventBody::Diagnosis(diag) => d.diagnosis(&self.config, event.time, diag),
            EventBody::Stats(s) => {
                if let (Some(prev), Some(at)) = (&d.stats, d.stats_at) {
                    let secs = (event.time - at).num_milliseconds() as f64 / 1000.0;
                    if secs > 0.0 {
                        d.events_per_sec = Some(s.events.saturating_sub(prev.events) as f64 / secs);
                    }
                }
                d.stats = Some(s.clone());
                d.stats_at = Some(event.time);
            }
            EventBody::Start(_)
            | EventBody::Neighbour(_)
            | EventBody::Arp(_)
            | EventBody::TlsHop(_)
            | EventBody::TlsClientFlight(_)
            | EventBody::Recovered(_)
            | EventBody::Drop(_)
            | EventBody::IcmpSent(_)
            | EventBody::ResetSent(_)
            | EventBody::SynackRetransmit(_) => {}
        }
    }

    /// Moves the clock: empty seconds enter the sparkline, handshakes age
    /// into unanswered and old ones leave.
    pub fn tick(&mut self, now: DateTime<Utc>) {
        let d = &mut self.live;
        d.now = Some(now);
        d.advance(self.config.history_secs, now.timestamp());
        let timeout = chrono::Duration::from_std(self.config.handshake_timeout)
            .unwrap_or(chrono::Duration::MAX);
        let keep = timeout
            + chrono::Duration::from_std(self.config.unanswered_keep)
                .unwrap_or(chrono::Duration::MAX);
        for h in d.handshakes.values_mut() {
            if !h.unanswered && now - h.since >= timeout {
                h.unanswered = true;
                d.unanswered_total += 1;
            }
        }
        d.handshakes.retain(|_, h| now - h.since < keep);
    }

    pub fn key(&mut self, key: Key) -> KeyOutcome {
        if let Some(text) = &mut self.ui.editing {
            match key {
                Key::Char(c) if text.chars().count() < MAX_FILTER_LEN && !c.is_control() => {
                    text.push(c)
                }
                Key::Char(_) => return KeyOutcome::None,
                Key::Backspace => {
                    text.pop();
                }
                Key::Enter => {
                    self.ui.filter = Filter::parse(text);
                    self.ui.editing = None;
                }
                Key::Esc => {
                    self.ui.filter = None;
                    self.ui.editing = None;
                }
                Key::CtrlC => return KeyOutcome::Quit,
            }
            return KeyOutcome::Redraw;
        }
        match key {
            Key::Char('q') | Key::CtrlC => return KeyOutcome::Quit,
            Key::Char('?') | Key::Char('h') => self.ui.help = !self.ui.help,
            Key::Esc if self.ui.help => self.ui.help = false,
            Key::Esc if self.ui.filter.is_some() => self.ui.filter = None,
            Key::Char('s') => self.ui.sort = self.ui.sort.next(),
            Key::Char('d') => {
                self.ui.group = match self.ui.group {
                    Group::Flows => Group::Destinations,
                    Group::Destinations => Group::Flows,
                }
            }
            Key::Char('p') | Key::Char(' ') => {
                self.frozen = match self.frozen {
                    Some(_) => None,
                    None => Some(Box::new(self.live.clone())),
                }
            }
            Key::Char('/') => {
                // Start from the current filter so it can be edited.
                self.ui.editing = Some(match &self.ui.filter {
                    Some(Filter::Port(p)) => p.to_string(),
                    Some(Filter::Addr(a)) => a.to_string(),
                    Some(Filter::Endpoint(e)) => e.to_string(),
                    Some(Filter::Text(t)) => t.clone(),
                    None => String::new(),
                });
            }
            _ => return KeyOutcome::None,
        }
        KeyOutcome::Redraw
    }

    /// The table: filtered, grouped, sorted (ties broken by retransmits,
    /// then addresses, so the order is stable between redraws).
    pub fn rows(&self) -> Vec<Row> {
        let d = self.data();
        let shown = d
            .flows
            .values()
            .filter(|f| self.shows(&flow_addrs(&f.flow, f.nat)));
        let mut rows: Vec<Row> = match self.group() {
            Group::Flows => shown
                .map(|f| Row {
                    src: Some(f.flow.src),
                    dst: f.flow.dst,
                    state: f.state.clone(),
                    retransmits: f.retransmits,
                    last: f.last,
                    nat: f.nat,
                    process: f.process.clone(),
                    flows: 1,
                })
                .collect(),
            Group::Destinations => {
                let mut by_dst: HashMap<SocketAddr, Row> = HashMap::new();
                for f in shown {
                    let row = by_dst.entry(f.flow.dst).or_insert_with(|| Row {
                        src: None,
                        dst: f.flow.dst,
                        state: f.state.clone(),
                        retransmits: 0,
                        last: f.last,
                        nat: None,
                        process: None,
                        flows: 0,
                    });
                    row.retransmits += f.retransmits;
                    row.flows += 1;
                    // State and NAT target of the most recent flow.
                    if f.last >= row.last {
                        row.last = f.last;
                        row.state = f.state.clone();
                    }
                    row.nat = f.nat.or(row.nat);
                }
                by_dst.into_values().collect()
            }
        };
        let sort = self.sort();
        rows.sort_by(|a, b| {
            let primary = match sort {
                SortKey::Retransmits => b.retransmits.cmp(&a.retransmits),
                SortKey::Recent => b.last.cmp(&a.last),
                SortKey::Source => a.src.cmp(&b.src),
                SortKey::Destination => a.dst.cmp(&b.dst),
                SortKey::State => a.state.cmp(&b.state),
            };
            primary
                .then_with(|| b.retransmits.cmp(&a.retransmits))
                .then_with(|| a.dst.cmp(&b.dst))
                .then_with(|| a.src.cmp(&b.src))
        });
        rows
    }

    /// Handshakes without answer, oldest first, through the filter.
    pub fn handshakes(&self) -> Vec<&Handshake> {
        let mut v: Vec<&Handshake> = self
            .data()
            .handshakes
            .values()
            .filter(|h| self.shows(&flow_addrs(&h.flow, h.nat)))
            .collect();
        v.sort_by(|a, b| {
            a.since
                .cmp(&b.since)
                .then_with(|| a.flow.src.cmp(&b.flow.src))
        });
        v
    }

    /// (pending, unanswered) handshakes now, through the filter.
    pub fn handshake_counts(&self) -> (usize, usize) {
        let hs = self.handshakes();
        let unanswered = hs.iter().filter(|h| h.unanswered).count();
        (hs.len() - unanswered, unanswered)
    }

    /// Latest first, through the filter.
    pub fn diagnoses(&self) -> impl Iterator<Item = &DiagnosisRow> {
        self.data()
            .diagnoses
            .iter()
            .filter(|d| self.shows(&flow_addrs(&d.flow, None)))
    }

    /// Flows in each [`PER_FLOW_LABELS`] bucket (all flows, unfiltered).
    pub fn per_flow_histogram(&self) -> [u64; PER_FLOW_LABELS.len()] {
        let mut h = [0; PER_FLOW_LABELS.len()];
        for f in self.data().flows.values() {
            h[per_flow_bucket(f.retransmits)] += 1;
        }
        h
    }

    /// The sparkline: peak retransmits/s in each of at most `columns` bins
    /// covering the whole history (oldest first), and the seconds per bin.
    pub fn rate_series(&self, columns: usize) -> (Vec<u64>, usize) {
        let history = self.config.history_secs.max(1);
        let per_bin = history.div_ceil(columns.max(1));
        let bins = history.div_ceil(per_bin);
        let d = self.data();
        // Right-aligned: missing (not yet lived) seconds count as zero.
        let pad = (bins * per_bin).saturating_sub(d.per_second.len());
        let seconds = std::iter::repeat_n(0, pad).chain(d.per_second.iter().copied());
        let mut out = vec![0; bins];
        for (i, n) in seconds.enumerate() {
            let bin = &mut out[(i / per_bin).min(bins - 1)];
            *bin = (*bin).max(n);
        }
        (out, per_bin)
    }

    /// Retransmits in the last `secs` complete seconds (the current one
    /// is still filling).
    pub fn recent_retransmits(&self, secs: usize) -> u64 {
        let d = &self.data().per_second;
        d.iter().rev().skip(1).take(secs).sum()
    }

    fn shows(&self, addrs: &[SocketAddr]) -> bool {
        self.ui.filter.as_ref().is_none_or(|f| f.matches(addrs))
    }
}

fn flow_addrs(flow: &FlowRef, nat: Option<SocketAddr>) -> Vec<SocketAddr> {
    let mut v = vec![flow.src, flow.dst];
    v.extend(nat);
    v
}

/// Makes room for one more entry: past `max`, drops the oldest tenth in
/// one go, so a flood of new keys costs one partial sort per batch rather
/// than a full scan per insert.
fn evict_oldest<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    age: impl Fn(&V) -> DateTime<Utc>,
) -> u64 {
    if map.len() < max {
        return 0;
    }
    let target = max - max.div_ceil(10);
    let drop = map.len() - target;
    if drop == 0 {
        return 0;
    }
    let mut by_age: Vec<(DateTime<Utc>, K)> =
        map.iter().map(|(k, v)| (age(v), k.clone())).collect();
    by_age.select_nth_unstable_by_key(drop - 1, |(t, _)| *t);
    for (_, k) in &by_age[..drop] {
        map.remove(k);
    }
    drop as u64
}

impl Data {
    fn retransmit(&mut self, config: &Config, time: DateTime<Utc>, r: &Retransmit) {
        let flow = FlowRef {
            src: r.src,
            dst: r.dst,
        };
        self.retransmits += 1;
        self.advance(config.history_secs, time.timestamp());
        // Events may arrive slightly out of order: count them in their own
        // second if it is still in the window.
        if let Some(last) = self.second {
            let back = (last - time.timestamp()).max(0) as usize;
            let len = self.per_second.len();
            if back < len {
                self.per_second[len - 1 - back] += 1;
            }
        }
        if !self.flows.contains_key(&flow) {
            self.evicted += evict_oldest(&mut self.flows, config.max_flows, |f| f.last);
        }
        let f = self.flows.entry(flow).or_insert_with(|| FlowStats {
            flow,
            state: String::new(),
            retransmits: 0,
            first: time,
            last: time,
            nat: None,
            process: None,
        });
        if f.retransmits > 0 && time >= f.last {
            let gap = (time - f.last).to_std().unwrap_or_default();
            self.intervals[interval_bucket(gap)] += 1;
        }
        // The pipeline's own count covers records we never saw (started
        // before us, lost in the ring buffer).
        f.retransmits = (f.retransmits + 1).max(r.count);
        f.last = f.last.max(time);
        f.state = r.state.clone();
        let process = r.process.as_ref().map(|p| format!("{}/{}", p.comm, p.pid));
        let owner = match (r.pod.as_deref(), process) {
            (Some(pod), Some(p)) => Some(format!("{pod} {p}")),
            (Some(pod), None) => Some(pod.to_string()),
            (None, p) => p,
        };
        if owner.is_some() {
            f.process = owner;
        }
    }

    /// Appends empty seconds up to `second`, dropping what leaves the window.
    fn advance(&mut self, history: usize, second: i64) {
        match self.second {
            None => self.per_second.push_back(0),
            Some(last) if second > last => {
                let gap = ((second - last) as usize).min(history);
                self.per_second.extend(std::iter::repeat_n(0, gap));
            }
            Some(_) => return,
        }
        self.second = Some(second);
        while self.per_second.len() > history {
            self.per_second.pop_front();
        }
    }

    fn set_nat(&mut self, flow: &FlowRef, target: SocketAddr) {
        if target == flow.dst {
            return;
        }
        if let Some(f) = self.flows.get_mut(flow) {
            f.nat = Some(target);
        }
        if let Some(h) = self.handshakes.get_mut(flow) {
            h.nat = Some(target);
        }
    }

    fn snapshot(&mut self, s: &Snapshot) {
        if let (Some(flow), Some(ct)) = (&s.flow, &s.conntrack) {
            // Replies come from where conntrack really sends the flow.
            self.set_nat(flow, ct.reply_src);
        }
    }

    fn diagnosis(&mut self, config: &Config, time: DateTime<Utc>, d: &Diagnosis) {
        if let Some(target) = d.nat_target {
            self.set_nat(&d.flow, target);
        }
        self.diagnoses.push_front(DiagnosisRow {
            time,
            symptom: d.symptom.clone(),
            cause: d.cause.clone(),
            flow: d.flow,
            summary: d.summary.clone(),
            fix: d.fix.clone(),
        });
        self.diagnoses.truncate(config.max_diagnoses);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::event::{Reset, TlsClientHello, TlsServerHello};
    use crate::state::ConntrackEntry;

    pub fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    pub fn ep(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    pub fn ev(ms: i64, body: EventBody) -> Event {
        Event {
            time: t(ms),
            netns: None,
            body,
        }
    }

    pub fn retx(ms: i64, src: &str, dst: &str, count: u64) -> Event {
        ev(
            ms,
            EventBody::Retransmit(Retransmit {
                src: ep(src),
                dst: ep(dst),
                state: "ESTABLISHED".into(),
                count,
                snd_una: None,
                snd_nxt: None,
                not_sent: None,
                process: None,
                pod: None,
                container: None,
            }),
        )
    }

    pub fn hello(ms: i64, src: &str, dst: &str) -> Event {
        ev(
            ms,
            EventBody::TlsClientHello(TlsClientHello {
                src: ep(src),
                dst: ep(dst),
                iface: "eth0".into(),
                src_mac: String::new(),
                dst_mac: String::new(),
                sni: Some("api.example".into()),
                record_version: "0x0301".into(),
                handshake_version: "0x0303".into(),
                segments: 1,
                direction: "egress".into(),
                partial: false,
            }),
        )
    }

    fn server_hello(ms: i64, src: &str, dst: &str) -> Event {
        ev(
            ms,
            EventBody::TlsServerHello(TlsServerHello {
                src: ep(src),
                dst: ep(dst),
                iface: "eth0".into(),
                src_mac: String::new(),
                dst_mac: String::new(),
                record_version: "0x0303".into(),
                handshake_version: "0x0303".into(),
                selected_version: None,
                direction: "ingress".into(),
            }),
        )
    }

    pub fn diagnosis(ms: i64, src: &str, dst: &str, cause: &str) -> Event {
        ev(
            ms,
            EventBody::Diagnosis(Box::new(Diagnosis {
                evidence: vec![],
                fix: Some("conntrack -D".into()),
                detected_after_ms: 900,
                ..Diagnosis::new(
                    "retransmit_storm",
                    cause,
                    FlowRef {
                        src: ep(src),
                        dst: ep(dst),
                    },
                    format!("{cause} summary"),
                )
            })),
        )
    }

    pub fn stats(ms: i64, events: u64, lost: u64) -> Event {
        ev(
            ms,
            EventBody::Stats(Stats {
                events,
                lost,
                ..Default::default()
            }),
        )
    }

    fn dsts(app: &App) -> Vec<String> {
        app.rows().iter().map(|r| r.dst.to_string()).collect()
    }

    const A: &str = "10.0.0.1:40000";
    const B: &str = "10.0.0.1:40001";
    const S1: &str = "10.0.0.2:8000";
    const S2: &str = "10.0.0.3:443";

    #[test]
    fn interval_buckets_follow_the_rto_steps() {
        let ms = Duration::from_millis;
        assert_eq!(interval_bucket(ms(0)), 0);
        assert_eq!(interval_bucket(ms(30)), 0);
        assert_eq!(interval_bucket(ms(140)), 0);
        for (gap, want) in [
            (200, 1),
            (215, 1),
            (390, 2),
            (410, 2),
            (800, 3),
            (1600, 4),
            (3300, 5),
            (6400, 6),
        ] {
            assert_eq!(interval_bucket(ms(gap)), want, "{gap} ms");
        }
        assert_eq!(interval_bucket(ms(12_800)), 7);
        assert_eq!(interval_bucket(ms(120_000)), 7);
    }

    #[test]
    fn per_flow_buckets_are_powers_of_two() {
        let got: Vec<usize> = [1, 2, 3, 4, 5, 8, 9, 16, 17, 33, 64, 65, 10_000]
            .map(per_flow_bucket)
            .to_vec();
        assert_eq!(got, [0, 1, 2, 2, 3, 3, 4, 4, 5, 6, 6, 7, 7]);
    }

    #[test]
    fn retransmits_feed_rates_histograms_and_flows() {
        let mut app = App::new(Config::default());
        app.tick(t(0));
        // RTO back-off on one flow: gaps 200, 400, 800 ms.
        for (ms, n) in [(0, 1), (200, 2), (600, 3), (1400, 4)] {
            app.apply(&retx(ms, A, S1, n));
        }
        app.apply(&retx(1500, B, S1, 1));
        app.tick(t(2000));
        let d = app.data();
        assert_eq!(d.retransmits, 5);
        assert_eq!(d.intervals[1..4], [1, 1, 1]);
        assert_eq!(
            d.intervals.iter().sum::<u64>(),
            3,
            "first retransmits make no gap"
        );
        assert_eq!(app.per_flow_histogram()[..3], [1, 0, 1]);
        // Seconds 0 and 1 complete: 3 then 2.
        assert_eq!(app.recent_retransmits(10), 5);
        let (series, per_bin) = app.rate_series(300);
        assert_eq!(per_bin, 1);
        assert_eq!(series.len(), 300);
        assert_eq!(series[297..], [3, 2, 0]);
        let rows = app.rows();
        assert_eq!(rows[0].src, Some(ep(A)));
        assert_eq!(rows[0].retransmits, 4);
        assert_eq!(rows[0].state, "ESTABLISHED");
        assert_eq!(rows[0].last, t(1400));
        assert_eq!(rows[1].retransmits, 1);
    }

    #[test]
    fn rate_series_bins_keep_the_peak_second() {
        let mut app = App::new(Config::default());
        app.tick(t(0));
        for i in 0..7 {
            app.apply(&retx(10 * i, A, S1, 0));
        }
        app.apply(&retx(1000, A, S1, 0));
        app.tick(t(3000));
        // 300 s in 78 columns: 4 s per bin, 75 bins; the newest bin holds
        // seconds 0..=3 with a peak of 7.
        let (series, per_bin) = app.rate_series(78);
        assert_eq!((series.len(), per_bin), (75, 4));
        assert_eq!(*series.last().unwrap(), 7);
        assert!(series[..74].iter().all(|n| *n == 0));
        // Old seconds leave the window.
        app.tick(t(400_000));
        assert!(app.rate_series(78).0.iter().all(|n| *n == 0));
        assert_eq!(app.data().retransmits, 8, "totals stay");
    }

    #[test]
    fn pipeline_count_wins_when_larger() {
        let mut app = App::new(Config::default());
        app.apply(&retx(0, A, S1, 7));
        app.apply(&retx(200, A, S1, 0));
        assert_eq!(app.rows()[0].retransmits, 8);
    }

    #[test]
    fn sorting_cycles_and_orders() {
        let mut app = App::new(Config::default());
        app.apply(&retx(0, A, S2, 1));
        app.apply(&retx(100, B, S1, 1));
        app.apply(&retx(200, B, S1, 2));
        assert_eq!(app.sort(), SortKey::Retransmits);
        assert_eq!(dsts(&app), [S1, S2]);
        app.apply(&retx(300, A, S2, 2));
        app.apply(&retx(400, A, S2, 3));
        assert_eq!(dsts(&app), [S2, S1]);
        assert_eq!(app.key(Key::Char('s')), KeyOutcome::Redraw);
        assert_eq!(app.sort(), SortKey::Recent);
        app.apply(&retx(500, B, S1, 3));
        assert_eq!(dsts(&app), [S1, S2], "most recent first");
        app.key(Key::Char('s'));
        assert_eq!(app.sort(), SortKey::Source);
        assert_eq!(app.rows()[0].src, Some(ep(A)));
        app.key(Key::Char('s'));
        assert_eq!(app.sort(), SortKey::Destination);
        assert_eq!(dsts(&app), [S1, S2]);
        app.key(Key::Char('s'));
        app.key(Key::Char('s'));
        assert_eq!(app.sort(), SortKey::Retransmits, "full cycle");
    }

    #[test]
    fn destinations_sum_their_flows() {
        let mut app = App::new(Config::default());
        app.apply(&retx(0, A, S1, 3));
        app.apply(&retx(100, B, S1, 2));
        app.apply(&retx(200, "10.0.0.9:1", S2, 4));
        app.key(Key::Char('d'));
        let rows = app.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].dst, rows[0].src, rows[0].flows, rows[0].retransmits),
            (ep(S1), None, 2, 5)
        );
        assert_eq!((rows[1].dst, rows[1].retransmits), (ep(S2), 4));
        app.key(Key::Char('d'));
        assert_eq!(app.rows().len(), 3);
    }

    #[test]
    fn filter_by_port_address_endpoint_or_text() {
        assert_eq!(Filter::parse(" 8000 "), Some(Filter::Port(8000)));
        assert_eq!(Filter::parse(":443"), Some(Filter::Port(443)));
        assert_eq!(
            Filter::parse("10.0.0.3"),
            Some(Filter::Addr("10.0.0.3".parse().unwrap()))
        );
        assert_eq!(
            Filter::parse("[fd00::1]"),
            Some(Filter::Addr("fd00::1".parse().unwrap()))
        );
        assert_eq!(
            Filter::parse("10.0.0.3:443"),
            Some(Filter::Endpoint(ep(S2)))
        );
        assert_eq!(
            Filter::parse("10.0.0."),
            Some(Filter::Text("10.0.0.".into()))
        );
        assert_eq!(Filter::parse("  "), None);

        let mut app = App::new(Config::default());
        app.apply(&retx(0, A, S1, 1));
        app.apply(&retx(0, "10.0.0.9:5", S2, 1));
        app.apply(&hello(0, "10.0.0.9:5", S2));
        app.apply(&diagnosis(0, A, S1, "packet_loss"));
        for c in "/443".chars() {
            assert_eq!(app.key(Key::Char(c)), KeyOutcome::Redraw);
        }
        assert_eq!(app.editing(), Some("443"));
        assert_eq!(
            app.key(Key::Char('q')),
            KeyOutcome::Redraw,
            "q is text while typing"
        );
        app.key(Key::Backspace);
        app.key(Key::Enter);
        assert_eq!(app.editing(), None);
        assert_eq!(app.filter(), Some(&Filter::Port(443)));
        assert_eq!(dsts(&app), [S2]);
        assert_eq!(app.handshakes().len(), 1);
        assert_eq!(app.diagnoses().count(), 0);
        // `/` reopens with the current text; Esc there clears.
        app.key(Key::Char('/'));
        assert_eq!(app.editing(), Some("443"));
        app.key(Key::Esc);
        assert_eq!((app.filter(), app.editing()), (None, None));
        assert_eq!(app.rows().len(), 2);
        // Esc outside the prompt clears too; an empty Enter means no filter.
        for c in "/10.0.0.2\n".chars() {
            app.key(if c == '\n' { Key::Enter } else { Key::Char(c) });
        }
        assert_eq!(dsts(&app), [S1]);
        app.key(Key::Esc);
        assert_eq!(app.rows().len(), 2);
        app.key(Key::Char('/'));
        app.key(Key::Enter);
        assert_eq!(app.filter(), None);
    }

    #[test]
    fn filter_text_is_bounded() {
        let mut app = App::new(Config::default());
        app.key(Key::Char('/'));
        for _ in 0..200 {
            app.key(Key::Char('1'));
        }
        assert_eq!(app.editing().unwrap().len(), MAX_FILTER_LEN);
    }

    #[test]
    fn pause_freezes_the_display_but_keeps_counting() {
        let mut app = App::new(Config::default());
        app.apply(&retx(0, A, S1, 1));
        app.key(Key::Char('p'));
        assert!(app.paused());
        app.apply(&retx(200, A, S1, 2));
        app.apply(&retx(300, B, S2, 1));
        app.apply(&stats(400, 10, 0));
        app.tick(t(5000));
        assert_eq!(app.rows().len(), 1);
        assert_eq!(app.rows()[0].retransmits, 1);
        assert!(app.data().stats.is_none());
        // Sort and filter still work on the frozen data.
        app.key(Key::Char('s'));
        assert_eq!(app.rows().len(), 1);
        app.key(Key::Char('p'));
        assert!(!app.paused());
        assert_eq!(app.rows().len(), 2);
        assert_eq!(
            app.data().flows[&FlowRef {
                src: ep(A),
                dst: ep(S1)
            }]
                .retransmits,
            2
        );
        assert_eq!(app.data().stats.as_ref().map(|s| s.events), Some(10));
    }

    #[test]
    fn nat_target_from_snapshots_and_diagnoses() {
        let mut app = App::new(Config::default());
        app.apply(&retx(0, A, "10.96.0.10:443", 1));
        let entry = |reply: &str| ConntrackEntry {
            proto: 6,
            orig_src: ep(A),
            orig_dst: ep("10.96.0.10:443"),
            reply_src: ep(reply),
            reply_dst: ep(A),
            tcp_state: Some("ESTABLISHED".into()),
            status: vec!["DST_NAT".into()],
            timeout_s: None,
            id: None,
        };
        let snap = |reply: &str| {
            ev(
                100,
                EventBody::Snapshot(Box::new(Snapshot {
                    symptom: "retransmit_storm".into(),
                    flow: Some(FlowRef {
                        src: ep(A),
                        dst: ep("10.96.0.10:443"),
                    }),
                    conntrack: Some(entry(reply)),
                    ..Default::default()
                })),
            )
        };
        // Not NATed: reply from the destination itself.
        app.apply(&snap("10.96.0.10:443"));
        assert_eq!(app.rows()[0].nat, None);
        app.apply(&snap("10.244.1.7:8443"));
        assert_eq!(app.rows()[0].nat, Some(ep("10.244.1.7:8443")));
        // The filter sees the NAT target too.
        app.key(Key::Char('/'));
        for c in "8443".chars() {
            app.key(Key::Char(c));
        }
        app.key(Key::Enter);
        assert_eq!(app.rows().len(), 1);
        // A diagnosis naming another target updates it.
        let mut d = diagnosis(200, A, "10.96.0.10:443", "stale_conntrack_nat");
        if let EventBody::Diagnosis(diag) = &mut d.body {
            diag.nat_target = Some(ep("10.244.2.9:8443"));
        }
        app.apply(&d);
        app.key(Key::Esc);
        assert_eq!(app.rows()[0].nat, Some(ep("10.244.2.9:8443")));
        assert_eq!(app.diagnoses().next().unwrap().cause, "stale_conntrack_nat");
    }

    #[test]
    fn handshakes_pending_answered_unanswered() {
        let mut app = App::new(Config {
            handshake_timeout: Duration::from_secs(3),
            ..Default::default()
        });
        app.apply(&hello(0, A, S2));
        app.apply(&hello(100, B, S2));
        app.apply(&hello(500, A, S2)); // retransmitted: keeps its first time
        app.tick(t(1000));
        assert_eq!(app.handshake_counts(), (2, 0));
        assert_eq!(app.handshakes()[0].since, t(0));
        app.apply(&server_hello(1200, S2, B));
        assert_eq!(app.data().answered, 1);
        app.tick(t(3000));
        assert_eq!(app.handshake_counts(), (0, 1));
        assert_eq!(app.data().unanswered_total, 1);
        app.tick(t(4000));
        assert_eq!(app.data().unanswered_total, 1, "counted once");
        // A late answer still clears it; a reset clears a pending one.
        app.apply(&hello(4000, "10.0.0.1:40002", S2));
        app.apply(&ev(
            4100,
            EventBody::Reset(Reset {
                src: ep("10.0.0.1:40002"),
                dst: ep(S2),
            }),
        ));
        assert_eq!(app.handshake_counts(), (0, 1));
        // Unanswered ones leave after timeout + unanswered_keep.
        app.tick(t(3000 + 300_000));
        assert_eq!(app.handshake_counts(), (0, 0));
        assert_eq!(app.data().unanswered_total, 1);
    }

    #[test]
    fn reset_marks_the_flow() {
        let mut app = App::new(Config::default());
        app.apply(&retx(0, A, S1, 1));
        app.apply(&ev(
            100,
            EventBody::Reset(Reset {
                src: ep(A),
                dst: ep(S1),
            }),
        ));
        assert_eq!(app.rows()[0].state, "RESET");
    }

    #[test]
    fn diagnoses_latest_first_and_bounded() {
        let mut app = App::new(Config {
            max_diagnoses: 3,
            ..Default::default()
        });
        for i in 0..5 {
            app.apply(&diagnosis(i, A, S1, &format!("cause{i}")));
        }
        let causes: Vec<&str> = app.diagnoses().map(|d| d.cause.as_str()).collect();
        assert_eq!(causes, ["cause4", "cause3", "cause2"]);
    }

    #[test]
    fn stats_give_events_losses_and_rate() {
        let mut app = App::new(Config::default());
        app.apply(&stats(0, 100, 0));
        assert_eq!(app.data().events_per_sec, None);
        app.apply(&stats(2000, 300, 4));
        let d = app.data();
        assert_eq!(d.stats.as_ref().map(|s| (s.events, s.lost)), Some((300, 4)));
        assert_eq!(d.events_per_sec, Some(100.0));
    }

    #[test]
    fn memory_is_bounded_least_recent_flows_go() {
        let mut app = App::new(Config {
            max_flows: 100,
            max_handshakes: 50,
            ..Default::default()
        });
        for i in 0..1000u16 {
            app.apply(&retx(
                i as i64,
                &format!("10.0.{}.{}:1000", i / 250, i % 250),
                S1,
                1,
            ));
            app.apply(&hello(
                i as i64,
                &format!("10.1.{}.{}:1000", i / 250, i % 250),
                S2,
            ));
        }
        let d = app.data();
        assert!(d.flows.len() <= 100, "{}", d.flows.len());
        assert!(d.handshakes.len() <= 50);
        assert_eq!(d.evicted as usize + d.flows.len(), 1000);
        // The newest stay.
        assert!(d.flows.contains_key(&FlowRef {
            src: ep("10.0.3.249:1000"),
            dst: ep(S1)
        }));
        assert!(!d.flows.contains_key(&FlowRef {
            src: ep("10.0.0.0:1000"),
            dst: ep(S1)
        }));
        // A flow that keeps retransmitting is recent, so it survives.
        let mut app = App::new(Config {
            max_flows: 10,
            ..Default::default()
        });
        for i in 0..100i64 {
            app.apply(&retx(i, A, S1, 0));
            app.apply(&retx(i, &format!("10.0.9.{i}:1"), S1, 1));
        }
        assert!(app.data().flows.contains_key(&FlowRef {
            src: ep(A),
            dst: ep(S1)
        }));
        assert_eq!(app.data().retransmits, 200);
    }

    #[test]
    fn keys_quit_help_and_ignore_others() {
        let mut app = App::new(Config::default());
        assert_eq!(app.key(Key::Char('?')), KeyOutcome::Redraw);
        assert!(app.help());
        assert_eq!(app.key(Key::Esc), KeyOutcome::Redraw);
        assert!(!app.help());
        assert_eq!(app.key(Key::Char('x')), KeyOutcome::None);
        assert_eq!(app.key(Key::Esc), KeyOutcome::None);
        assert_eq!(app.key(Key::Char('q')), KeyOutcome::Quit);
        app.key(Key::Char('/'));
        assert_eq!(
            app.key(Key::CtrlC),
            KeyOutcome::Quit,
            "Ctrl-C quits even while typing"
        );
    }
}
