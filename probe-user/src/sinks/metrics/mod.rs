//! `trace --metrics-listen`: Prometheus metrics counted from the same event
//! stream `trace` prints (see "Metrics contract" in shared/design.md).
//!
//! [`Recorder`] turns events into counts (pure, unit-tested from recorded
//! streams); [`Tee`] puts it in front of another consumer; [`http`] serves
//! the registry. Labels take values from fixed lists only: no addresses,
//! ports or interface names, so a node with 10,000 flows still exports a
//! few dozen series.

pub mod http;

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use prometheus_client::{
    encoding::prometheus_text,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::{
    model::event::{Event, EventBody},
    pipeline::Packet,
    sinks::{Consumer, Flow},
};

/// Values of `netprobe_diagnoses_total{cause}`: the causes of the JSON
/// contract. Anything else the correlator names is counted as `other`.
pub const CAUSES: &[&str] = &[
    "stale_neighbour",
    "stale_conntrack_nat",
    "endpoint_unreachable",
    "server_not_responding",
    "mtu_blackhole",
    "kernel_drop",
    "conntrack_table_full",
    "listen_overflow",
    "packet_loss",
    "unknown",
];

/// Values of `netprobe_events_lost_total{type}`: the kernel's record kinds
/// (the eBPF side counts loss per kind).
pub const LOST_KINDS: &[&str] = &crate::model::names::KIND_NAMES;

/// Values of `netprobe_events_total{type}`: the JSON types [`type_name`] gives.
pub const EVENT_TYPES: &[&str] = &[
    "retransmit",
    "reset",
    "tls_client_hello",
    "tls_server_hello",
    "neighbour",
    "arp",
    "stats",
    "snapshot",
    "diagnosis",
    "tls_hop",
    "tls_client_flight",
    "recovered",
    "drop",
];

/// Handshakes whose ServerHello is still awaited, at most. Past it a new
/// ClientHello is counted as `untracked` rather than growing the map.
pub const MAX_PENDING: usize = 16_384;

/// Upper bounds of the handshake duration buckets, in seconds: a LAN
/// handshake takes about a millisecond, a loaded API server seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type Labelled = Family<[(&'static str, &'static str); 1], Counter>;

/// The metric handles (cheap clones over shared atomics) and the registry
/// that encodes them.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    retransmits: Counter,
    handshakes: Labelled,
    handshake_seconds: Histogram,
    diagnoses: Labelled,
    events: Labelled,
    lost: Labelled,
    neighbour_changes: Counter,
    interfaces: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("netprobe");
        let retransmits = Counter::default();
        // The encoder adds `_total` to counters.
        registry.register(
            "tcp_retransmits",
            "TCP segments retransmitted (kernel tracepoint tcp_retransmit_skb), every namespace",
            retransmits.clone(),
        );
        let handshakes = Labelled::default();
        registry.register(
            "tls_handshakes",
            "TLS ClientHellos by outcome: answered (ServerHello seen), unanswered (none within the handshake timeout), untracked (too many pending)",
            handshakes.clone(),
        );
        let handshake_seconds = Histogram::new(DURATION_BUCKETS);
        registry.register(
            "tls_handshake_duration_seconds",
            "Time from a ClientHello to its ServerHello, as seen on the wire",
            handshake_seconds.clone(),
        );
        let diagnoses = Labelled::default();
        registry.register("diagnoses", "Diagnoses by named cause", diagnoses.clone());
        let events = Labelled::default();
        registry.register(
            "events",
            "Objects of the event stream, by JSON type",
            events.clone(),
        );
        let lost = Labelled::default();
        registry.register(
            "events_lost",
            "Kernel records lost to a full ring buffer, by record kind",
            lost.clone(),
        );
        let neighbour_changes = Counter::default();
        registry.register(
            "neighbour_changes",
            "Neighbour table updates (kernel tracepoint neigh_update)",
            neighbour_changes.clone(),
        );
        let interfaces = Gauge::default();
        registry.register(
            "interfaces_attached",
            "Interfaces the classifier is attached to",
            interfaces.clone(),
        );
        // Known label values start at zero, so rate() and absent() work
        // from the first scrape instead of from the first occurrence.
        for outcome in ["answered", "unanswered", "untracked"] {
            handshakes.get_or_create_owned(&[("outcome", outcome)]);
        }
        for cause in CAUSES.iter().chain(&["other"]) {
            diagnoses.get_or_create_owned(&[("cause", cause)]);
        }
        for kind in EVENT_TYPES {
            events.get_or_create_owned(&[("type", kind)]);
        }
        for kind in LOST_KINDS.iter().filter(|k| **k != "none") {
            lost.get_or_create_owned(&[("type", kind)]);
        }
        Self {
            registry: Arc::new(registry),
            retransmits,
            handshakes,
            handshake_seconds,
            diagnoses,
            events,
            lost,
            neighbour_changes,
            interfaces,
        }
    }

    /// The Prometheus text format (0.0.4), what Prometheus and
    /// `promtool check metrics` read.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }

    fn handshake(&self, outcome: &'static str) {
        self.handshakes.get_or_create(&[("outcome", outcome)]).inc();
    }
}

/// The JSON `type` of an event: the `{type}` label of `netprobe_events_total`.
pub fn type_name(body: &EventBody) -> &'static str {
    match body {
        EventBody::Retransmit(_) => "retransmit",
        EventBody::Reset(_) => "reset",
        EventBody::TlsClientHello(_) => "tls_client_hello",
        EventBody::TlsServerHello(_) => "tls_server_hello",
        EventBody::Neighbour(_) => "neighbour",
        EventBody::Arp(_) => "arp",
        EventBody::Stats(_) => "stats",
        EventBody::Start(_) => "start",
        EventBody::Snapshot(_) => "snapshot",
        EventBody::Diagnosis(_) => "diagnosis",
        EventBody::TlsHop(_) => "tls_hop",
        EventBody::Recovered(_) => "recovered",
        EventBody::Drop(_) => "drop",
        EventBody::TlsClientFlight(_) => "tls_client_flight",
        EventBody::IcmpSent(_) => "icmp_sent",
        EventBody::ResetSent(_) => "reset_sent",
        EventBody::SynackRetransmit(_) => "synack_retransmit",
    }
}

/// A ClientHello waiting for its ServerHello.
#[derive(Clone, Copy, Debug)]
struct Pending {
    sent: DateTime<Utc>,
    /// Kept after the answer so the copies seen on other interfaces (the
    /// client's veth and the server's) count once.
    answered: bool,
}

/// Counts events into [`Metrics`]. Handshakes are paired by the client's
/// endpoint (address and port): a ServerHello goes to it, whatever NAT did
/// to the server's address on the way.
pub struct Recorder {
    metrics: Metrics,
    timeout: Duration,
    pending: HashMap<SocketAddr, Pending>,
    /// Last cumulative loss per kind from a `stats` event: counters only
    /// grow, so the difference is added.
    lost_seen: HashMap<String, u64>,
}

impl Recorder {
    /// `timeout`: how long a ClientHello waits before it is `unanswered`
    /// (trace's --handshake-timeout).
    pub fn new(metrics: Metrics, timeout: Duration) -> Self {
        Self {
            metrics,
            timeout,
            pending: HashMap::new(),
            lost_seen: HashMap::new(),
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn observe(&mut self, event: &Event) {
        let m = &self.metrics;
        m.events
            .get_or_create(&[("type", type_name(&event.body))])
            .inc();
        match &event.body {
            EventBody::Retransmit(_) => {
                m.retransmits.inc();
            }
            EventBody::Neighbour(_) => {
                m.neighbour_changes.inc();
            }
            EventBody::TlsClientHello(hello) => self.client_hello(hello.src, event.time),
            EventBody::TlsServerHello(hello) => self.server_hello(hello.dst, event.time),
            EventBody::Diagnosis(d) => {
                let cause = CAUSES
                    .iter()
                    .find(|c| **c == d.cause)
                    .copied()
                    .unwrap_or("other");
                m.diagnoses.get_or_create(&[("cause", cause)]).inc();
            }
            EventBody::Stats(stats) => {
                m.interfaces.set(i64::from(stats.interfaces));
                for (kind, total) in &stats.lost_by_type {
                    let Some(label) = LOST_KINDS.iter().find(|k| *k == kind) else {
                        continue;
                    };
                    let seen = self.lost_seen.entry(kind.clone()).or_default();
                    if *total > *seen {
                        m.lost
                            .get_or_create(&[("type", label)])
                            .inc_by(*total - *seen);
                        *seen = *total;
                    }
                }
            }
            // A hop is a segment already counted on its first hook.
            EventBody::Start(_)
            | EventBody::Reset(_)
            | EventBody::Arp(_)
            | EventBody::Snapshot(_)
            | EventBody::TlsHop(_)
            | EventBody::TlsClientFlight(_)
            | EventBody::Recovered(_)
            // Written at counts 1, 2, 4, ...: a sample, not a drop count.
            | EventBody::Drop(_)
            | EventBody::IcmpSent(_)
            | EventBody::ResetSent(_)
            | EventBody::SynackRetransmit(_) => {}
        }
    }

    fn client_hello(&mut self, client: SocketAddr, at: DateTime<Utc>) {
        if self.pending.contains_key(&client) {
            // The same hello on another interface, or a retransmission.
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            self.expire(at);
        }
        if self.pending.len() >= MAX_PENDING {
            self.metrics.handshake("untracked");
            return;
        }
        self.pending.insert(
            client,
            Pending {
                sent: at,
                answered: false,
            },
        );
    }

    fn server_hello(&mut self, client: SocketAddr, at: DateTime<Utc>) {
        let Some(p) = self.pending.get_mut(&client) else {
            return;
        };
        if p.answered {
            return;
        }
        p.answered = true;
        self.metrics.handshake("answered");
        // Clocks of one host: never negative, but stay safe.
        let secs = (at - p.sent).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
        self.metrics.handshake_seconds.observe(secs);
    }

    /// Counts hellos unanswered after the timeout and forgets answered
    /// ones once their duplicates can no longer arrive.
    pub fn expire(&mut self, now: DateTime<Utc>) {
        let timeout = chrono::Duration::from_std(self.timeout).unwrap_or(chrono::Duration::MAX);
        let mut unanswered = 0;
        self.pending.retain(|_, p| {
            if now - p.sent < timeout {
                return true;
            }
            if !p.answered {
                unanswered += 1;
            }
            false
        });
        if unanswered > 0 {
            self.metrics
                .handshakes
                .get_or_create(&[("outcome", "unanswered")])
                .inc_by(unanswered);
        }
    }
}

/// A consumer that counts every event, then hands it on unchanged.
pub struct Tee<'c> {
    pub recorder: Recorder,
    pub inner: &'c mut dyn Consumer,
}

impl Consumer for Tee<'_> {
    fn event(&mut self, event: &Event) -> std::io::Result<Flow> {
        self.recorder.observe(event);
        self.inner.event(event)
    }

    fn packet(&mut self, packet: &Packet) -> std::io::Result<Flow> {
        self.inner.packet(packet)
    }

    fn wants_packets(&self) -> bool {
        self.inner.wants_packets()
    }

    fn tick(&mut self, now: DateTime<Utc>) -> std::io::Result<Flow> {
        self.recorder.expire(now);
        self.inner.tick(now)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests;
