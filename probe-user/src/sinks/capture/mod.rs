//! `netprobe capture`: one incident bundle for whoever must see the
//! evidence. A tracing session whose consumer writes packets.pcapng (the
//! classifier's frame copies), events.jsonl (the `--json` stream),
//! neighbours.json and conntrack.json (whole tables at the start and at
//! each diagnosis) and, at the end, report.md; then it lists the bundle.
//!
//! One job per file: `bundle` (safe directory and files), `pcapng`,
//! `state` (table reads, JSON array files), `budget` (size cap), `report`,
//! `progress`.

pub mod budget;
pub mod bundle;
pub mod pcapng;
pub mod progress;
pub mod report;
pub mod state;

use std::{
    collections::HashSet,
    fs::File,
    io::{self, BufWriter, Write as _},
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use self::{
    budget::{Budget, MIB},
    bundle::Bundle,
    pcapng::PcapngWriter,
    progress::{Counts, Progress, human_bytes, plural},
    report::Timeline,
    state::{JsonArray, Tables},
};
use crate::{
    cli::CaptureArgs,
    model::event::{Diagnosis, Event, EventBody, Stats},
    pipeline::Packet,
    sinks::output::json::write_json_line,
    sinks::{Consumer, Flow},
    trace,
};

pub const PACKETS: &str = "packets.pcapng";
pub const EVENTS: &str = "events.jsonl";
pub const NEIGHBOURS: &str = "neighbours.json";
pub const CONNTRACK: &str = "conntrack.json";
pub const REPORT: &str = "report.md";

/// Table reads after this many diagnoses are skipped (a storm of them
/// would otherwise dump the tables again and again).
const MAX_TABLE_READS: usize = 20;
/// `--until-diagnosis` waits this long at most for the diagnosis' tables.
const TABLES_TIMEOUT: Duration = Duration::from_secs(15);
/// Table reads still running when the session ends get this long.
const FINAL_WAIT: Duration = Duration::from_secs(5);
/// `lo` has this index in every namespace.
const LOOPBACK_IFINDEX: u32 = 1;
/// Distinct flows counted for the progress line.
const MAX_FLOWS: usize = 100_000;

/// Why the capture ended.
#[derive(Clone, Debug, PartialEq)]
enum Stop {
    Duration(Duration),
    Diagnosis {
        cause: String,
        src: SocketAddr,
        dst: SocketAddr,
    },
    NoDiagnosis(Duration),
    SizeCap {
        cap_mib: u64,
    },
    Signal,
}

impl Stop {
    fn message(&self) -> String {
        match self {
            Stop::Duration(d) => format!("--duration {} elapsed", humantime::format_duration(*d)),
            Stop::Diagnosis { cause, src, dst } => format!(
                "first diagnosis (--until-diagnosis): {cause} for {src} -> {dst}; the tables read for it are in the bundle"
            ),
            Stop::NoDiagnosis(wait) => format!(
                "no diagnosis came within --max-wait {} (--until-diagnosis); the bundle holds what was seen",
                humantime::format_duration(*wait)
            ),
            Stop::SizeCap { cap_mib } => format!(
                "size cap reached (--max-size-mib {cap_mib}): later events and packets were not written; the bundle is complete up to there"
            ),
            Stop::Signal => "interrupted (Ctrl-C or SIGTERM)".to_string(),
        }
    }
}

/// The bundle's open files.
struct Files {
    packets: PcapngWriter<BufWriter<File>>,
    events: BufWriter<File>,
    neighbours: JsonArray<File>,
    conntrack: JsonArray<File>,
    report: File,
}

impl Files {
    fn create(bundle: &mut Bundle) -> io::Result<Files> {
        Ok(Files {
            packets: PcapngWriter::new(BufWriter::new(bundle.create_file(PACKETS)?))?,
            events: BufWriter::new(bundle.create_file(EVENTS)?),
            neighbours: JsonArray::new(bundle.create_file(NEIGHBOURS)?)?,
            conntrack: JsonArray::new(bundle.create_file(CONNTRACK)?)?,
            report: bundle.create_file(REPORT)?,
        })
    }

    fn header_bytes(&self) -> u64 {
        self.packets.bytes() + self.neighbours.bytes() + self.conntrack.bytes()
    }
}

/// The session's consumer: writes everything it is handed into the bundle.
struct Capture {
    files: Files,
    duration: Option<Duration>,
    until_diagnosis: bool,
    max_wait: Duration,
    cap_mib: u64,
    budget: Budget,
    counts: Counts,
    flows: HashSet<(SocketAddr, SocketAddr)>,
    diagnoses: Vec<(DateTime<Utc>, Diagnosis)>,
    timeline: Timeline,
    last_stats: Option<Stats>,
    tables_tx: mpsc::UnboundedSender<Tables>,
    tables_rx: mpsc::UnboundedReceiver<Tables>,
    tables_pending: usize,
    table_reads: usize,
    /// Set by the session's first call: the probes are attached by then.
    started: Option<Instant>,
    /// A diagnosis came under --until-diagnosis: stop once its tables are in.
    stop_pending: Option<(Stop, Instant)>,
    stop: Option<Stop>,
    progress: Progress,
    goal: String,
    line: Vec<u8>,
}

impl Capture {
    fn new(args: &CaptureArgs, files: Files) -> Capture {
        let (tables_tx, tables_rx) = mpsc::unbounded_channel();
        let mut budget = Budget::new(args.max_size_mib.saturating_mul(MIB));
        budget.spend(files.header_bytes());
        let goal = match (args.duration, args.until_diagnosis) {
            (Some(d), _) => format!("for {}", humantime::format_duration(d)),
            (None, true) => format!(
                "until the first diagnosis, at most {}",
                humantime::format_duration(args.max_wait)
            ),
            (None, false) => "until Ctrl-C".to_string(),
        };
        Capture {
            files,
            duration: args.duration,
            until_diagnosis: args.until_diagnosis,
            max_wait: args.max_wait,
            cap_mib: args.max_size_mib,
            budget,
            counts: Counts::default(),
            flows: HashSet::new(),
            diagnoses: Vec::new(),
            timeline: Timeline::default(),
            last_stats: None,
            tables_tx,
            tables_rx,
            tables_pending: 0,
            table_reads: 0,
            started: None,
            stop_pending: None,
            stop: None,
            progress: Progress::stderr(),
            goal,
            line: Vec::with_capacity(1024),
        }
    }

    fn begin(&mut self) -> Instant {
        *self.started.get_or_insert_with(Instant::now)
    }

    fn cap_reached(&mut self) -> Flow {
        if self.stop.is_none() {
            self.stop = Some(Stop::SizeCap {
                cap_mib: self.cap_mib,
            });
            self.timeline
                .note(Utc::now(), "size cap reached: nothing more written");
        }
        Flow::Stop
    }

    /// Reads both tables in the background; [`Capture::tick`] writes them.
    fn read_tables(&mut self, reason: String) {
        if self.table_reads >= MAX_TABLE_READS {
            self.timeline.note(
                Utc::now(),
                &format!("tables not read again ({MAX_TABLE_READS} reads already): {reason}"),
            );
            return;
        }
        self.table_reads += 1;
        self.tables_pending += 1;
        let tx = self.tables_tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(state::read(reason).await);
        });
    }

    fn write_tables(&mut self, t: &Tables) -> io::Result<()> {
        let neighbours = state::element(t.time, &t.reason, &t.neighbours)?;
        let conntrack = state::element(t.time, &t.reason, &t.conntrack)?;
        let grows =
            self.files.neighbours.growth(&neighbours) + self.files.conntrack.growth(&conntrack);
        if self.budget.take(grows) {
            self.files.neighbours.push(&neighbours)?;
            self.files.conntrack.push(&conntrack)?;
        } else {
            // A short element says where the tables would have been.
            let why = "not written: the bundle's size cap was reached";
            for file in [&mut self.files.neighbours, &mut self.files.conntrack] {
                let e = state::skipped(t.time, &t.reason, why)?;
                self.budget.spend(file.growth(&e));
                file.push(&e)?;
            }
            self.cap_reached();
        }
        let read = format!(
            "tables read ({}): neighbours {}, conntrack {}",
            t.reason,
            entries(&t.neighbours),
            entries(&t.conntrack)
        );
        self.timeline.note(t.time, &read);
        Ok(())
    }

    fn drain_tables(&mut self) -> io::Result<()> {
        while let Ok(t) = self.tables_rx.try_recv() {
            self.tables_pending -= 1;
            self.write_tables(&t)?;
        }
        Ok(())
    }

    /// After the session: lets table reads still running finish, bounded.
    async fn settle_tables(&mut self) -> io::Result<()> {
        let deadline = tokio::time::Instant::now() + FINAL_WAIT;
        while self.tables_pending > 0 {
            match tokio::time::timeout_at(deadline, self.tables_rx.recv()).await {
                Ok(Some(t)) => {
                    self.tables_pending -= 1;
                    self.write_tables(&t)?;
                }
                _ => break,
            }
        }
        Ok(())
    }

    fn count_flow(&mut self, a: SocketAddr, b: SocketAddr) {
        if self.flows.len() < MAX_FLOWS && self.flows.insert((a.min(b), a.max(b))) {
            self.counts.flows += 1;
        }
    }

    fn observe(&mut self, e: &Event) {
        match &e.body {
            EventBody::Stats(s) => {
                self.last_stats = Some(s.clone());
                return;
            }
            EventBody::Retransmit(r) => self.count_flow(r.src, r.dst),
            EventBody::Reset(r) => self.count_flow(r.src, r.dst),
            EventBody::TlsClientHello(c) => self.count_flow(c.src, c.dst),
            EventBody::TlsServerHello(s) => self.count_flow(s.src, s.dst),
            EventBody::Diagnosis(d) => {
                self.diagnoses.push((e.time, (**d).clone()));
                self.counts.diagnoses += 1;
                let n = self.diagnoses.len();
                self.read_tables(format!(
                    "diagnosis {n}: {} {} -> {}",
                    d.cause, d.flow.src, d.flow.dst
                ));
                if self.until_diagnosis && self.stop_pending.is_none() {
                    let stop = Stop::Diagnosis {
                        cause: d.cause.clone(),
                        src: d.flow.src,
                        dst: d.flow.dst,
                    };
                    self.stop_pending = Some((stop, Instant::now()));
                }
            }
            _ => {}
        }
        self.counts.events += 1;
        self.timeline.observe(e);
    }

    /// Closes every file (report.md written last) and lists the bundle.
    fn close(
        self,
        bundle: &Bundle,
        started: DateTime<Utc>,
        command: String,
        netns: Option<String>,
        ports: Vec<u16>,
    ) -> io::Result<String> {
        let stop = self.stop.clone().unwrap_or(Stop::Signal);
        let ended = Utc::now();
        let Files {
            packets,
            events,
            neighbours,
            conntrack,
            mut report,
        } = self.files;
        let interfaces = packets.interfaces();
        let packet_count = packets.packets;
        let packets = packets
            .into_inner()?
            .into_inner()
            .map_err(|e| e.into_error())?;
        let events = events.into_inner().map_err(|e| e.into_error())?;
        let (table_reads, neighbours, conntrack) = (
            neighbours.elements,
            neighbours.into_inner(),
            conntrack.into_inner(),
        );
        let md = report::render(&report::Input {
            started,
            ended,
            command,
            netns,
            ports,
            stopped: stop.message(),
            counts: Counts {
                bytes: self.budget.used(),
                ..self.counts
            },
            last_stats: self.last_stats.as_ref(),
            diagnoses: &self.diagnoses,
            timeline: &self.timeline,
        });
        let room = self.budget.cap().saturating_sub(self.budget.used());
        report.write_all(fit(&md, room).as_bytes())?;
        let diagnoses = match self.diagnoses.first() {
            None => "no diagnosis".to_string(),
            Some((_, d)) if self.diagnoses.len() == 1 => format!("1 diagnosis: {}", d.cause),
            Some(_) => plural(self.diagnoses.len() as u64, "diagnosis"),
        };
        let listed = [
            (
                PACKETS,
                &packets,
                format!(
                    "{} on {}",
                    plural(packet_count, "packet"),
                    plural(interfaces as u64, "interface")
                ),
            ),
            (
                EVENTS,
                &events,
                format!("{}, {diagnoses}", plural(self.counts.events, "event")),
            ),
            (NEIGHBOURS, &neighbours, plural(table_reads, "table read")),
            (CONNTRACK, &conntrack, plural(table_reads, "table read")),
            (REPORT, &report, diagnoses.clone()),
        ];
        let mut rows = Vec::new();
        let mut total = 0;
        for (name, file, what) in listed {
            file.sync_all()?;
            let size = file.metadata()?.len();
            total += size;
            rows.push(format!("  {name:<16} {:>10}  {what}", human_bytes(size)));
        }
        debug_assert_eq!(bundle.files().len(), rows.len());
        let path = bundle.path().display();
        Ok(format!(
            "capture stopped: {}\nbundle {path} ({} files, {} in all):\n{}\nreplay: netprobe replay {path}/{EVENTS}\n",
            stop.message(),
            rows.len(),
            human_bytes(total),
            rows.join("\n"),
        ))
    }
}

impl Consumer for Capture {
    fn event(&mut self, e: &Event) -> io::Result<Flow> {
        self.begin();
        self.line.clear();
        write_json_line(&mut self.line, e)?;
        let len = self.line.len() as u64;
        let last_stats = matches!(&e.body, EventBody::Stats(s) if s.r#final);
        if self.budget.exhausted() || !self.budget.take(len) {
            if !last_stats || self.budget.used() + len > self.budget.cap() {
                return Ok(self.cap_reached());
            }
            // The closing stats line may use the report's reserve.
            self.budget.spend(len);
        }
        self.files.events.write_all(&self.line)?;
        self.observe(e);
        Ok(Flow::Continue)
    }

    fn packet(&mut self, p: &Packet) -> io::Result<Flow> {
        self.begin();
        // On loopback every frame leaves and comes back in: keep the egress
        // copy only, as tcpdump -i lo shows each frame once.
        if p.ifindex == LOOPBACK_IFINDEX && p.direction == probe_common::direction::INGRESS {
            return Ok(Flow::Continue);
        }
        let estimate = pcapng::max_packet_bytes(p);
        if !self.budget.take(estimate) {
            return Ok(self.cap_reached());
        }
        let written = self.files.packets.write(p)?;
        self.budget.settle(estimate, written);
        self.counts.packets += 1;
        Ok(Flow::Continue)
    }

    fn wants_packets(&self) -> bool {
        true
    }

    fn tick(&mut self, _now: DateTime<Utc>) -> io::Result<Flow> {
        let started = self.begin();
        self.files.events.flush()?;
        self.files.packets.flush()?;
        self.drain_tables()?;
        if self.stop.is_some() {
            return Ok(Flow::Stop);
        }
        if let Some((_, since)) = &self.stop_pending
            && (self.tables_pending == 0 || since.elapsed() >= TABLES_TIMEOUT)
        {
            self.stop = self.stop_pending.take().map(|(s, _)| s);
            return Ok(Flow::Stop);
        }
        let elapsed = started.elapsed();
        if let Some(d) = self.duration
            && elapsed >= d
        {
            self.stop = Some(Stop::Duration(d));
            return Ok(Flow::Stop);
        }
        if self.until_diagnosis && self.diagnoses.is_empty() && elapsed >= self.max_wait {
            self.stop = Some(Stop::NoDiagnosis(self.max_wait));
            return Ok(Flow::Stop);
        }
        self.counts.bytes = self.budget.used();
        self.progress.update(elapsed, &self.counts, &self.goal);
        Ok(Flow::Continue)
    }
}

/// `text`, cut at a line end to fit in `room` bytes if it must be.
fn fit(text: &str, room: u64) -> std::borrow::Cow<'_, str> {
    const CUT: &str = "\n\n(report cut here: the bundle's size cap was reached)\n";
    if text.len() as u64 <= room {
        return text.into();
    }
    let mut keep = (room as usize).saturating_sub(CUT.len());
    while !text.is_char_boundary(keep) {
        keep -= 1;
    }
    let end = text[..keep].rfind('\n').unwrap_or(0);
    format!("{}{CUT}", &text[..end]).into()
}

/// `12 entries`, or why the table could not be read.
fn entries<T>(r: &Result<Vec<T>, String>) -> String {
    match r {
        Ok(v) => plural(v.len() as u64, "entry"),
        Err(e) => format!("failed: {e}"),
    }
}

/// The command line, quoted where needed, for the report.
fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `netprobe capture`: the bundle is created (or refused) before anything
/// is loaded; if the session cannot start, the bundle is removed again.
pub async fn run(args: CaptureArgs, tc_netns: Option<u32>) -> anyhow::Result<()> {
    if args.max_size_mib == 0 {
        anyhow::bail!("--max-size-mib must be at least 1");
    }
    let mut bundle = Bundle::create(&args.out)?;
    let files = match Files::create(&mut bundle) {
        Ok(f) => f,
        Err(e) => {
            let _ = bundle.discard();
            return Err(e).context("creating the bundle's files");
        }
    };
    let started_wall = Utc::now();
    let mut capture = Capture::new(&args, files);
    let first = state::read("start".to_string()).await;
    if let Err(e) = capture.write_tables(&first) {
        let _ = bundle.discard();
        return Err(e).context("writing the start tables");
    }

    let result = trace::session(&args.common, tc_netns, &mut capture).await;
    capture.progress.finish();
    if let Err(e) = &result
        && capture.started.is_none()
    {
        // Nothing was captured: leave nothing behind.
        drop(capture);
        if let Err(d) = bundle.discard() {
            log::warn!("could not remove {}: {d}", bundle_path(&args));
        }
        return Err(anyhow::anyhow!("{e:#}"));
    }
    capture.drain_tables()?;
    capture.settle_tables().await?;
    let listing = capture
        .close(
            &bundle,
            started_wall,
            command_line(),
            args.common.netns.clone(),
            args.common.ports(),
        )
        .with_context(|| format!("closing the bundle in {}", bundle_path(&args)))?;
    print!("{listing}");
    let _ = io::stdout().flush();
    result
}

fn bundle_path(args: &CaptureArgs) -> String {
    args.out.display().to_string()
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use pcap_file::pcapng::{Block, PcapNgReader};

    use super::*;
    use crate::{
        cli::{Cli, Command},
        model::event::FlowRef,
        sinks::output::samples,
    };

    fn args(out: &std::path::Path, extra: &[&str]) -> CaptureArgs {
        let mut argv = vec!["netprobe", "capture", "--out", out.to_str().unwrap()];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Capture(a) => a,
            _ => unreachable!(),
        }
    }

    fn start(out: &std::path::Path, extra: &[&str]) -> (Bundle, Capture) {
        let a = args(out, extra);
        let mut bundle = Bundle::create(&a.out).unwrap();
        let files = Files::create(&mut bundle).unwrap();
        let mut c = Capture::new(&a, files);
        c.progress = Progress::new(false);
        (bundle, c)
    }

    fn frame(n: usize) -> Packet {
        Packet {
            time: samples::at(),
            ifindex: 2,
            iface: "eth0".into(),
            direction: 1,
            wire_len: n as u32,
            data: vec![0xab; n],
        }
    }

    fn diagnosis() -> Event {
        Event {
            time: samples::at(),
            netns: None,
            body: EventBody::Diagnosis(Box::new(Diagnosis {
                evidence: vec!["e".into()],
                fix: Some("ip neigh del 10.0.0.100 dev eth0".into()),
                detected_after_ms: 1,
                ..Diagnosis::new(
                    "tls_handshake_unanswered",
                    "stale_neighbour",
                    FlowRef {
                        src: "10.0.0.1:40000".parse().unwrap(),
                        dst: "10.0.0.100:6443".parse().unwrap(),
                    },
                    "s",
                )
            })),
        }
    }

    #[test]
    fn size_cap_stops_the_capture_and_leaves_valid_files_under_the_cap() {
        let s = bundle::tests::Scratch::new("cap");
        let out = s.0.join("b");
        let (bundle, mut c) = start(&out, &["--max-size-mib", "1"]);
        let mut written = 0;
        let stopped = loop {
            if c.event(&samples::client_hello()).unwrap() == Flow::Stop {
                break "event";
            }
            if c.packet(&frame(1500)).unwrap() == Flow::Stop {
                break "packet";
            }
            written += 1;
            assert!(written < 10_000, "never capped");
        };
        // Nothing more goes in once capped, not even a small event.
        assert_eq!(
            c.event(&samples::arp()).unwrap(),
            Flow::Stop,
            "capped by {stopped}"
        );
        assert_eq!(c.tick(Utc::now()).unwrap(), Flow::Stop);
        let listing = c
            .close(
                &bundle,
                samples::at(),
                "netprobe capture".into(),
                None,
                vec![443],
            )
            .unwrap();
        assert!(
            listing.starts_with("capture stopped: size cap reached (--max-size-mib 1)"),
            "{listing}"
        );

        let total: u64 = FILES_FOR_TEST
            .iter()
            .map(|f| std::fs::metadata(out.join(f)).unwrap().len())
            .sum();
        assert!(total <= MIB, "{total} bytes on disk for a 1 MiB cap");
        assert!(total > MIB / 2, "the cap should be mostly used: {total}");
        let pcap = std::fs::read(out.join(PACKETS)).unwrap();
        let mut r = PcapNgReader::new(&pcap[..]).unwrap();
        let mut packets = 0;
        while let Some(b) = r.next_block() {
            if let Block::EnhancedPacket(_) = b.unwrap() {
                packets += 1;
            }
        }
        assert_eq!(packets, written + usize::from(stopped == "event"));
        let events = std::fs::read_to_string(out.join(EVENTS)).unwrap();
        assert!(
            events
                .lines()
                .all(|l| serde_json::from_str::<Event>(l).is_ok())
        );
        let report = std::fs::read_to_string(out.join(REPORT)).unwrap();
        assert!(report.contains("size cap reached"), "{report}");
    }

    #[test]
    fn the_report_is_cut_to_fit_the_cap() {
        assert_eq!(fit("a\nb\n", 10), "a\nb\n");
        let long = "line one\nline two\n".repeat(100);
        let cut = fit(&long, 120);
        assert!(cut.len() <= 120, "{}", cut.len());
        assert!(cut.ends_with("size cap was reached)\n"), "{cut}");
        assert!(cut.starts_with("line one\nline two\n"), "{cut}");
        assert_eq!(
            fit(&long, 10),
            "\n\n(report cut here: the bundle's size cap was reached)\n"
        );
    }

    #[test]
    fn loopback_frames_are_kept_once() {
        let s = bundle::tests::Scratch::new("lo");
        let (_bundle, mut c) = start(&s.0.join("b"), &[]);
        let mut lo = frame(60);
        lo.ifindex = LOOPBACK_IFINDEX;
        c.packet(&lo).unwrap();
        lo.direction = probe_common::direction::INGRESS;
        c.packet(&lo).unwrap();
        let mut eth = frame(60);
        eth.direction = probe_common::direction::INGRESS;
        c.packet(&eth).unwrap();
        assert_eq!(c.counts.packets, 2);
    }

    const FILES_FOR_TEST: [&str; 5] = [PACKETS, EVENTS, NEIGHBOURS, CONNTRACK, REPORT];

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn until_diagnosis_stops_once_the_tables_of_the_diagnosis_are_written() {
        let s = bundle::tests::Scratch::new("untildiag");
        let out = s.0.join("b");
        let (bundle, mut c) = start(&out, &["--until-diagnosis"]);
        assert_eq!(c.event(&samples::client_hello()).unwrap(), Flow::Continue);
        assert_eq!(
            c.event(&diagnosis()).unwrap(),
            Flow::Continue,
            "the tables come first"
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.tick(Utc::now()).unwrap() == Flow::Continue {
            assert!(Instant::now() < deadline, "never stopped");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            c.files.neighbours.elements, 1,
            "the diagnosis' tables are in"
        );
        let listing = c
            .close(
                &bundle,
                samples::at(),
                "netprobe capture".into(),
                None,
                vec![443],
            )
            .unwrap();
        assert!(
            listing.starts_with("capture stopped: first diagnosis (--until-diagnosis): stale_neighbour for 10.0.0.1:40000 -> 10.0.0.100:6443"),
            "{listing}"
        );
        for f in FILES_FOR_TEST {
            assert!(
                listing.contains(&format!("\n  {f} ")),
                "{f} not listed: {listing}"
            );
        }
        let tables: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(CONNTRACK)).unwrap()).unwrap();
        assert_eq!(
            tables[0]["reason"],
            "diagnosis 1: stale_neighbour 10.0.0.1:40000 -> 10.0.0.100:6443"
        );
        let report = std::fs::read_to_string(out.join(REPORT)).unwrap();
        assert!(report.contains("### 1. `stale_neighbour`"), "{report}");
        assert!(report.contains("1 diagnosis,"), "{report}");
    }

    #[test]
    fn no_diagnosis_within_max_wait_is_said() {
        let s = bundle::tests::Scratch::new("maxwait");
        let out = s.0.join("b");
        let (bundle, mut c) = start(&out, &["--until-diagnosis", "--max-wait", "50ms"]);
        assert_eq!(c.tick(Utc::now()).unwrap(), Flow::Continue);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.tick(Utc::now()).unwrap(), Flow::Stop);
        let listing = c
            .close(
                &bundle,
                samples::at(),
                "netprobe capture".into(),
                None,
                vec![443],
            )
            .unwrap();
        assert!(
            listing.starts_with("capture stopped: no diagnosis came within --max-wait 50ms"),
            "{listing}"
        );
    }
}
