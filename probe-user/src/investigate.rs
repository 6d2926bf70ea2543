//! Answers the correlator's questions with kernel state: routes and
//! neighbours over rtnetlink, conntrack over ctnetlink, and the active
//! claimant probe. Runs in netprobe's namespace (`--netns`). A failed
//! look-up is written into the snapshot, never hidden.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
    time::Instant,
};

use chrono::Utc;

use crate::{
    correlate::{Investigation, Symptom},
    model::event::{Event, EventBody, FlowRef, Snapshot},
    model::facts::ProbeResult,
    state::{self, conntrack, liveness, nat_rules, neighbours, owner, probe, routes},
};

/// `--no-probe`: never send an active ARP/ND probe.
static PROBES_DISABLED: AtomicBool = AtomicBool::new(false);
/// What the investigations did, for `stats`.
pub static PROBES_SENT: AtomicU64 = AtomicU64::new(0);
pub static PROBES_SKIPPED: AtomicU64 = AtomicU64::new(0);
pub static LOOKUP_FAILURES: AtomicU64 = AtomicU64::new(0);

/// One probe per next hop per this long: many stalled handshakes to one
/// address share an answer instead of each sending frames.
const PROBE_REUSE: Duration = Duration::from_secs(2);
/// And at most this many probes a second in all, whatever the targets.
const PROBES_PER_SECOND: usize = 10;

#[derive(Default)]
struct ProbeGate {
    recent: HashMap<(String, IpAddr), (Instant, ProbeResult)>,
    sent: std::collections::VecDeque<Instant>,
}

static GATE: Mutex<Option<ProbeGate>> = Mutex::new(None);

/// ListenOverflows of netprobe's namespace when the session started.
static LISTEN_OVERFLOWS_AT_START: Mutex<Option<u64>> = Mutex::new(None);

/// Reads the counters later snapshots are compared with.
pub fn baselines() {
    *LISTEN_OVERFLOWS_AT_START
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = state::sysctl::listen_overflows();
    *CONNTRACK_STATS_AT_START
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = state::sysctl::conntrack_stats();
}

/// Conntrack's failure counters of netprobe's namespace at the start.
static CONNTRACK_STATS_AT_START: Mutex<Option<state::sysctl::ConntrackStats>> = Mutex::new(None);

/// The table's fill, with what conntrack gave up on since the start.
fn conntrack_usage() -> Option<crate::model::facts::ConntrackUsage> {
    let mut u = state::sysctl::conntrack_usage()?;
    let start = *CONNTRACK_STATS_AT_START
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    u.since_start = start
        .zip(state::sysctl::conntrack_stats())
        .map(|(start, now)| now.since(&start));
    Some(u)
}

fn listen_overflows_since_start() -> Option<u64> {
    let start = (*LISTEN_OVERFLOWS_AT_START
        .lock()
        .unwrap_or_else(|e| e.into_inner()))?;
    Some(state::sysctl::listen_overflows()?.saturating_sub(start))
}

pub fn disable_probes(disabled: bool) {
    PROBES_DISABLED.store(disabled, Ordering::Relaxed);
}

/// What the active probe step gave.
enum Probed {
    Answers(ProbeResult),
    Skipped(String),
    Failed(String),
}

enum Gate {
    Reuse(ProbeResult),
    Send,
    Skip(String),
}

fn gate(dev: &str, ip: IpAddr) -> Gate {
    if PROBES_DISABLED.load(Ordering::Relaxed) {
        return Gate::Skip("--no-probe was given".into());
    }
    let mut guard = GATE.lock().unwrap_or_else(|e| e.into_inner());
    let g = guard.get_or_insert_with(ProbeGate::default);
    let now = Instant::now();
    g.recent.retain(|_, (at, _)| now - *at < PROBE_REUSE);
    if let Some((_, r)) = g.recent.get(&(dev.to_string(), ip)) {
        return Gate::Reuse(r.clone());
    }
    while g
        .sent
        .front()
        .is_some_and(|t| now - *t >= Duration::from_secs(1))
    {
        g.sent.pop_front();
    }
    if g.sent.len() >= PROBES_PER_SECOND {
        return Gate::Skip(format!(
            "rate limit ({PROBES_PER_SECOND} probes a second) reached"
        ));
    }
    g.sent.push_back(now);
    Gate::Send
}

fn remember_probe(dev: &str, ip: IpAddr, r: &ProbeResult) {
    let mut guard = GATE.lock().unwrap_or_else(|e| e.into_inner());
    let g = guard.get_or_insert_with(ProbeGate::default);
    g.recent
        .insert((dev.to_string(), ip), (Instant::now(), r.clone()));
}

/// How long the active probe listens for answers.
pub const PROBE_WINDOW: Duration = Duration::from_millis(300);

/// A table dump (conntrack, the nftables ruleset) is reused this long: a
/// storm over many flows reads it once, not once per flow. The flow's own
/// conntrack entry is always read live.
const DUMP_TTL: Duration = Duration::from_secs(1);

/// The last dump of one kind, with what it was of and when.
struct Recent<K, T>(Mutex<Option<(Instant, K, std::sync::Arc<T>)>>);

impl<K: PartialEq + Copy, T> Recent<K, T> {
    const fn new() -> Self {
        Self(Mutex::new(None))
    }

    /// The dump of `key`, if younger than `DUMP_TTL`.
    fn get(&self, key: K) -> Option<std::sync::Arc<T>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(at, k, _)| *k == key && at.elapsed() < DUMP_TTL)
            .map(|(_, _, d)| d.clone())
    }

    fn put(&self, key: K, dump: T) -> std::sync::Arc<T> {
        let dump = std::sync::Arc::new(dump);
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), key, dump.clone()));
        dump
    }
}

static SAME_SERVICE: Recent<std::net::SocketAddr, Vec<crate::state::ConntrackEntry>> =
    Recent::new();

/// Entries whose original destination is `dst`, from a streamed dump at
/// most `DUMP_TTL` old that kept only those (bounded whatever the table
/// holds). Blocking: call from spawn_blocking.
fn same_service(
    dst: std::net::SocketAddr,
) -> Result<Vec<crate::state::ConntrackEntry>, crate::state::ConntrackError> {
    let found = match SAME_SERVICE.get(dst) {
        Some(d) => d,
        None => SAME_SERVICE.put(dst, conntrack::by_orig_dst(dst)?),
    };
    Ok(found.as_ref().clone())
}

pub async fn run(inv: Investigation) -> Event {
    let snapshot = match inv {
        Investigation::Handshake {
            flow,
            iface,
            sni,
            claims,
        } => handshake(flow, &iface, sni.as_deref(), &claims).await,
        Investigation::Storm { flow, netns } => storm(flow, netns).await,
    };
    Event {
        time: Utc::now(),
        netns: None,
        body: EventBody::Snapshot(Box::new(snapshot)),
    }
}

fn failed(snap: &mut Snapshot, what: String) {
    LOOKUP_FAILURES.fetch_add(1, Ordering::Relaxed);
    snap.errors.push(what);
}

/// Route, next hop and device toward `ip` (device defaults to `fallback_dev`).
async fn next_hop(
    ip: IpAddr,
    fallback_dev: Option<&str>,
    snap: &mut Snapshot,
) -> (IpAddr, Option<String>) {
    match routes::route_to(ip).await {
        Ok(route) => snap.route = route,
        Err(e) => failed(snap, format!("route to {ip}: {e}")),
    }
    let hop = snap.route.as_ref().and_then(|r| r.gateway).unwrap_or(ip);
    let dev = snap
        .route
        .as_ref()
        .and_then(|r| r.dev.clone())
        .or_else(|| fallback_dev.map(str::to_string));
    match neighbours::lookup(hop, dev.as_deref()).await {
        Ok(n) => snap.neighbour = n,
        Err(e) => failed(snap, format!("neighbour {hop}: {e}")),
    }
    (hop, dev)
}

async fn handshake(flow: FlowRef, iface: &str, sni: Option<&str>, claims: &[String]) -> Snapshot {
    let mut snap = Snapshot {
        symptom: Symptom::HandshakeUnanswered.as_str().to_string(),
        flow: Some(flow),
        ..Default::default()
    };
    snap.node_netns = crate::kernel::netns::current_inode();
    snap.conntrack_usage = conntrack_usage();
    snap.listen_overflows = listen_overflows_since_start();
    let rules = read_rules(&mut snap).await;
    snap.drop_rules = nat_rules::drop_rules(&rules, flow.src, flow.dst);
    let (hop, dev) = next_hop(flow.dst.ip(), Some(iface), &mut snap).await;
    let dev = dev.unwrap_or_else(|| iface.to_string());
    // A local route (an address this node holds) has no neighbour to ask;
    // its listener's accept queue says whether the server keeps up.
    if snap.route.as_ref().is_some_and(|r| r.kind == "local") {
        snap.accept_queue = state::sysctl::accept_queue(flow.dst.port());
        return snap;
    }
    // Two active checks at once, each bounded by its own window: does a
    // full-size packet get through to the server and back, and who claims
    // the next hop.
    let path = path_check(flow.dst.ip());
    let claimants = async {
        match gate(&dev, hop) {
            Gate::Skip(why) => {
                PROBES_SKIPPED.fetch_add(1, Ordering::Relaxed);
                Probed::Skipped(why)
            }
            Gate::Reuse(r) => Probed::Answers(r),
            Gate::Send => {
                PROBES_SENT.fetch_add(1, Ordering::Relaxed);
                match probe::claimants(&dev, hop, PROBE_WINDOW).await {
                    Ok(result) => {
                        remember_probe(&dev, hop, &result);
                        Probed::Answers(result)
                    }
                    Err(e) => Probed::Failed(format!("probing who claims {hop} on {dev}: {e}")),
                }
            }
        }
    };
    // Then, when more than one MAC claims the next hop, a handshake of
    // netprobe's own through each: the one that answers serves it.
    let entry_mac = snap.neighbour.as_ref().and_then(|n| n.mac.clone());
    let known = if hop == flow.dst.ip() {
        claims.to_vec()
    } else {
        Vec::new()
    };
    let dev_ref = dev.as_str();
    // When the MACs already known to claim it (the entry's, and claims seen
    // on the wire) are two or more, their handshakes start at once, beside
    // the ARP/ND probe; a MAC only the probe finds gets its own when the
    // probe answers.
    let upfront = owner_candidates(entry_mac.as_deref(), &[], &known);
    let claimants_then_owner = async {
        let early = async {
            if upfront.len() >= 2 {
                owner_probe(flow.dst, dev_ref, &upfront, sni).await
            } else {
                None
            }
        };
        let (probed, early) = tokio::join!(claimants, early);
        let answers = match &probed {
            Probed::Answers(r) => r.distinct_macs(),
            _ => Vec::new(),
        };
        let macs = owner_candidates(entry_mac.as_deref(), &answers, &known);
        let owner = match early {
            None => owner_probe(flow.dst, dev_ref, &macs, sni).await,
            Some(Ok(mut p)) => {
                let more: Vec<String> = macs
                    .into_iter()
                    .filter(|m| p.attempt(m).is_none())
                    .collect();
                owner::extend(&mut p, &more).await;
                Some(Ok(p))
            }
            skipped => skipped,
        };
        (probed, owner)
    };
    let (path, (claimants, owner)) = tokio::join!(path, claimants_then_owner);
    record_path(&mut snap, path);
    match claimants {
        Probed::Answers(r) => snap.probe = Some(r),
        Probed::Skipped(why) => snap.probe_skipped = Some(why),
        Probed::Failed(e) => failed(&mut snap, e),
    }
    match owner {
        Some(Ok(p)) => snap.owner_probe = Some(p),
        Some(Err(why)) => snap.owner_probe_skipped = Some(why),
        None => {}
    }
    snap
}

/// The MACs to make a handshake through: the one in use (the neighbour
/// entry's) first, then every other claimant, each once.
fn owner_candidates(entry: Option<&str>, answers: &[String], known: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in entry
        .into_iter()
        .chain(answers.iter().map(String::as_str))
        .chain(known.iter().map(String::as_str))
    {
        let m = m.to_ascii_lowercase();
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

/// A handshake through each of `macs` to `dst`, when there are two or more
/// (one MAC has nothing to be told apart from). `None`: not needed.
async fn owner_probe(
    dst: std::net::SocketAddr,
    dev: &str,
    macs: &[String],
    sni: Option<&str>,
) -> Option<Result<crate::model::facts::OwnerProbe, String>> {
    if macs.len() < 2 {
        return None;
    }
    if PROBES_DISABLED.load(Ordering::Relaxed) {
        return Some(Err("--no-probe was given".into()));
    }
    Some(match owner::admit(dst, macs.len().min(owner::MAX_MACS)) {
        owner::Admit::Reuse(p) => Ok(p),
        owner::Admit::Skip(why) => {
            PROBES_SKIPPED.fetch_add(1, Ordering::Relaxed);
            Err(why)
        }
        owner::Admit::Run => {
            PROBES_SENT.fetch_add(1, Ordering::Relaxed);
            Ok(owner::probe(dst, dev, macs, sni).await)
        }
    })
}

/// The path check toward `dst`, unless active probes are off.
async fn path_check(dst: IpAddr) -> Option<Result<crate::model::facts::PathCheck, String>> {
    if PROBES_DISABLED.load(Ordering::Relaxed) {
        return None;
    }
    crate::state::path_checks::check(dst).await
}

fn record_path(snap: &mut Snapshot, path: Option<Result<crate::model::facts::PathCheck, String>>) {
    match path {
        Some(Ok(p)) => snap.path = Some(p),
        Some(Err(e)) => failed(snap, e),
        None => {}
    }
}

async fn storm(flow: FlowRef, socket_netns: Option<u32>) -> Snapshot {
    let mut snap = Snapshot {
        symptom: Symptom::RetransmitStorm.as_str().to_string(),
        flow: Some(flow),
        tcp_retries2: state::sysctl::tcp_retries2(),
        ..Default::default()
    };
    let lookup = tokio::task::spawn_blocking(move || {
        let entry = conntrack::lookup(flow.src, flow.dst);
        let same = same_service(flow.dst);
        (entry, same)
    })
    .await;
    let target = match lookup {
        Ok((entry, same)) => {
            match entry {
                Ok(e) => snap.conntrack = e,
                Err(e) => failed(
                    &mut snap,
                    format!("conntrack {} -> {}: {e}", flow.src, flow.dst),
                ),
            }
            match same {
                Ok(v) => snap.same_service = v,
                Err(e) => failed(&mut snap, format!("conntrack entries to {}: {e}", flow.dst)),
            }
            // Where the packets really go: the NAT target when there is one.
            snap.conntrack
                .as_ref()
                .filter(|c| c.is_dnat())
                .map(|c| c.reply_src.ip())
                .unwrap_or(flow.dst.ip())
        }
        Err(e) => {
            failed(&mut snap, format!("conntrack look-up task: {e}"));
            flow.dst.ip()
        }
    };
    let ours = crate::kernel::netns::current_inode();
    snap.node_netns = ours;
    snap.conntrack_usage = conntrack_usage();
    snap.listen_overflows = listen_overflows_since_start();
    // The ruleset: what drops the flow here, and where NAT sends it.
    let rules = read_rules(&mut snap).await;
    snap.drop_rules = nat_rules::drop_rules(&rules, flow.src, flow.dst);
    next_hop(target, None, &mut snap).await;
    // A socket in another namespace concerns this node only if its traffic
    // passes through: NATed here (a conntrack entry) or addressed to it.
    let local = snap.route.as_ref().is_some_and(|r| r.kind == "local");
    if local {
        snap.accept_queue = state::sysctl::accept_queue(flow.dst.port());
    }
    if snap.conntrack.is_none() && !local && socket_netns.is_some() && socket_netns != ours {
        snap.foreign_netns = socket_netns;
        snap.route = None;
        snap.neighbour = None;
        return snap;
    }
    // A NATed flow: is its target still in the Service's translation, and
    // does it answer a fresh connection from here?
    if let Some(ct) = snap.conntrack.clone().filter(|c| c.is_dnat()) {
        let (service, target) = (ct.orig_dst, ct.reply_src);
        if !rules.is_empty() {
            snap.translation = Some(nat_rules::translation(&rules, service, target));
        }
        snap.liveness = Some(liveness::check(target).await);
    } else if socket_netns.is_some() && socket_netns == ours {
        // This node's own socket sending into a path that swallows its
        // full-size segments: does a full-size packet get through?
        let path = path_check(flow.dst.ip()).await;
        record_path(&mut snap, path);
    }
    snap
}

type Rules = std::sync::Arc<Vec<nat_rules::Rule>>;

/// The last ruleset read: a storm of many flows, or a handshake and a
/// storm at once, share one dump (kube-proxy's ruleset can be large).
static RULES_DUMP: Recent<(), Vec<nat_rules::Rule>> = Recent::new();

/// This namespace's nftables rules, from a dump at most `DUMP_TTL` old;
/// empty (and said) when unreadable.
async fn read_rules(snap: &mut Snapshot) -> Rules {
    if let Some(rules) = RULES_DUMP.get(()) {
        return rules;
    }
    match tokio::task::spawn_blocking(nat_rules::read).await {
        Ok(Ok(rules)) => RULES_DUMP.put((), rules),
        Ok(Err(e)) => {
            failed(snap, format!("nftables rules: {e}"));
            Rules::default()
        }
        Err(e) => {
            failed(snap, format!("nftables rules task: {e}"));
            Rules::default()
        }
    }
}
