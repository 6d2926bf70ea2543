//! The tracing session behind `trace`, `top` and `capture`: attach, read
//! the ring buffer, correlate, investigate, hand every event to a
//! [`Consumer`] until it says stop or Ctrl-C/SIGTERM arrives, then detach.

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::Ordering,
    time::Duration,
};

use anyhow::{Context as _, bail};
use aya::maps::{MapData, RingBuf};
use log::{info, warn};
use probe_common::kind;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

pub use crate::sinks::{Consumer, Flow};

use crate::{
    cli::{CommonArgs, TraceArgs},
    correlate::{self, Correlator, Investigation},
    investigate,
    kernel::btf_offsets,
    kernel::links::{self, Link, LinkChange},
    kernel::probes::{LoadOptions, Probes},
    kernel::tcx,
    model::event::{Event, EventBody, Stats},
    pipeline::enrich::{Clock, Enricher},
    pipeline::{Fed, Pipeline},
    sinks::metrics,
    sinks::output::{self, Format, Sink},
};

/// Written on stderr once every probe is attached; tests wait for it.
pub const READY: &str = "netprobe: ready";

/// Interfaces to attach to at start: the named ones (each must exist), or
/// every uplink-class interface (see [`Link::uplink_class`]; `addressed`
/// holds the interfaces with a global address).
pub fn select_targets(
    wanted: &[String],
    links: &[Link],
    addressed: &HashSet<u32>,
) -> anyhow::Result<Vec<Link>> {
    if wanted.is_empty() {
        return Ok(links
            .iter()
            .filter(|l| l.uplink_class(addressed.contains(&l.index)))
            .cloned()
            .collect());
    }
    wanted
        .iter()
        .map(|name| {
            links
                .iter()
                .find(|l| &l.name == name)
                .cloned()
                .with_context(|| format!("unknown interface {name}"))
        })
        .collect()
}

/// The record kind a tracepoint program writes; `None` for one that only
/// keeps state in the kernel (its skipped runs lose no record).
fn skipped_kind(prog: &str) -> Option<u16> {
    match prog {
        "tcp_retransmit" | "tcp_retransmit_tp" => Some(kind::RETRANSMIT),
        "tcp_receive_reset" => Some(kind::RESET),
        "neigh_update" => Some(kind::NEIGHBOUR),
        "skb_kfree" => Some(kind::DROP),
        "icmp_send" => Some(kind::ICMP_SENT),
        "tcp_send_reset" => Some(kind::RESET_SENT),
        "synack_retrans" => Some(kind::SYNACK_RETRANSMIT),
        _ => None,
    }
}

/// The correlator's tick: handshake deadlines are checked this often (a
/// diagnosis comes at most this long after the timeout, plus the probe
/// window). The ring buffer is drained at every tick before the deadlines
/// are judged: the programs wake the reader only once
/// [`crate::kernel::probes::wake_bytes`] are pending, so a lone record waits for
/// the tick (events carry the kernel's time), and an answer already in the
/// ring is not taken for a timeout (short of a backlog over one batch, which
/// the programs will have woken the reader for).
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(100);

/// Records read per wake-up at most: under a flood the loop still gets to
/// its signals, timers and investigations between batches.
const MAX_DRAIN: usize = 4096;

/// What one drain of the ring buffer left.
enum Drained {
    /// Nothing more to read now.
    Empty,
    /// The batch limit was reached; more is waiting.
    More,
    /// The consumer said stop.
    Stop,
}

/// Investigations running at once; more wait their turn.
const MAX_INVESTIGATIONS: usize = 4;

struct Tracer<'c> {
    probes: Probes,
    pipeline: Pipeline,
    names: HashMap<u32, String>,
    /// Interfaces named with --iface (empty: every uplink that comes up).
    wanted: Vec<String>,
    /// Interfaces with a global address at start (veths among them are
    /// uplinks, not pods').
    addressed: HashSet<u32>,
    /// This node's namespaces, for the socket hooks' filter.
    node_ns: crate::kernel::sockets::NodeNamespaces,
    /// Pod veths whose peer namespace is still to be found: (ifindex, nsid).
    unresolved: Vec<(u32, i32)>,
    sink: &'c mut dyn Consumer,
    correlator: Correlator,
    /// Snapshots come back here from investigation tasks.
    snapshots: tokio::sync::mpsc::UnboundedSender<Event>,
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    /// Node and namespace: stamped on diagnoses, and their fixes act there.
    scope: crate::sinks::scope::Scope,
}

impl Tracer<'_> {
    /// The session's clock: the kernel's monotonic time on the wall-clock
    /// offset taken at start, the same clock the events carry. Deadlines
    /// run on it, so a wall-clock step neither fires nor delays them.
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.pipeline.enricher().wall(monotonic_ns())
    }

    fn stats(&self, last: bool) -> Event {
        let mut lost = self.probes.lost().unwrap_or_default();
        // Runs the kernel skipped never made a record: they are lost too,
        // under the kind the program would have written.
        let skipped = self.probes.skipped();
        for (prog, runs) in &skipped {
            if let Some(k) = skipped_kind(prog) {
                lost[usize::from(k)] += runs;
            }
        }
        let tls = self.pipeline.enricher().tls_counters();
        Event {
            time: chrono::Utc::now(),
            netns: None,
            body: EventBody::Stats(Stats {
                events: self.pipeline.records,
                lost: lost.iter().sum(),
                lost_by_type: lost
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(k, n)| (crate::model::names::KIND_NAMES[k].to_string(), *n))
                    .collect(),
                skipped_by_kernel: skipped
                    .into_iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(p, n)| (p.to_string(), n))
                    .collect(),
                malformed: self.pipeline.malformed,
                tls_incomplete: tls.incomplete + tls.malformed,
                tls_partial: tls.partial,
                interfaces: self.probes.attached_count() as u32,
                storms_other_netns: self.correlator.unrelated,
                lookup_failures: investigate::LOOKUP_FAILURES.load(Ordering::Relaxed),
                probes_sent: investigate::PROBES_SENT.load(Ordering::Relaxed),
                probes_skipped: investigate::PROBES_SKIPPED.load(Ordering::Relaxed),
                recovered: self.correlator.recovered,
                r#final: last,
            }),
        }
    }

    /// Reads every record available now. Err means the consumer failed
    /// (stdout gone, disk full).
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> std::io::Result<Drained> {
        for _ in 0..MAX_DRAIN {
            let Some(item) = ring.next() else {
                return Ok(Drained::Empty);
            };
            let flow = match self.pipeline.feed(&item, &self.names) {
                Fed::Event(event) => self.publish(&event)?,
                Fed::Packet(packet) => self.sink.packet(&packet)?,
                Fed::Nothing => Flow::Continue,
            };
            if flow == Flow::Stop {
                return Ok(Drained::Stop);
            }
        }
        Ok(Drained::More)
    }

    /// Hands an event to the consumer and lets the correlator see it.
    fn publish(&mut self, event: &Event) -> std::io::Result<Flow> {
        let mut flow = self.sink.event(event)?;
        let out = self.correlator.observe(event);
        for flow in &out.arm {
            self.arm(*flow);
        }
        out.investigations
            .into_iter()
            .for_each(|inv| self.investigate(inv));
        let enricher = self.pipeline.enricher_mut();
        let bodies = out
            .diagnoses
            .into_iter()
            .map(|mut d| {
                enricher.name_pod(&mut d);
                self.scope.apply(&mut d);
                EventBody::Diagnosis(Box::new(d))
            })
            .chain(out.recovered.into_iter().map(EventBody::Recovered))
            .collect::<Vec<_>>();
        for body in bodies {
            let event = Event {
                time: self.now(),
                netns: None,
                body,
            };
            if self.sink.event(&event)? == Flow::Stop {
                flow = Flow::Stop;
            }
        }
        Ok(flow)
    }

    /// Storms that went quiet: their `recovered` events.
    fn quiet(&mut self, now: chrono::DateTime<chrono::Utc>) -> std::io::Result<Flow> {
        for r in self.correlator.quiet_storms(now) {
            let event = Event {
                time: now,
                netns: None,
                body: EventBody::Recovered(r),
            };
            if self.sink.event(&event)? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }

    /// Counts the flow's drops in the kernel from now on.
    fn arm(&mut self, flow: crate::model::event::FlowRef) {
        if let Err(e) = self.probes.arm(flow.src, flow.dst) {
            log::debug!("arming {} -> {} for drops: {e:#}", flow.src, flow.dst);
        }
    }

    fn investigate(&mut self, inv: Investigation) {
        let flow = match &inv {
            Investigation::Handshake { flow, .. } | Investigation::Storm { flow, .. } => *flow,
        };
        self.arm(flow);
        let tx = self.snapshots.clone();
        let permits = self.permits.clone();
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let _ = tx.send(investigate::run(inv).await);
        });
    }

    /// A link appeared, changed or went: ask the attach thread (never
    /// waits here: each tcx link costs the kernel a grace period).
    fn on_link(&mut self, change: LinkChange) {
        match change {
            LinkChange::New(link) => {
                self.names.insert(link.index, link.name.clone());
                let addressed = self.addressed.contains(&link.index);
                let wanted = if self.wanted.is_empty() {
                    link.uplink_class(addressed)
                } else {
                    self.wanted.contains(&link.name) && link.up && link.ethernet
                };
                if wanted {
                    self.probes.attach(link.index, &link.name);
                } else if !link.up || self.probes.is_requested(link.index) {
                    self.probes.detach(link.index);
                }
                if self.node_ns.filter
                    && link.pod_veth(addressed)
                    && let Some(nsid) = link.peer_netnsid
                    && !self.node_ns.pods.contains_key(&link.index)
                {
                    // Another veth into the same pod: nothing to look up.
                    if let Some(inode) = self.node_ns.known(nsid) {
                        self.node_ns.pods.insert(link.index, (nsid, inode));
                    } else if !self.unresolved.iter().any(|(i, _)| *i == link.index) {
                        self.unresolved.push((link.index, nsid));
                    }
                }
            }
            LinkChange::Gone(index) => {
                self.probes.detach(index);
                self.names.remove(&index);
                self.unresolved.retain(|(i, _)| *i != index);
                if self.node_ns.pods.remove(&index).is_some() {
                    self.sync_node_netns();
                }
            }
        }
    }

    /// Finds the namespaces of pod veths that appeared (batched: called on
    /// the correlator's tick, not per link message).
    async fn resolve_pods(&mut self) {
        if self.unresolved.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.unresolved);
        match self.node_ns.resolve(batch).await {
            Ok(()) => self.sync_node_netns(),
            Err(e) => log::debug!("resolving pod namespaces: {e:#}"),
        }
    }

    fn sync_node_netns(&mut self) {
        if !self.node_ns.filter {
            return;
        }
        if let Err(e) = self.probes.set_node_netns(&self.node_ns.inodes()) {
            warn!("updating this node's namespaces for the socket hooks: {e:#}");
        }
    }

    /// What the attach thread did, after start-up.
    fn on_linked(&mut self, done: tcx::Done) {
        self.probes.completed(&done);
        match done {
            tcx::Done::Attached { name, report, .. } => {
                info!("attached to new interface {name}");
                report_hooks(&report);
            }
            // It may already be gone again (pod veths are short-lived).
            tcx::Done::Failed { name, error, .. } => warn!("interface {name}: {error}"),
            tcx::Done::Detached { name, .. } => info!("interface {name} detached (down or gone)"),
        }
    }
}

/// `netprobe trace`: events to stdout as text or JSON lines.
pub async fn run(args: TraceArgs, tc_netns: Option<u32>) -> anyhow::Result<()> {
    let mut sink = Sink::stdout(if args.json {
        Format::Json
    } else {
        Format::Text
    });
    let mut only = output::Only {
        keep: if args.diagnoses_only {
            output::is_verdict
        } else {
            |_| true
        },
        inner: &mut sink,
    };
    let Some(addr) = args.metrics_listen else {
        return session(&args.common, tc_netns, &mut only).await;
    };
    // Bound before anything is attached: a taken port fails cleanly.
    let listener = metrics::http::bind(addr).await?;
    if let Ok(bound) = listener.local_addr() {
        // Port 0 picks a free port: say which.
        eprintln!("netprobe: metrics at http://{bound}/metrics");
    }
    let registry = metrics::Metrics::new();
    let server = tokio::spawn(metrics::http::serve(listener, registry.clone()));
    let mut tee = metrics::Tee {
        recorder: metrics::Recorder::new(registry, args.common.handshake_timeout),
        inner: &mut only,
    };
    let result = session(&args.common, tc_netns, &mut tee).await;
    server.abort();
    result
}

/// Runs a tracing session until the consumer stops it or a signal arrives.
pub async fn session(
    args: &CommonArgs,
    tc_netns: Option<u32>,
    consumer: &mut dyn Consumer,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    investigate::disable_probes(args.no_probe);
    investigate::baselines();
    // Watched before listing: an interface that comes up in between is in
    // the watch (attaching twice is attaching once).
    let mut watch = Some(links::watch().context("watching interfaces")?);
    let all_links = links::list().await.context("listing interfaces")?;
    let addressed = links::addressed()
        .await
        .context("listing interface addresses")?;
    let targets = select_targets(&args.ifaces, &all_links, &addressed)?;
    log::debug!(
        "start-up: interfaces listed after {:?}{}",
        started.elapsed(),
        peak_rss()
    );
    let btf = btf_offsets::from_vmlinux();
    let btf_ok = btf.is_ok();
    let offsets = btf.unwrap_or_else(|e| {
        warn!("socket namespace and sequence numbers unavailable: {e}");
        Default::default()
    });
    log::debug!(
        "start-up: BTF offsets read after {:?}{}",
        started.elapsed(),
        peak_rss()
    );
    let ports = args.ports();
    // Read once: the kernel program counts the path's reasons, the
    // enricher names them all.
    let drop_reasons = crate::kernel::tracefs::drop_reasons();
    let have_drop_reasons = !drop_reasons.is_empty();
    // Socket records limited to this node's namespaces unless netprobe has
    // the initial one (see kernel::sockets); decided once for both sides.
    let filter_netns = !crate::kernel::sockets::in_initial_netns();
    let mut probes = Probes::load(&LoadOptions {
        ring_bytes: args.ring_kib * 1024,
        offsets,
        ports: ports.clone(),
        capture_packets: consumer.wants_packets(),
        path_reasons: crate::kernel::tracefs::path_reason_bitmap(&drop_reasons),
        retransmit_err: crate::kernel::tracefs::retransmit_has_err(),
        tp_fields: crate::kernel::tracefs::tp_fields(),
        verify_all: false,
        netns_filter: filter_netns,
    })?;
    // One line per capability this kernel does not allow, saying what is lost.
    for cap in probes.capabilities() {
        if cap.on {
            log::debug!("capability {}", cap.line());
        } else {
            eprintln!("netprobe: {}", cap.line());
        }
    }
    // This node's namespaces first, then the hooks: no record of theirs
    // is dropped for want of its namespace.
    let mut node_ns = crate::kernel::sockets::NodeNamespaces {
        filter: filter_netns,
        own: crate::kernel::netns::current_inode(),
        pods: HashMap::new(),
    };
    if node_ns.filter {
        let pods = crate::kernel::sockets::pod_veth_nsids(&all_links, &addressed);
        if let Err(e) = node_ns.resolve(pods).await {
            warn!("finding the pods' namespaces: {e:#}");
        }
        probes.set_node_netns(&node_ns.inodes())?;
    }
    let sockets = match probes.attach_sockets() {
        Ok(root) => {
            info!("socket hooks on cgroup {}", root.display());
            true
        }
        Err(e) => {
            warn!("socket hooks off: {e:#}; TLS handshakes are seen on the uplinks only");
            false
        }
    };
    log::debug!(
        "start-up: programs verified and tracepoints attached after {:?}{}",
        started.elapsed(),
        peak_rss()
    );
    match probes.pin_map() {
        Ok(map) => crate::state::owner::install(map),
        Err(e) => warn!("owner probes unavailable: {e:#}"),
    }
    let (linked_tx, mut linked_rx) = tokio::sync::mpsc::unbounded_channel();
    probes.start_linking(linked_tx)?;
    let explicit = !args.ifaces.is_empty();
    for link in &targets {
        probes.attach(link.index, &link.name);
    }
    // Ready means every interface there at start is linked (or skipped).
    let mut waiting: std::collections::HashSet<u32> = targets.iter().map(|l| l.index).collect();
    // Bounded: the kernel answers each link in milliseconds, but a node
    // whose RTNL lock is held elsewhere must not keep netprobe from
    // tracing; links still on the way are taken in by the main loop.
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(30)
        + Duration::from_millis(100) * targets.len() as u32;
    while !waiting.is_empty() {
        let done = match tokio::time::timeout_at(deadline, linked_rx.recv()).await {
            Ok(Some(done)) => done,
            Ok(None) => bail!("the attach thread ended"),
            Err(_) if explicit => bail!("{} interface(s) not linked in time", waiting.len()),
            Err(_) => {
                warn!(
                    "{} interface(s) not linked yet; going on, they follow",
                    waiting.len()
                );
                break;
            }
        };
        probes.completed(&done);
        match done {
            tcx::Done::Attached {
                index,
                name,
                report,
            } => {
                waiting.remove(&index);
                info!("attached to {name}");
                report_hooks(&report);
            }
            tcx::Done::Failed { name, error, .. } if explicit => {
                bail!("attaching to {name}: {error}")
            }
            tcx::Done::Failed {
                index, name, error, ..
            } => {
                waiting.remove(&index);
                warn!("skipping {name}: {error}");
            }
            tcx::Done::Detached { index, .. } => {
                waiting.remove(&index);
            }
        }
    }
    if explicit && probes.attached_count() == 0 {
        bail!("no interface could be attached");
    }
    let ring = probes.ring_buffer()?;
    // SAFETY: the ring buffer owns its map fd for as long as the AsyncFd lives.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
    // The watch is followed in both modes: named interfaces can vanish too
    // (and come back); only without --iface are new interfaces attached.

    let (snapshot_tx, mut snapshot_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tracer = Tracer {
        names: all_links
            .iter()
            .map(|l| (l.index, l.name.clone()))
            .collect(),
        wanted: args.ifaces.clone(),
        addressed,
        node_ns,
        unresolved: Vec::new(),
        probes,
        pipeline: Pipeline::new(
            Enricher::new(Clock::system(), tc_netns)
                .with_drop_reasons(drop_reasons)
                .with_identities(identities(args, tc_netns))
                .with_reset_reasons(crate::kernel::tracefs::reset_reasons()),
        ),
        sink: consumer,
        correlator: Correlator::new(correlate::Config {
            handshake_timeout: args.handshake_timeout,
            client_flights: true,
            ..Default::default()
        }),
        snapshots: snapshot_tx,
        permits: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_INVESTIGATIONS)),
        scope: crate::sinks::scope::Scope::detect(args.netns.as_deref(), tc_netns),
    };
    let start = tracer.scope.start(
        &ports,
        &[
            ("tcx", crate::kernel::probes::tcx_supported()),
            ("btf", btf_ok),
            ("drop_reasons", have_drop_reasons),
            (
                "retransmit_err",
                crate::kernel::tracefs::retransmit_has_err(),
            ),
            (
                "active_probe",
                !args.no_probe && crate::kernel::privileges::optional_warning().is_none(),
            ),
        ],
    );
    if let Err(e) = tracer.sink.event(&start) {
        warn!("writing the start record: {e}");
    }
    log::debug!(
        "start-up: {} interface(s) linked after {:?}{}",
        tracer.probes.attached_count(),
        started.elapsed(),
        peak_rss()
    );
    let port_list: Vec<String> = ports.iter().map(u16::to_string).collect();
    eprintln!(
        "{READY}: {} interface(s), {}TLS ports {}, tracepoints tcp_retransmit_skb and neigh_update; Ctrl-C to stop",
        tracer.probes.attached_count(),
        if sockets {
            format!(
                "every socket of {} namespace(s), ",
                if tracer.node_ns.filter {
                    tracer.node_ns.inodes().len().to_string()
                } else {
                    "all".to_string()
                }
            )
        } else {
            String::new()
        },
        port_list.join(",")
    );

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut stats_tick = tokio::time::interval(args.stats_interval);
    stats_tick.tick().await;
    let mut expire_tick = tokio::time::interval(Duration::from_secs(1));
    let mut correlate_tick = tokio::time::interval(DRAIN_INTERVAL);
    let result: std::io::Result<()> = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                match tracer.drain(guard.get_inner_mut()) {
                    Ok(Drained::Empty) => guard.clear_ready(),
                    // Still readable: the next turn of the loop comes back
                    // here, after the other branches had their chance.
                    Ok(Drained::More) => {}
                    Ok(Drained::Stop) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
            change = async { watch.as_mut().unwrap().1.recv().await }, if watch.is_some() => {
                match change {
                    Some(change) => tracer.on_link(change),
                    None => { warn!("interface watch ended"); watch = None; }
                }
            }
            _ = stats_tick.tick() => {
                let stats = tracer.stats(false);
                match tracer.sink.event(&stats) {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Stop) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
            _ = expire_tick.tick() => {
                let mut flow = Ok(Flow::Continue);
                for event in tracer.pipeline.expire(monotonic_ns()) {
                    flow = tracer.publish(&event);
                    if !matches!(flow, Ok(Flow::Continue)) {
                        break;
                    }
                }
                match flow {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Stop) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
            _ = correlate_tick.tick() => {
                match tracer.drain(ring.get_mut()) {
                    // More than a batch: the programs woke the readiness
                    // branch, which takes the rest.
                    Ok(Drained::Empty | Drained::More) => {}
                    Ok(Drained::Stop) => break Ok(()),
                    Err(e) => break Err(e),
                }
                tracer.resolve_pods().await;
                let now = tracer.now();
                for inv in tracer.correlator.tick(now) {
                    tracer.investigate(inv);
                }
                match tracer.quiet(now) {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Stop) => break Ok(()),
                    Err(e) => break Err(e),
                }
                match tracer.sink.tick(now) {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Stop) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
            Some(done) = linked_rx.recv() => tracer.on_linked(done),
            Some(mut snapshot) = snapshot_rx.recv() => {
                // Stamped on the session's clock when it comes back.
                snapshot.time = tracer.now();
                match tracer.publish(&snapshot) {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Stop) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
        }
        // One write for everything this wake-up produced.
        if let Err(e) = tracer.sink.flush() {
            break Err(e);
        }
    };
    if let Some((task, _)) = watch {
        task.abort();
    }
    match result {
        Err(e) if output::is_broken_pipe(&e) => {}
        Err(e) => return Err(e).context("writing output"),
        Ok(()) => {
            // What is left in the ring buffer, in bounded batches.
            for _ in 0..256 {
                if !matches!(tracer.drain(ring.get_mut()), Ok(Drained::More)) {
                    break;
                }
            }
            let stats = tracer.stats(true);
            let _ = tracer.sink.event(&stats);
        }
    }
    let _ = tracer.sink.flush();
    tracer.probes.detach_all();
    Ok(())
}

/// Pod identity for the session: cgroups, and the container runtime's
/// sandboxes when a CRI socket is configured (asked in the background: the
/// runtime never delays start-up, and an absent socket changes nothing).
fn identities(
    args: &CommonArgs,
    node_netns: Option<u32>,
) -> crate::state::cri::identity::Identities {
    match crate::state::cri::socket::from_flag(args.cri_socket.as_deref()) {
        Some(socket) => crate::state::cri::identity::Identities::with_runtime(
            crate::state::cri::Handle::spawn(socket),
            node_netns,
        ),
        None => Default::default(),
    }
}

/// Says on stderr where netprobe sits on a hook it shares (CNIs attach
/// their own programs to pod veths and uplinks).
fn report_hooks(report: &[String]) {
    for line in report {
        eprintln!("netprobe: tcx hook {line}");
    }
}

/// ", peak RSS N KiB" from /proc/self/status, for the start-up debug lines.
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let kib = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))?
                .trim()
                .to_string();
            Some(format!(", peak RSS {kib}"))
        })
        .unwrap_or_default()
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, up: bool, ethernet: bool, kind: &str) -> Link {
        Link {
            index,
            name: name.into(),
            up,
            ethernet,
            kind: kind.into(),
            controller: None,
            peer_netnsid: (kind == "veth").then_some(index as i32),
            loopback: name == "lo",
        }
    }

    #[test]
    fn targets_are_the_uplinks_by_kind() {
        let mut port = link(9, "eth2", true, true, "");
        port.controller = Some(10);
        let links = [
            link(1, "lo", true, true, ""),
            link(2, "eth0", true, true, ""),
            link(3, "eth1", false, true, ""),
            link(4, "wg0", true, false, "wireguard"),
            link(5, "cali1234", true, true, "veth"),
            link(6, "node0", true, true, "veth"),
            link(7, "flannel.1", true, true, "vxlan"),
            link(8, "kube-ipvs0", true, true, "dummy"),
            port,
            link(10, "br0", true, true, "bridge"),
            link(11, "bond0.169", true, true, "vlan"),
        ];
        let addressed: HashSet<u32> = [2, 6, 8, 10].into();
        let names = |v: Vec<Link>| v.into_iter().map(|l| l.name).collect::<Vec<_>>();
        assert_eq!(
            names(select_targets(&[], &links, &addressed).unwrap()),
            ["eth0", "node0", "flannel.1", "br0", "bond0.169"]
        );
        // Named interfaces are taken as they are, pod veths included.
        assert_eq!(
            names(select_targets(&["eth1".into(), "cali1234".into()], &links, &addressed).unwrap()),
            ["eth1", "cali1234"]
        );
        let err = select_targets(&["nope0".into()], &links, &addressed)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "unknown interface nope0");
        assert!(links[4].pod_veth(false));
        assert!(!links[5].pod_veth(true));
    }
}
