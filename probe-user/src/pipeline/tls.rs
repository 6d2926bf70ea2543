//! TLS handshake reassembly: turns the classifier's per-segment payload
//! prefixes into parsed ClientHello / ServerHello messages.
//!
//! The kernel sends a START record for a TCP segment that begins with a TLS
//! handshake record header, and CONTINUATION records for later segments of
//! the same flow inside that record's byte range, each with at most
//! `TLS_CAPTURE` bytes of the payload. [`Reassembler`] places those prefixes
//! by sequence number and, once the first handshake message of the record is
//! all there, hands it to `tls-parser`.
//!
//! Pure and bounded: time comes in as nanoseconds, the number of flows and the
//! bytes kept per flow are capped, and untrusted bytes are only read through
//! checked slicing.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Range;

use probe_common::TLS_FOLLOW_MAX;
use tls_parser::{
    SNIType, TlsExtension, TlsExtensionType, TlsHandshakeType, TlsMessage, TlsMessageHandshake,
    TlsRecordHeader, TlsRecordType, parse_tls_extension_sni_content, parse_tls_extension_unknown,
    parse_tls_message_handshake, parse_tls_record_header,
};

const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
/// Bytes kept per flow: a record header plus the part of the record the
/// kernel follows across segments.
pub const MAX_FLOW_BYTES: usize = RECORD_HEADER_LEN + TLS_FOLLOW_MAX as usize;
/// Largest record length believed: TLSCiphertext may be 2^14 + 2048 (RFC 5246
/// 6.2.3); anything longer is not TLS.
const MAX_RECORD_LEN: u16 = (1 << 14) + 2048;
/// No real hello comes near 64 KiB; a longer one is ciphertext (a TLS 1.2
/// encrypted Finished also travels in a handshake record) or noise.
const MAX_HELLO_LEN: usize = 1 << 16;
/// Distinct segments one flow may contribute. Even 128-byte segments cover
/// `MAX_FLOW_BYTES` in 33; more means something odd is going on.
const MAX_SEGMENTS: usize = 64;

/// One direction of a TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowId {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// One TCP segment's payload prefix, as the classifier reported it.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    pub flow: FlowId,
    /// TCP sequence number of the first payload byte.
    pub seq: u32,
    /// The segment begins with a TLS record header (`tls_part::START`).
    pub start: bool,
    /// Captured bytes: a prefix of the payload.
    pub payload: &'a [u8],
    /// Payload bytes in the segment on the wire.
    pub payload_len: u16,
    /// Which capture-sized piece of its TCP segment this is: the kernel
    /// splits long segments, and only piece 0 counts as a new segment.
    pub chunk: u8,
}

/// The first handshake message of a flow, when it is a hello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handshake {
    ClientHello {
        record_version: u16,
        /// Legacy version in the body: TLS 1.3 still says 0x0303 here.
        version: u16,
        /// First `host_name` of the server_name extension.
        sni: Option<String>,
        /// TCP segments the message arrived in.
        segments: u32,
    },
    ServerHello {
        record_version: u16,
        version: u16,
        /// From the supported_versions extension: 0x0304 for TLS 1.3.
        selected_version: Option<u16>,
    },
}

/// What was seen but did not make a [`Handshake`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsCounters {
    /// Hellos that could not be completed: bytes not captured, segments
    /// missing until expiry, or a message larger than what is followed.
    pub incomplete: u64,
    /// Bytes that are not a TLS handshake record, or a hello that does not
    /// parse.
    pub malformed: u64,
    /// Unfinished flows pushed out by the flow limit.
    pub evicted: u64,
    /// Well-formed handshake records holding something other than a hello
    /// (Certificate, ClientKeyExchange, ...).
    pub ignored: u64,
    /// ClientHellos reported without their end (a continuation segment
    /// never came), so without SNI.
    pub partial: u64,
}

/// Bounds of a [`Reassembler`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Flows tracked at once; the oldest is evicted beyond this.
    pub max_flows: usize,
    /// A flow's entry is dropped this long after its first segment.
    pub max_age_ns: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_flows: 4096,
            max_age_ns: 10_000_000_000,
        }
    }
}

/// Per-flow handshake reassembly.
#[derive(Debug)]
pub struct Reassembler {
    limits: Limits,
    flows: HashMap<FlowId, Entry>,
    /// Flows in the order their entries were created; an item whose id no
    /// longer matches the live entry is stale and skipped.
    order: VecDeque<(FlowId, u64)>,
    next_id: u64,
    counters: TlsCounters,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    born_ns: u64,
    state: State,
}

#[derive(Debug)]
enum State {
    /// CONTINUATIONs that arrived before their START (ring-buffer order across
    /// CPUs is not guaranteed).
    Orphans(Vec<Orphan>),
    Pending(Assembly),
    /// Done with the record at `start`: its remaining segments are absorbed
    /// quietly. `reported` suppresses a retransmitted copy of a reported hello.
    Closed {
        start: u32,
        reported: bool,
    },
}

impl State {
    fn is_open(&self) -> bool {
        !matches!(self, State::Closed { .. })
    }
}

#[derive(Debug)]
struct Orphan {
    seq: u32,
    data: Vec<u8>,
    len: usize,
    chunk: u8,
}

/// Where a flow's first handshake message stands.
#[derive(Debug)]
enum Progress {
    Waiting,
    Done(Handshake),
    Incomplete,
    Malformed,
    Ignored,
}

impl Default for Reassembler {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Reassembler {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            flows: HashMap::new(),
            order: VecDeque::new(),
            next_id: 0,
            counters: TlsCounters::default(),
        }
    }

    pub fn counters(&self) -> TlsCounters {
        self.counters
    }

    /// Flows tracked now, finished ones included.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Adds one segment; returns the hello it completes, if any.
    pub fn push(&mut self, seg: Segment<'_>, now_ns: u64) -> Option<Handshake> {
        let len = usize::from(seg.payload_len);
        if seg.payload.len() > len {
            self.counters.malformed += 1;
            return None;
        }
        if len == 0 {
            return None;
        }
        self.expire_flow(&seg.flow, now_ns);
        if seg.start {
            self.push_start(seg, now_ns)
        } else {
            self.push_continuation(seg, now_ns)
        }
    }

    /// Drops entries older than `max_age_ns`; unfinished ones count as
    /// incomplete.
    pub fn expire(&mut self, now_ns: u64) {
        while let Some(&(flow, id)) = self.order.front() {
            let live = self.flows.get(&flow).filter(|e| e.id == id);
            if let Some(e) = live
                && !self.is_expired(e, now_ns)
            {
                // Entries are queued in creation order, so the rest are younger.
                break;
            }
            self.order.pop_front();
            if live.is_some() {
                self.remove_counted(&flow);
            }
        }
    }

    /// ClientHellos still waiting for a continuation `after_ns` after their
    /// first segment: reported now, without SNI, rather than lost (the
    /// handshake they start may be the one that hangs). Their flows are
    /// closed: a late continuation adds nothing.
    pub fn partial_hellos(&mut self, now_ns: u64, after_ns: u64) -> Vec<(FlowId, u64, Handshake)> {
        let mut out = Vec::new();
        for (flow, e) in self.flows.iter_mut() {
            if now_ns.saturating_sub(e.born_ns) < after_ns {
                continue;
            }
            let State::Pending(asm) = &e.state else {
                continue;
            };
            if let Some(h) = asm.partial_client_hello() {
                e.state = State::Closed {
                    start: asm.start,
                    reported: true,
                };
                self.counters.partial += 1;
                out.push((*flow, e.born_ns, h));
            }
        }
        out
    }

    fn is_expired(&self, e: &Entry, now_ns: u64) -> bool {
        now_ns.saturating_sub(e.born_ns) > self.limits.max_age_ns
    }

    fn expire_flow(&mut self, flow: &FlowId, now_ns: u64) {
        if self
            .flows
            .get(flow)
            .is_some_and(|e| self.is_expired(e, now_ns))
        {
            self.remove_counted(flow);
        }
    }

    fn remove_counted(&mut self, flow: &FlowId) {
        if let Some(e) = self.flows.remove(flow)
            && e.state.is_open()
        {
            self.counters.incomplete += 1;
        }
    }

    fn push_start(&mut self, seg: Segment<'_>, now_ns: u64) -> Option<Handshake> {
        let mut keep = None;
        let mut asm = Assembly::new(seg.seq);
        if let Some(Entry { id, born_ns, state }) = self.flows.remove(&seg.flow) {
            match state {
                State::Closed {
                    start,
                    reported: true,
                } if start == seg.seq => {
                    // A retransmitted hello that was already reported.
                    let state = State::Closed {
                        start,
                        reported: true,
                    };
                    self.flows.insert(seg.flow, Entry { id, born_ns, state });
                    return None;
                }
                State::Pending(old) if old.start == seg.seq => {
                    asm = old;
                    keep = Some((id, born_ns));
                }
                State::Pending(_) => self.counters.incomplete += 1,
                State::Orphans(orphans) => {
                    for o in &orphans {
                        // Orphans were capped at MAX_SEGMENTS on the way in.
                        asm.add(o.seq, &o.data, o.len, o.chunk);
                    }
                    keep = Some((id, born_ns));
                }
                State::Closed { .. } => {}
            }
        }
        self.advance(seg, asm, keep, now_ns)
    }

    fn push_continuation(&mut self, seg: Segment<'_>, now_ns: u64) -> Option<Handshake> {
        let Some(Entry { id, born_ns, state }) = self.flows.remove(&seg.flow) else {
            let orphan = Orphan::from_segment(&seg);
            self.store(seg.flow, State::Orphans(vec![orphan]), None, now_ns);
            return None;
        };
        let keep = Some((id, born_ns));
        match state {
            State::Pending(asm) => self.advance(seg, asm, keep, now_ns),
            State::Orphans(mut orphans) => {
                let held: usize = orphans.iter().map(|o| o.data.len()).sum();
                let orphan = Orphan::from_segment(&seg);
                // Over budget: keep what we have; the gap shows up as incomplete.
                if orphans.len() < MAX_SEGMENTS && held + orphan.data.len() <= MAX_FLOW_BYTES {
                    orphans.push(orphan);
                }
                self.store(seg.flow, State::Orphans(orphans), keep, now_ns);
                None
            }
            closed @ State::Closed { .. } => {
                self.store(seg.flow, closed, keep, now_ns);
                None
            }
        }
    }

    /// Adds `seg` to `asm` and files the flow under its new state.
    fn advance(
        &mut self,
        seg: Segment<'_>,
        mut asm: Assembly,
        keep: Option<(u64, u64)>,
        now_ns: u64,
    ) -> Option<Handshake> {
        let progress = if asm.add(
            seg.seq,
            seg.payload,
            usize::from(seg.payload_len),
            seg.chunk,
        ) {
            asm.evaluate()
        } else {
            Progress::Incomplete
        };
        let start = asm.start;
        let (state, done) = match progress {
            Progress::Waiting => (State::Pending(asm), None),
            Progress::Done(h) => (
                State::Closed {
                    start,
                    reported: true,
                },
                Some(h),
            ),
            failed => {
                self.count_failure(&failed);
                (
                    State::Closed {
                        start,
                        reported: false,
                    },
                    None,
                )
            }
        };
        self.store(seg.flow, state, keep, now_ns);
        done
    }

    fn count_failure(&mut self, p: &Progress) {
        match p {
            Progress::Incomplete => self.counters.incomplete += 1,
            Progress::Malformed => self.counters.malformed += 1,
            Progress::Ignored => self.counters.ignored += 1,
            Progress::Waiting | Progress::Done(_) => {}
        }
    }

    /// Inserts a flow's entry: under its old id when `keep` is given, else as
    /// a new entry, evicting the oldest ones if the table is full.
    fn store(&mut self, flow: FlowId, state: State, keep: Option<(u64, u64)>, now_ns: u64) {
        let (id, born_ns) = match keep {
            Some(k) => k,
            None => {
                self.make_room();
                let id = self.next_id;
                self.next_id += 1;
                self.order.push_back((flow, id));
                self.compact_order();
                (id, now_ns)
            }
        };
        self.flows.insert(flow, Entry { id, born_ns, state });
    }

    fn make_room(&mut self) {
        while self.flows.len() >= self.limits.max_flows.max(1) {
            let Some((flow, id)) = self.order.pop_front() else {
                break;
            };
            if self.flows.get(&flow).is_some_and(|e| e.id == id)
                && let Some(e) = self.flows.remove(&flow)
                && e.state.is_open()
            {
                self.counters.evicted += 1;
            }
        }
    }

    /// Replaced and finished entries leave stale items in `order`; drop them
    /// before the queue outgrows the table.
    fn compact_order(&mut self) {
        if self.order.len() > 2 * self.limits.max_flows.max(1) + 16 {
            let flows = &self.flows;
            self.order
                .retain(|(f, id)| flows.get(f).is_some_and(|e| e.id == *id));
        }
    }
}

impl Orphan {
    fn from_segment(seg: &Segment<'_>) -> Self {
        let keep = seg.payload.len().min(MAX_FLOW_BYTES);
        Self {
            seq: seg.seq,
            data: seg.payload[..keep].to_vec(),
            len: usize::from(seg.payload_len),
            chunk: seg.chunk,
        }
    }
}

/// The bytes of one handshake record placed by offset from its first byte.
#[derive(Debug)]
struct Assembly {
    start: u32,
    buf: Vec<u8>,
    /// Byte ranges captured.
    have: RangeSet,
    /// Byte ranges that were on the wire but past the kernel's capture: no
    /// later segment will bring them.
    lost: RangeSet,
    /// Extent of each distinct segment, to count those a message spans.
    segments: Vec<Range<usize>>,
}

impl Assembly {
    fn new(start: u32) -> Self {
        Self {
            start,
            buf: Vec::new(),
            have: RangeSet::default(),
            lost: RangeSet::default(),
            segments: Vec::new(),
        }
    }

    /// Places a segment, clipped to `[0, MAX_FLOW_BYTES)`. Returns false when
    /// the flow has had more distinct segments than it may.
    fn add(&mut self, seq: u32, captured: &[u8], len: usize, chunk: u8) -> bool {
        // Signed distance modulo 2^32, so that sequence wrap-around works and a
        // segment just before `start` clips instead of landing 4 GiB later.
        let off = i64::from(seq.wrapping_sub(self.start) as i32);
        let clip = |x: i64| x.clamp(0, MAX_FLOW_BYTES as i64) as usize;
        let captured_end = off + captured.len() as i64;
        let wire_end = off + len as i64;

        let extent = clip(off)..clip(wire_end);
        if extent.is_empty() {
            return true;
        }
        // Later pieces of one TCP segment are not segments of their own.
        if chunk == 0 && !self.segments.contains(&extent) {
            if self.segments.len() >= MAX_SEGMENTS {
                return false;
            }
            self.segments.push(extent);
        }

        let got = clip(off)..clip(captured_end);
        let from = (got.start as i64 - off) as usize;
        if let Some(bytes) = captured.get(from..from + got.len())
            && !got.is_empty()
        {
            if self.buf.len() < got.end {
                self.buf.resize(got.end, 0);
            }
            self.buf[got.clone()].copy_from_slice(bytes);
            self.have.insert(got);
        }
        self.lost.insert(clip(captured_end)..clip(wire_end));
        true
    }

    /// Captured bytes from offset 0 up to the first gap.
    fn prefix(&self) -> &[u8] {
        &self.buf[..self.have.prefix_end()]
    }

    /// Distinct segments holding any of the first `end` bytes.
    fn segments_before(&self, end: usize) -> u32 {
        self.segments.iter().filter(|r| r.start < end).count() as u32
    }

    /// Waiting for the first `needed` bytes, unless the next missing byte was
    /// never captured.
    fn wait_for(&self, needed: usize) -> Progress {
        let end = self.have.prefix_end();
        if end < needed && self.lost.contains(end) {
            Progress::Incomplete
        } else {
            Progress::Waiting
        }
    }

    /// The start of a ClientHello, enough to say what it is: record and
    /// handshake headers and the body's version.
    fn partial_client_hello(&self) -> Option<Handshake> {
        let bytes = self.prefix();
        let record = parse_record_header(bytes.get(..RECORD_HEADER_LEN)?)?;
        let hs = bytes.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN + 2)?;
        (TlsHandshakeType(hs[0]) == TlsHandshakeType::ClientHello).then(|| Handshake::ClientHello {
            record_version: record.version.0,
            version: u16::from_be_bytes([hs[4], hs[5]]),
            sni: None,
            segments: self.segments.len() as u32,
        })
    }

    fn evaluate(&self) -> Progress {
        let bytes = self.prefix();
        let Some(header) = bytes.get(..RECORD_HEADER_LEN) else {
            return self.wait_for(RECORD_HEADER_LEN);
        };
        let Some(record) = parse_record_header(header) else {
            return Progress::Malformed;
        };
        let hs_end = RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN;
        let Some(hs) = bytes.get(RECORD_HEADER_LEN..hs_end) else {
            return self.wait_for(hs_end);
        };
        // The 4-byte handshake header only tells how much to wait for; the
        // message itself goes to tls-parser.
        let msg_type = TlsHandshakeType(hs[0]);
        if msg_type != TlsHandshakeType::ClientHello && msg_type != TlsHandshakeType::ServerHello {
            return Progress::Ignored;
        }
        let msg_len = HANDSHAKE_HEADER_LEN + u32::from_be_bytes([0, hs[1], hs[2], hs[3]]) as usize;
        if msg_len > MAX_HELLO_LEN {
            return Progress::Malformed;
        }
        let needed = RECORD_HEADER_LEN + msg_len;
        // A hello spread over several records, or longer than the kernel
        // follows, can't be completed from what is captured.
        if msg_len > usize::from(record.len) || needed > MAX_FLOW_BYTES {
            return Progress::Incomplete;
        }
        match bytes.get(RECORD_HEADER_LEN..needed) {
            Some(msg) => parse_hello(msg, record.version.0, self.segments_before(needed)),
            None => self.wait_for(needed),
        }
    }
}

/// A handshake record header with a believable version and length.
fn parse_record_header(bytes: &[u8]) -> Option<TlsRecordHeader> {
    let (_, h) = parse_tls_record_header(bytes).ok()?;
    let plausible = h.record_type == TlsRecordType::Handshake
        && is_tls_version(h.version.0)
        && (1..=MAX_RECORD_LEN).contains(&h.len);
    plausible.then_some(h)
}

/// SSL 3.0 to TLS 1.3 all have major version 3.
fn is_tls_version(v: u16) -> bool {
    v >> 8 == 3
}

fn parse_hello(msg: &[u8], record_version: u16, segments: u32) -> Progress {
    let Ok((_, TlsMessage::Handshake(hs))) = parse_tls_message_handshake(msg) else {
        return Progress::Malformed;
    };
    match hs {
        TlsMessageHandshake::ClientHello(ch) if is_tls_version(ch.version.0) => {
            Progress::Done(Handshake::ClientHello {
                record_version,
                version: ch.version.0,
                sni: ch.ext.and_then(server_name),
                segments,
            })
        }
        TlsMessageHandshake::ServerHello(sh) if is_tls_version(sh.version.0) => {
            Progress::Done(Handshake::ServerHello {
                record_version,
                version: sh.version.0,
                selected_version: sh.ext.and_then(selected_version),
            })
        }
        TlsMessageHandshake::ClientHello(_) | TlsMessageHandshake::ServerHello(_) => {
            Progress::Malformed
        }
        // TLS 1.3 draft ServerHellos and the like.
        _ => Progress::Ignored,
    }
}

/// Calls `f` with each extension's type and body until it returns Some.
/// Walking them raw (rather than with tls-parser's typed extension list) means
/// one extension tls-parser finds odd does not hide the ones after it.
fn find_extension<T>(mut ext: &[u8], mut f: impl FnMut(u16, &[u8]) -> Option<T>) -> Option<T> {
    while let Ok((rest, TlsExtension::Unknown(kind, body))) = parse_tls_extension_unknown(ext) {
        if let Some(found) = f(kind.0, body) {
            return Some(found);
        }
        ext = rest;
    }
    None
}

/// First non-empty `host_name` of the server_name extension.
fn server_name(ext: &[u8]) -> Option<String> {
    find_extension(ext, |kind, body| {
        if kind != TlsExtensionType::ServerName.0 {
            return None;
        }
        let Ok((_, TlsExtension::SNI(names))) = parse_tls_extension_sni_content(body) else {
            return None;
        };
        names
            .into_iter()
            .find(|(t, name)| *t == SNIType::HostName && !name.is_empty())
            .map(|(_, name)| String::from_utf8_lossy(name).into_owned())
    })
}

/// A ServerHello's supported_versions holds exactly the version chosen.
fn selected_version(ext: &[u8]) -> Option<u16> {
    find_extension(ext, |kind, body| {
        if kind != TlsExtensionType::SupportedVersions.0 {
            return None;
        }
        <[u8; 2]>::try_from(body).ok().map(u16::from_be_bytes)
    })
}

/// Sorted, disjoint, non-adjacent ranges; small (one insert per segment).
#[derive(Debug, Default)]
struct RangeSet(Vec<Range<usize>>);

impl RangeSet {
    fn insert(&mut self, r: Range<usize>) {
        if r.is_empty() {
            return;
        }
        self.0.push(r);
        self.0.sort_unstable_by_key(|x| x.start);
        let mut merged: Vec<Range<usize>> = Vec::with_capacity(self.0.len());
        for x in self.0.drain(..) {
            match merged.last_mut() {
                Some(last) if x.start <= last.end => last.end = last.end.max(x.end),
                _ => merged.push(x),
            }
        }
        self.0 = merged;
    }

    fn contains(&self, pos: usize) -> bool {
        self.0.iter().any(|r| r.contains(&pos))
    }

    /// End of the range starting at 0, or 0.
    fn prefix_end(&self) -> usize {
        match self.0.first() {
            Some(r) if r.start == 0 => r.end,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_common::TLS_CAPTURE;

    /// ClientHello from `openssl s_client -connect 127.0.0.1:18443
    /// -servername example.test` (OpenSSL 3.0) against a local `s_server`,
    /// captured on `lo` with tcpdump: one 318-byte segment.
    const OPENSSL_CLIENT_HELLO: &str = include_str!("tls_fixtures/client_hello_openssl3.hex");
    /// The server's answer from the same capture: one 761-byte segment holding
    /// the TLS 1.3 ServerHello, ChangeCipherSpec and encrypted records.
    const OPENSSL_SERVER_HELLO: &str = include_str!("tls_fixtures/server_hello_openssl3.hex");

    fn unhex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    fn flow(port: u16) -> FlowId {
        FlowId {
            src: SocketAddr::from(([10, 0, 0, 1], port)),
            dst: SocketAddr::from(([10, 0, 0, 2], 6443)),
        }
    }

    /// A segment carrying `wire`, captured as the kernel does: the first
    /// `TLS_CAPTURE` bytes.
    fn seg(flow: FlowId, seq: u32, start: bool, wire: &[u8]) -> Segment<'_> {
        Segment {
            flow,
            seq,
            start,
            payload: &wire[..wire.len().min(TLS_CAPTURE)],
            payload_len: wire.len() as u16,
            chunk: 0,
        }
    }

    fn handshake_record(msg_type: u8, body: &[u8]) -> Vec<u8> {
        let len = (body.len() as u32).to_be_bytes();
        let mut hs = vec![msg_type, len[1], len[2], len[3]];
        hs.extend_from_slice(body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    fn extension(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut e = kind.to_be_bytes().to_vec();
        e.extend_from_slice(&(body.len() as u16).to_be_bytes());
        e.extend_from_slice(body);
        e
    }

    /// A minimal valid ClientHello record: one cipher suite, null
    /// compression, optional SNI, supported_versions, and `padding` bytes of
    /// the padding extension to make it as long as a test needs.
    fn client_hello(sni: Option<&str>, padding: usize) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(name) = sni {
            let mut entry = vec![0];
            entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
            entry.extend_from_slice(name.as_bytes());
            let mut list = (entry.len() as u16).to_be_bytes().to_vec();
            list.extend(entry);
            ext.extend(extension(0, &list));
        }
        ext.extend(extension(43, &[4, 0x03, 0x04, 0x03, 0x03]));
        if padding > 0 {
            ext.extend(extension(21, &vec![0; padding]));
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[0x5a; 32]);
        body.push(0); // no session id
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]);
        body.extend_from_slice(&[0x01, 0x00]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend(ext);
        handshake_record(1, &body)
    }

    fn expect_client_hello(h: Option<Handshake>, sni: Option<&str>, segments: u32) {
        match h {
            Some(Handshake::ClientHello {
                record_version,
                version,
                sni: got,
                segments: n,
            }) => {
                assert_eq!(record_version, 0x0301);
                assert_eq!(version, 0x0303);
                assert_eq!(got.as_deref(), sni);
                assert_eq!(n, segments);
            }
            other => panic!("expected a ClientHello, got {other:?}"),
        }
    }

    /// Feeds `parts` (offsets into `wire`) in the given order; returns what
    /// the last push gave and asserts the earlier ones gave nothing.
    fn feed(
        r: &mut Reassembler,
        f: FlowId,
        base: u32,
        wire: &[u8],
        parts: &[Range<usize>],
    ) -> Option<Handshake> {
        let mut last = None;
        for (i, p) in parts.iter().enumerate() {
            assert!(last.is_none(), "completed early, before part {i}");
            let s = seg(
                f,
                base.wrapping_add(p.start as u32),
                p.start == 0,
                &wire[p.clone()],
            );
            last = r.push(s, 1_000);
        }
        last
    }

    /// Xorshift64: deterministic noise without a rand dependency.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn real_client_hello_in_one_segment() {
        let wire = unhex(OPENSSL_CLIENT_HELLO);
        assert_eq!(wire.len(), 318);
        let mut r = Reassembler::default();
        let h = r.push(seg(flow(40000), 7, true, &wire), 0);
        expect_client_hello(h, Some("example.test"), 1);
        assert_eq!(r.counters(), TlsCounters::default());
    }

    #[test]
    fn real_server_hello_past_the_capture() {
        // 761 bytes on the wire, 512 captured: the ServerHello is in front.
        let wire = unhex(OPENSSL_SERVER_HELLO);
        assert_eq!(wire.len(), 761);
        let mut r = Reassembler::default();
        let h = r.push(seg(flow(6443), 1, true, &wire), 0);
        assert_eq!(
            h,
            Some(Handshake::ServerHello {
                record_version: 0x0303,
                version: 0x0303,
                selected_version: Some(0x0304),
            })
        );
        assert_eq!(r.counters(), TlsCounters::default());
    }

    #[test]
    fn a_hello_whose_continuation_never_comes_is_reported_without_sni() {
        let wire = client_hello(Some("kubernetes.default"), 1200);
        let mut r = Reassembler::default();
        let first = &wire[..400];
        let mut s = seg(flow(1), 1000, true, first);
        s.payload_len = 400;
        assert_eq!(r.push(s, 0), None, "waiting for the rest");
        assert!(
            r.partial_hellos(500_000_000, 1_000_000_000).is_empty(),
            "too early"
        );
        let got = r.partial_hellos(1_100_000_000, 1_000_000_000);
        assert_eq!(got.len(), 1);
        assert!(matches!(
            &got[0].2,
            Handshake::ClientHello {
                sni: None,
                version: 0x0303,
                ..
            }
        ));
        assert_eq!(r.counters().partial, 1);
        // Reported once; a late continuation adds nothing.
        assert!(r.partial_hellos(2_000_000_000, 1_000_000_000).is_empty());
        assert_eq!(
            r.push(seg(flow(1), 1400, false, &wire[400..]), 2_000_000_000),
            None
        );
    }

    #[test]
    fn split_in_two_in_order() {
        let wire = unhex(OPENSSL_CLIENT_HELLO);
        let mut r = Reassembler::default();
        let h = feed(&mut r, flow(1), 1000, &wire, &[0..100, 100..318]);
        expect_client_hello(h, Some("example.test"), 2);
    }

    #[test]
    fn split_in_three_every_order() {
        let wire = unhex(OPENSSL_CLIENT_HELLO);
        let parts = [0..3, 3..150, 150..318];
        let orders = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        for order in orders {
            let mut r = Reassembler::default();
            let ordered: Vec<_> = order.iter().map(|&i| parts[i].clone()).collect();
            let h = feed(&mut r, flow(2), 5, &wire, &ordered);
            expect_client_hello(h, Some("example.test"), 3);
            assert_eq!(r.counters(), TlsCounters::default(), "order {order:?}");
        }
    }

    #[test]
    fn sequence_numbers_wrap() {
        let wire = client_hello(Some("wrap.example"), 900);
        let parts = [0..400, 800..wire.len(), 400..800];
        let mut r = Reassembler::default();
        let h = feed(&mut r, flow(3), u32::MAX - 500, &wire, &parts);
        expect_client_hello(h, Some("wrap.example"), 3);
    }

    #[test]
    fn overlapping_and_duplicate_segments() {
        let wire = client_hello(Some("overlap.example"), 1200);
        let parts = [0..500, 0..500, 450..950, 300..700, 900..wire.len()];
        let mut r = Reassembler::default();
        let h = feed(&mut r, flow(4), 77, &wire, &parts);
        // The repeated first segment is one segment; the others each count.
        expect_client_hello(h, Some("overlap.example"), 4);
    }

    #[test]
    fn continuation_before_its_start() {
        let wire = unhex(OPENSSL_CLIENT_HELLO);
        let mut r = Reassembler::default();
        assert!(r.push(seg(flow(5), 300, false, &wire[200..]), 0).is_none());
        let h = r.push(seg(flow(5), 100, true, &wire[..200]), 0);
        expect_client_hello(h, Some("example.test"), 2);
    }

    #[test]
    fn gap_past_the_capture_is_incomplete() {
        // One 1300-byte segment, 512 captured: the rest of the ClientHello
        // is gone, and a later segment can't bring it back.
        let wire = client_hello(Some("big.example"), 1200);
        assert!(wire.len() > TLS_CAPTURE && wire.len() < 1448);
        let mut r = Reassembler::default();
        assert!(r.push(seg(flow(6), 1, true, &wire), 0).is_none());
        assert_eq!(r.counters().incomplete, 1);
        let tail = [0u8; 64];
        assert!(
            r.push(seg(flow(6), 1 + wire.len() as u32, false, &tail), 0)
                .is_none()
        );
        assert_eq!(r.counters().incomplete, 1);
    }

    #[test]
    fn missing_segment_never_completes_and_expires() {
        let wire = unhex(OPENSSL_CLIENT_HELLO);
        let mut r = Reassembler::default();
        assert!(feed(&mut r, flow(7), 9, &wire, &[0..100, 200..318]).is_none());
        r.expire(1_000 + Limits::default().max_age_ns);
        assert_eq!(r.len(), 1, "not older than max_age yet");
        r.expire(1_001 + Limits::default().max_age_ns);
        assert!(r.is_empty());
        assert_eq!(r.counters().incomplete, 1);
    }

    #[test]
    fn every_truncation_stays_silent() {
        let wire = unhex(OPENSSL_CLIENT_HELLO);
        for cut in 1..wire.len() {
            let mut r = Reassembler::default();
            assert!(
                r.push(seg(flow(8), 0, true, &wire[..cut]), 0).is_none(),
                "cut {cut}"
            );
            r.expire(u64::MAX);
            assert_eq!(r.counters().incomplete, 1, "cut {cut}");
        }
    }

    #[test]
    fn sni_absent() {
        let wire = client_hello(None, 0);
        let mut r = Reassembler::default();
        expect_client_hello(r.push(seg(flow(9), 0, true, &wire), 0), None, 1);
    }

    #[test]
    fn retransmitted_hello_is_reported_once() {
        let wire = unhex(OPENSSL_CLIENT_HELLO);
        let mut r = Reassembler::default();
        assert!(r.push(seg(flow(10), 5, true, &wire), 0).is_some());
        assert!(r.push(seg(flow(10), 5, true, &wire), 1).is_none());
        // A second hello on the flow (after a HelloRetryRequest) is new.
        let again = r.push(seg(flow(10), 5 + wire.len() as u32, true, &wire), 2);
        expect_client_hello(again, Some("example.test"), 1);
        assert_eq!(r.counters(), TlsCounters::default());
    }

    #[test]
    fn not_a_handshake_record() {
        let hello = unhex(OPENSSL_CLIENT_HELLO);
        let mut cases: Vec<Vec<u8>> = Vec::new();
        let mut wrong_type = hello.clone();
        wrong_type[0] = 0x17;
        cases.push(wrong_type);
        let mut zero_len = hello.clone();
        zero_len[3..5].copy_from_slice(&[0, 0]);
        cases.push(zero_len);
        let mut huge_len = hello.clone();
        huge_len[3..5].copy_from_slice(&(MAX_RECORD_LEN + 1).to_be_bytes());
        cases.push(huge_len);
        let mut not_tls = hello.clone();
        not_tls[1] = 0x02;
        cases.push(not_tls);
        for (i, wire) in cases.iter().enumerate() {
            let mut r = Reassembler::default();
            assert!(
                r.push(seg(flow(11), 0, true, wire), 0).is_none(),
                "case {i}"
            );
            assert_eq!(r.counters().malformed, 1, "case {i}");
        }
    }

    #[test]
    fn other_handshake_messages_are_ignored() {
        let certificate = handshake_record(11, &[0, 0, 0]);
        let mut r = Reassembler::default();
        assert!(r.push(seg(flow(12), 0, true, &certificate), 0).is_none());
        assert_eq!(r.counters().ignored, 1);
        // Its later segments are absorbed, not held as orphans.
        assert!(r.push(seg(flow(12), 100, false, &[1; 50]), 0).is_none());
        r.expire(u64::MAX);
        assert_eq!(r.counters().incomplete, 0);
    }

    #[test]
    fn hello_longer_than_its_record() {
        let mut wire = unhex(OPENSSL_CLIENT_HELLO);
        let short = (wire.len() - 5 - 10) as u16;
        wire[3..5].copy_from_slice(&short.to_be_bytes());
        let mut r = Reassembler::default();
        assert!(r.push(seg(flow(13), 0, true, &wire), 0).is_none());
        assert_eq!(r.counters().incomplete, 1);
    }

    #[test]
    fn ciphertext_in_a_handshake_record_is_malformed() {
        // A TLS 1.2 encrypted Finished whose first byte happens to be 1.
        let mut wire = vec![0x16, 0x03, 0x03, 0x00, 0x28, 0x01, 0xab, 0xcd, 0xef];
        wire.extend_from_slice(&[0x77; 36]);
        let mut r = Reassembler::default();
        assert!(r.push(seg(flow(17), 0, true, &wire), 0).is_none());
        assert_eq!(r.counters().malformed, 1);
        assert_eq!(r.counters().incomplete, 0);
    }

    #[test]
    fn corrupt_hello_body_is_malformed() {
        let mut wire = unhex(OPENSSL_CLIENT_HELLO);
        wire[5 + 4 + 2 + 32] = 33; // session id longer than 32
        let mut r = Reassembler::default();
        assert!(r.push(seg(flow(14), 0, true, &wire), 0).is_none());
        assert_eq!(r.counters().malformed, 1);
    }

    #[test]
    fn captured_longer_than_payload_is_malformed() {
        let mut r = Reassembler::default();
        let s = Segment {
            flow: flow(15),
            seq: 0,
            start: true,
            payload: &[0x16, 3, 1, 0, 10],
            payload_len: 3,
            chunk: 0,
        };
        assert!(r.push(s, 0).is_none());
        assert_eq!(r.counters().malformed, 1);
        assert!(r.is_empty());
    }

    #[test]
    fn random_bytes_never_make_a_handshake() {
        let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
        let mut r = Reassembler::new(Limits {
            max_flows: 64,
            max_age_ns: 1_000,
        });
        for i in 0..20_000u64 {
            let len = (noise.next() % 1500) as usize;
            let mut wire = noise.bytes(len);
            // Half of them look like a handshake record to get past the
            // first checks.
            if i.is_multiple_of(2) && wire.len() >= 6 {
                wire[..3].copy_from_slice(&[0x16, 0x03, 0x01]);
                wire[5] = 1 + (noise.next() % 2) as u8;
            }
            let s = seg(
                flow((noise.next() % 100) as u16),
                noise.next() as u32,
                noise.next().is_multiple_of(3),
                &wire,
            );
            assert_eq!(r.push(s, i), None, "iteration {i}");
            assert!(r.len() <= 64);
        }
        let c = r.counters();
        assert!(c.malformed > 0 && c.incomplete + c.evicted > 0, "{c:?}");
    }

    #[test]
    fn long_hello_in_capture_sized_chunks_is_one_segment() {
        // A post-quantum ClientHello (~1.5 KB) in one TCP segment reaches
        // userspace as three kernel records of at most TLS_CAPTURE bytes.
        let wire = client_hello(Some("api.mlkem.test"), 1200);
        assert!(wire.len() > 2 * TLS_CAPTURE && wire.len() < 3 * TLS_CAPTURE);
        let mut r = Reassembler::default();
        let mut got = None;
        for (k, piece) in wire.chunks(TLS_CAPTURE).enumerate() {
            let s = Segment {
                flow: flow(16),
                seq: 1000 + (k * TLS_CAPTURE) as u32,
                start: k == 0,
                payload: piece,
                payload_len: piece.len() as u16,
                chunk: k as u8,
            };
            got = r.push(s, 0).or(got);
        }
        expect_client_hello(got, Some("api.mlkem.test"), 1);
    }

    #[test]
    fn mangled_real_hello_never_panics() {
        let wire = unhex(OPENSSL_CLIENT_HELLO);
        let mut noise = Noise(42);
        let mut r = Reassembler::default();
        for i in 0..5_000u64 {
            let mut w = wire.clone();
            for _ in 0..1 + noise.next() % 4 {
                let at = (noise.next() as usize) % w.len();
                w[at] = noise.next() as u8;
            }
            let cut = 1 + (noise.next() as usize) % w.len();
            let split = (noise.next() as usize) % cut;
            let f = flow(i as u16);
            let _ = r.push(seg(f, 0, true, &w[..split.max(1)]), i);
            let _ = r.push(seg(f, split as u32, false, &w[split..cut]), i);
        }
    }

    #[test]
    fn table_stays_bounded() {
        let wire = unhex(OPENSSL_CLIENT_HELLO);
        let limits = Limits {
            max_flows: 4096,
            max_age_ns: u64::MAX,
        };
        let mut r = Reassembler::new(limits);
        let mut flows = 0u64;
        for a in 0..40u8 {
            for port in 0..250u16 {
                let f = FlowId {
                    src: SocketAddr::from(([10, 1, 0, a], port)),
                    dst: SocketAddr::from(([10, 0, 0, 2], 443)),
                };
                // Only the first half: each flow stays pending.
                assert!(r.push(seg(f, 0, true, &wire[..150]), flows).is_none());
                flows += 1;
                assert!(r.len() <= limits.max_flows);
            }
        }
        assert_eq!(r.len(), limits.max_flows);
        assert_eq!(r.counters().evicted, flows - limits.max_flows as u64);
        assert!(r.order.len() <= 2 * limits.max_flows + 16);
        // The newest flows are the ones kept: finishing one still works.
        let last = FlowId {
            src: SocketAddr::from(([10, 1, 0, 39], 249)),
            dst: SocketAddr::from(([10, 0, 0, 2], 443)),
        };
        expect_client_hello(
            r.push(seg(last, 150, false, &wire[150..]), flows),
            Some("example.test"),
            2,
        );
    }

    #[test]
    fn per_flow_bytes_are_bounded() {
        let mut r = Reassembler::default();
        let f = flow(16);
        let header = [0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x3f, 0xfc];
        assert!(r.push(seg(f, 0, true, &header), 0).is_none());
        for i in 0..200u32 {
            let _ = r.push(seg(f, 9 + i * 500, false, &[0; 500]), 0);
        }
        if let Some(Entry {
            state: State::Pending(a),
            ..
        }) = r.flows.get(&f)
        {
            assert!(a.buf.len() <= MAX_FLOW_BYTES);
            assert!(a.segments.len() <= MAX_SEGMENTS);
        }
        // A 16 KiB hello is longer than the kernel follows.
        assert_eq!(r.counters().incomplete, 1);
    }
}
