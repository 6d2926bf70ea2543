//! Fuzz harnesses for netprobe's parsers of untrusted bytes.
//!
//! One function per cargo-fuzz target (`fuzz_targets/NAME.rs` only calls
//! it), taking the raw fuzz input and driving netprobe's public entry point
//! the way netprobe itself does. Besides "does not panic", each checks a few
//! invariants and returns an [`Outcome`], so that
//! `probe-user/tests/fuzz_corpus.rs` can replay `fuzz/corpus/` through the
//! very same code on stable and check that the seeds reach deep.
//!
//! That test includes this file as a module (`#[path]`), so it may only use
//! crates probe-user itself depends on, and no crate-level attributes.
//!
//! Input formats (the seed builders at the bottom write them):
//! - `decode_record`: ring-buffer records, each prefixed by its length as a
//!   little-endian u16.
//! - `tls_reassembler`: a sequence of segments, see [`tls_segments`].
//! - `arp_ndp_parse`: one mode byte, then an Ethernet frame.
//! - `netlink_conntrack`, `netlink_route`: one netlink datagram (messages
//!   back to back, as `recv` returns them).
//! - `replay_jsonl`: a `netprobe trace --json` stream.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, ParseableParametrized as _};
use netlink_packet_netfilter::{
    NetfilterMessage, NetfilterMessageInner, conntrack::ConntrackMessage,
};
use netlink_packet_route::RouteNetlinkMessage;
use probe_common::{PACKET_CAPTURE, TLS_CAPTURE};
use probe_user::{
    correlate::Config,
    kernel::links::Link,
    model::event::{Event, EventBody},
    pipeline::decode::{self, Record},
    pipeline::enrich::{Clock, Enricher},
    pipeline::tls::{FlowId, Handshake, Limits, Reassembler, Segment},
    pipeline::{Fed, Pipeline},
    replay::replay,
    state::{conntrack, neighbours, probe, routes},
};

/// Every target, as named in Cargo.toml and under `corpus/`.
pub const TARGETS: &[&str] = &[
    "decode_record",
    "tls_reassembler",
    "arp_ndp_parse",
    "netlink_conntrack",
    "netlink_route",
    "replay_jsonl",
    "btf_parse",
];

/// What one input produced: how many units (records, segments, messages,
/// lines) were accepted or refused, and a short note per thing found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub accepted: usize,
    pub rejected: usize,
    pub found: Vec<String>,
}

/// Runs `target`'s harness on `data`; None for an unknown target name.
pub fn run(target: &str, data: &[u8]) -> Option<Outcome> {
    Some(match target {
        "decode_record" => decode_record(data),
        "tls_reassembler" => tls_reassembler(data),
        "arp_ndp_parse" => arp_ndp_parse(data),
        "netlink_conntrack" => netlink_conntrack(data),
        "netlink_route" => netlink_route(data),
        "replay_jsonl" => replay_jsonl(data),
        "btf_parse" => btf_parse(data),
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// decode_record: ring-buffer bytes -> Record -> Pipeline (dedup, enrich, TLS)
// ---------------------------------------------------------------------------

/// Splits length-prefixed records; a length past the end takes the rest.
pub fn split_records(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([data[0], data[1]]));
        let rest = &data[2..];
        let take = len.min(rest.len());
        out.push(&rest[..take]);
        data = &rest[take..];
    }
    out
}

/// The bytes `decode` accepted must be exactly the record it returned.
fn check_decoded(bytes: &[u8], record: &Record) {
    let raw = match record {
        Record::Retransmit(r) | Record::Reset(r) | Record::SynackRetransmit(r) => {
            decode::to_bytes(r)
        }
        Record::Neighbour(r) => decode::to_bytes(r),
        Record::Tls(r) => decode::to_bytes(&**r),
        Record::Arp(r) => decode::to_bytes(r),
        Record::Packet(r) => decode::to_bytes(&**r),
        Record::Drop(r) => decode::to_bytes(r),
        Record::IcmpSent(r) => decode::to_bytes(r),
        Record::ResetSent(r) => decode::to_bytes(r),
    };
    assert_eq!(
        usize::from(record.header().size),
        raw.len(),
        "header size differs from the record type's"
    );
    assert!(bytes.len() >= raw.len(), "decoded more bytes than given");
    assert_eq!(&bytes[..raw.len()], &raw[..], "decoded record differs");
}

/// An event netprobe prints must read back (that is what `replay` does)
/// and print the same again; its text form must carry no control codes.
fn check_event(event: &Event) {
    let json = serde_json::to_string(event).expect("an event serialises");
    let back: Event = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("netprobe cannot read back its own line {json}: {e}"));
    let again = serde_json::to_string(&back).expect("an event serialises");
    assert_eq!(json, again, "event changed through JSON");
    // Diagnoses are the one multi-line text form; nothing carries escapes.
    let text = event.to_string();
    let newline_ok = matches!(event.body, EventBody::Diagnosis(_));
    assert!(
        !text
            .chars()
            .any(|c| c.is_control() && !(newline_ok && c == '\n')),
        "text with a control character: {text:?}"
    );
}

fn event_name(body: &EventBody) -> String {
    match body {
        EventBody::Start(_) => "start".into(),
        EventBody::Retransmit(_) => "retransmit".into(),
        EventBody::Reset(_) => "reset".into(),
        EventBody::SynackRetransmit(_) => "synack_retransmit".into(),
        EventBody::TlsClientHello(ch) => {
            format!("tls_client_hello sni={}", ch.sni.as_deref().unwrap_or("-"))
        }
        EventBody::TlsServerHello(_) => "tls_server_hello".into(),
        EventBody::Neighbour(_) => "neighbour".into(),
        EventBody::Arp(a) => format!("arp {}", a.op),
        EventBody::Stats(_) => "stats".into(),
        EventBody::Snapshot(_) => "snapshot".into(),
        EventBody::Diagnosis(d) => format!("diagnosis {}", d.cause),
        EventBody::TlsHop(h) => format!("tls_hop {}", h.direction),
        EventBody::Recovered(r) => format!("recovered {}", r.cause),
        EventBody::Drop(d) => format!("drop {}", d.reason),
        EventBody::TlsClientFlight(f) => format!("tls_client_flight {}", f.record),
        EventBody::IcmpSent(i) => format!("icmp_sent {}", i.message),
        EventBody::ResetSent(r) => format!("reset_sent {}", r.reason),
    }
}

pub fn decode_record(data: &[u8]) -> Outcome {
    let mut out = Outcome::default();
    // The whole input as one record, too.
    if let Ok(r) = decode::decode(data) {
        check_decoded(data, &r);
    }
    let names: HashMap<u32, String> =
        HashMap::from([(1, "lo".to_string()), (2, "eth0".to_string())]);
    let mut pipeline = Pipeline::new(Enricher::new(Clock::new(0), Some(4_026_531_840)));
    let records = split_records(data);
    for bytes in &records {
        let ts = match decode::decode(bytes) {
            Ok(r) => {
                check_decoded(bytes, &r);
                out.accepted += 1;
                Some(r.header().ts_ns)
            }
            Err(_) => {
                out.rejected += 1;
                None
            }
        };
        match pipeline.feed(bytes, &names) {
            Fed::Event(event) => {
                check_event(&event);
                out.found.push(event_name(&event.body));
            }
            Fed::Packet(p) => {
                assert!(p.data.len() <= PACKET_CAPTURE);
                out.found.push(format!("packet {} bytes", p.data.len()));
            }
            Fed::Nothing => {}
        }
        if let Some(ts) = ts {
            pipeline.expire(ts);
        }
    }
    assert_eq!(
        (pipeline.records + pipeline.malformed) as usize,
        records.len(),
        "the pipeline lost count of records"
    );
    assert_eq!(pipeline.malformed as usize, out.rejected);
    out
}

// ---------------------------------------------------------------------------
// tls_reassembler: a sequence of segments -> Reassembler::push
// ---------------------------------------------------------------------------

/// Flows the segments are spread over; one more than the reassembler may
/// hold, so eviction is exercised too.
const TLS_FLOWS: u8 = 4;
const TLS_LIMITS: Limits = Limits {
    max_flows: 3,
    max_age_ns: 10_000_000_000,
};
/// Size of a segment header in the fuzz input.
pub const SEGMENT_HEADER: usize = 11;

/// One segment as the fuzz input describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuzzSegment {
    /// 0..4: which flow.
    pub flow: u8,
    pub start: bool,
    /// Run `Reassembler::expire` before this segment.
    pub expire: bool,
    /// 0..16.
    pub chunk: u8,
    pub seq: u32,
    pub payload_len: u16,
    /// Milliseconds since the previous segment.
    pub delay_ms: u16,
    pub captured: Vec<u8>,
}

/// Segment encoding: `flags` (bit 0 start, bit 1 expire first, bits 2-3
/// flow, bits 4-7 chunk), `seq` u32 LE, `payload_len` u16 LE, captured
/// length u16 LE (cut to what is left), delay in ms u16 LE, then the
/// captured bytes. A trailing partial header is ignored.
pub fn tls_segments(mut data: &[u8]) -> Vec<FuzzSegment> {
    let mut out = Vec::new();
    while data.len() >= SEGMENT_HEADER {
        let h = &data[..SEGMENT_HEADER];
        let flags = h[0];
        let seq = u32::from_le_bytes([h[1], h[2], h[3], h[4]]);
        let payload_len = u16::from_le_bytes([h[5], h[6]]);
        let captured_len = usize::from(u16::from_le_bytes([h[7], h[8]]));
        let delay_ms = u16::from_le_bytes([h[9], h[10]]);
        let rest = &data[SEGMENT_HEADER..];
        let take = captured_len.min(rest.len());
        out.push(FuzzSegment {
            flow: (flags >> 2) & 0x3,
            start: flags & 1 != 0,
            expire: flags & 2 != 0,
            chunk: flags >> 4,
            seq,
            payload_len,
            delay_ms,
            captured: rest[..take].to_vec(),
        });
        data = &rest[take..];
    }
    out
}

/// Inverse of [`tls_segments`], for seeds.
pub fn encode_segments(segments: &[FuzzSegment]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in segments {
        let flags = u8::from(s.start)
            | u8::from(s.expire) << 1
            | (s.flow & 0x3) << 2
            | (s.chunk & 0xf) << 4;
        out.push(flags);
        out.extend_from_slice(&s.seq.to_le_bytes());
        out.extend_from_slice(&s.payload_len.to_le_bytes());
        out.extend_from_slice(&(s.captured.len() as u16).to_le_bytes());
        out.extend_from_slice(&s.delay_ms.to_le_bytes());
        out.extend_from_slice(&s.captured);
    }
    out
}

fn tls_flow(i: u8) -> FlowId {
    FlowId {
        src: SocketAddr::from(([10, 0, 0, 1], 40_000 + u16::from(i))),
        dst: SocketAddr::from(([10, 0, 0, 2], 6443)),
    }
}

pub fn tls_reassembler(data: &[u8]) -> Outcome {
    let mut out = Outcome::default();
    let mut r = Reassembler::new(TLS_LIMITS);
    let mut now_ns: u64 = 1_000_000_000;
    let mut before = r.counters();
    for s in tls_segments(data) {
        now_ns += u64::from(s.delay_ms) * 1_000_000;
        if s.expire {
            r.expire(now_ns);
        }
        // The kernel never captures more than TLS_CAPTURE bytes; more is
        // still handed to push, which must refuse it as malformed.
        let seg = Segment {
            flow: tls_flow(s.flow % TLS_FLOWS),
            seq: s.seq,
            start: s.start,
            payload: &s.captured,
            payload_len: s.payload_len,
            chunk: s.chunk,
        };
        match r.push(seg, now_ns) {
            Some(Handshake::ClientHello {
                record_version,
                version,
                sni,
                segments,
            }) => {
                assert_eq!(record_version >> 8, 3, "record version {record_version:#x}");
                assert_eq!(version >> 8, 3, "hello version {version:#x}");
                assert!(sni.as_ref().is_none_or(|s| !s.is_empty()), "empty SNI");
                out.found.push(format!(
                    "client_hello sni={} segments={segments}",
                    sni.as_deref().unwrap_or("-")
                ));
            }
            Some(Handshake::ServerHello {
                record_version,
                version,
                selected_version,
            }) => {
                assert_eq!(record_version >> 8, 3, "record version {record_version:#x}");
                assert_eq!(version >> 8, 3, "hello version {version:#x}");
                out.found.push(format!(
                    "server_hello selected={}",
                    selected_version.map_or("-".to_string(), |v| format!("{v:#06x}"))
                ));
            }
            None => {}
        }
        out.accepted += 1;
        assert!(
            r.len() <= TLS_LIMITS.max_flows,
            "{} flows held, limit {}",
            r.len(),
            TLS_LIMITS.max_flows
        );
        let c = r.counters();
        assert!(
            c.incomplete >= before.incomplete
                && c.malformed >= before.malformed
                && c.evicted >= before.evicted
                && c.ignored >= before.ignored,
            "a counter went down: {before:?} -> {c:?}"
        );
        before = c;
    }
    r.expire(now_ns.saturating_add(TLS_LIMITS.max_age_ns + 1));
    assert!(r.is_empty(), "entries outlived their age limit");
    let c = r.counters();
    out.rejected = (c.incomplete + c.malformed + c.evicted + c.ignored) as usize;
    out
}

// ---------------------------------------------------------------------------
// arp_ndp_parse: the frames the ARP/NDP probe accepts as answers
// ---------------------------------------------------------------------------

/// Mode byte bits for `arp_ndp_parse`.
pub const MODE_IP_FROM_INPUT: u8 = 1;
pub const MODE_FIX_CHECKSUM: u8 = 2;

const ETH_HLEN: usize = 14;
const IPV6_HLEN: usize = 40;

/// A MAC the probe may report: unicast and not all zero.
fn assert_usable(mac: [u8; 6], frame: &[u8]) {
    assert!(
        mac != [0; 6] && mac[0] & 1 == 0,
        "unusable MAC {mac:02x?} from {frame:02x?}"
    );
}

pub fn arp_ndp_parse(data: &[u8]) -> Outcome {
    let mut out = Outcome::default();
    let Some((&mode, rest)) = data.split_first() else {
        return out;
    };
    let mut frame = rest.to_vec();

    // ARP: the IP asked about is the frame's own sender IP (so the deep
    // path is reachable), or 10.0.0.100.
    let arp_ip = match frame.get(28..32) {
        Some(b) if mode & MODE_IP_FROM_INPUT == 0 => Ipv4Addr::new(b[0], b[1], b[2], b[3]),
        _ => Ipv4Addr::new(10, 0, 0, 100),
    };
    match probe::arp_reply_sender(&frame, arp_ip) {
        Some(mac) => {
            assert_usable(mac, &frame);
            assert_eq!(&frame[22..28], &mac, "not the ARP sender MAC");
            out.accepted += 1;
            out.found.push(format!("arp {arp_ip} at {mac:02x?}"));
        }
        None => out.rejected += 1,
    }

    // NDP: the target in the frame, or fd00::100; optionally with a correct
    // checksum, so mutations get past it to the options.
    let target_at = ETH_HLEN + IPV6_HLEN + 8;
    let nd_ip = match frame.get(target_at..target_at + 16) {
        Some(b) if mode & MODE_IP_FROM_INPUT == 0 => {
            Ipv6Addr::from(<[u8; 16]>::try_from(b).expect("16 bytes"))
        }
        _ => Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100),
    };
    if mode & MODE_FIX_CHECKSUM != 0 {
        fix_icmpv6_checksum(&mut frame);
    }
    match probe::advert_mac(&frame, nd_ip) {
        Some(mac) => {
            assert_usable(mac, &frame);
            out.accepted += 1;
            out.found.push(format!("advert {nd_ip} at {mac:02x?}"));
        }
        None => out.rejected += 1,
    }

    // The checksum itself: a message carrying its checksum sums to zero.
    if let Some(icmp) = frame.get(ETH_HLEN + IPV6_HLEN..)
        && icmp.len() >= 4
    {
        let (src, dst) = ipv6_pair(&frame);
        let mut icmp = icmp.to_vec();
        icmp[2..4].fill(0);
        let sum = probe::icmpv6_checksum(src, dst, &icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(probe::icmpv6_checksum(src, dst, &icmp), 0, "checksum");
    }
    out
}

fn ipv6_pair(frame: &[u8]) -> (Ipv6Addr, Ipv6Addr) {
    let addr = |at: usize| {
        frame.get(at..at + 16).map_or(Ipv6Addr::UNSPECIFIED, |b| {
            Ipv6Addr::from(<[u8; 16]>::try_from(b).expect("16 bytes"))
        })
    };
    (addr(ETH_HLEN + 8), addr(ETH_HLEN + 24))
}

/// Writes the right ICMPv6 checksum into an IPv6 frame (payload length as
/// the IPv6 header says, cut to the frame), if there is room for one.
pub fn fix_icmpv6_checksum(frame: &mut [u8]) {
    let Some(ip6) = frame.get(ETH_HLEN..ETH_HLEN + IPV6_HLEN) else {
        return;
    };
    let payload_len = usize::from(u16::from_be_bytes([ip6[4], ip6[5]]));
    let (src, dst) = ipv6_pair(frame);
    let start = ETH_HLEN + IPV6_HLEN;
    let end = (start + payload_len).min(frame.len());
    let icmp = &mut frame[start..end];
    if icmp.len() < 4 {
        return;
    }
    icmp[2..4].fill(0);
    let sum = probe::icmpv6_checksum(src, dst, icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
}

// ---------------------------------------------------------------------------
// Netlink
// ---------------------------------------------------------------------------

const NLMSG_HDRLEN: usize = 16;
/// NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW: what netprobe parses.
pub const CT_NEW: u16 = 1 << 8;

/// (type, whole message) of each message whose length fits, as
/// `state::conntrack` and netlink-proto walk a datagram.
fn netlink_messages(datagram: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while let Some(rest) = datagram.get(off..) {
        if rest.len() < NLMSG_HDRLEN {
            break;
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            break;
        }
        out.push((u16::from_ne_bytes([rest[4], rest[5]]), &rest[..len]));
        off += (len + 3) & !3;
    }
    out
}

pub fn netlink_conntrack(data: &[u8]) -> Outcome {
    let mut out = Outcome::default();
    for (ty, msg) in netlink_messages(data) {
        if ty != CT_NEW {
            continue;
        }
        let payload = &msg[NLMSG_HDRLEN..];
        let Ok(parsed) = NetfilterMessage::parse_with_param(payload, ty) else {
            out.rejected += 1;
            continue;
        };
        let NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)) = parsed.inner else {
            out.rejected += 1;
            continue;
        };
        match conntrack::entry_of(&attrs) {
            Some(e) => {
                let cmd = e.delete_command();
                assert!(cmd.starts_with("conntrack -D -p "), "{cmd}");
                assert!(!cmd.contains('\n'), "{cmd:?}");
                let json = serde_json::to_string(&e).expect("an entry serialises");
                let back = serde_json::from_str(&json).expect("an entry reads back");
                assert_eq!(e, back);
                out.accepted += 1;
                out.found.push(format!(
                    "conntrack {} {} -> {} dnat={}",
                    probe_user::model::facts::proto_name(e.proto),
                    e.orig_src,
                    e.orig_dst,
                    e.is_dnat()
                ));
            }
            None => out.rejected += 1,
        }
    }
    out
}

pub fn netlink_route(data: &[u8]) -> Outcome {
    let mut out = Outcome::default();
    let names: HashMap<u32, String> = HashMap::from([(1, "lo".to_string())]);
    let mut messages = netlink_messages(data);
    if messages.is_empty() && !data.is_empty() {
        // What rtnetlink's codec would try on a short or lying header.
        messages.push((0, data));
    }
    for (_, bytes) in messages {
        let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) else {
            out.rejected += 1;
            continue;
        };
        out.accepted += 1;
        let NetlinkPayload::InnerMessage(inner) = msg.payload else {
            continue;
        };
        match inner {
            RouteNetlinkMessage::NewLink(m) | RouteNetlinkMessage::DelLink(m) => {
                if let Some(link) = Link::from_message(&m) {
                    out.found.push(format!("link {} {}", link.index, link.name));
                }
            }
            RouteNetlinkMessage::NewNeighbour(m) => {
                if let Some(e) = neighbours::entry_of(&m, &names) {
                    out.found.push(format!(
                        "neighbour {} {} {}",
                        e.ip,
                        e.mac.as_deref().unwrap_or("-"),
                        e.state
                    ));
                }
            }
            RouteNetlinkMessage::NewRoute(m) => {
                out.found
                    .push(format!("route {}", routes::kind_name(m.header.kind)));
            }
            _ => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------
// replay_jsonl: netprobe replay over a recorded stream
// ---------------------------------------------------------------------------

pub fn replay_jsonl(data: &[u8]) -> Outcome {
    let mut out = Outcome::default();
    let result = replay(data, Config::default());
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            // Reading from memory fails only on text that is not UTF-8.
            assert!(
                std::str::from_utf8(data).is_err(),
                "replay failed on UTF-8 input: {e:#}"
            );
            out.rejected += 1;
            return out;
        }
    };
    let lines = data
        .split(|b| *b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .count();
    assert!(
        r.events as usize + r.skipped.len() <= lines,
        "{} events and {} skipped from {lines} lines",
        r.events,
        r.skipped.len()
    );
    for d in &r.diagnoses {
        check_event(d);
        out.found.push(event_name(&d.body));
    }
    out.accepted = r.events as usize;
    out.rejected = r.skipped.len();
    out
}

// ---------------------------------------------------------------------------
// Seed builders
// ---------------------------------------------------------------------------

/// Hex text (whitespace ignored) to bytes.
pub fn unhex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("hex"), 16).expect("hex"))
        .collect()
}

/// Length-prefixed records, the `decode_record` input format.
pub fn frame_records(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        out.extend_from_slice(&(r.len() as u16).to_le_bytes());
        out.extend_from_slice(r);
    }
    out
}

/// Segments of one TCP payload as the kernel reports them: the first
/// `TLS_CAPTURE` bytes of each segment, split at `cuts`.
pub fn segments_of(wire: &[u8], flow: u8, seq: u32, cuts: &[usize]) -> Vec<FuzzSegment> {
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied().filter(|c| *c > 0 && *c < wire.len()));
    bounds.push(wire.len());
    bounds
        .windows(2)
        .map(|w| {
            let part = &wire[w[0]..w[1]];
            FuzzSegment {
                flow,
                start: w[0] == 0,
                expire: false,
                chunk: 0,
                seq: seq.wrapping_add(w[0] as u32),
                payload_len: part.len() as u16,
                delay_ms: 1,
                captured: part[..part.len().min(TLS_CAPTURE)].to_vec(),
            }
        })
        .collect()
}

/// An Ethernet + ARP reply: `holder` says it has `ip`.
pub fn arp_reply(holder: [u8; 6], ip: Ipv4Addr, to: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&to);
    f.extend_from_slice(&holder);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
    f.extend_from_slice(&holder);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&to);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.resize(60, 0);
    f
}

/// A solicited neighbour advertisement for `target` from `holder`, with a
/// target link-layer option when `with_option`, checksummed.
pub fn neighbour_advert(
    holder: [u8; 6],
    target: Ipv6Addr,
    to: [u8; 6],
    with_option: bool,
) -> Vec<u8> {
    let dst = probe::link_local(to);
    let mut icmp = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    if with_option {
        icmp.extend_from_slice(&[2, 1]);
        icmp.extend_from_slice(&holder);
    }
    let sum = probe::icmpv6_checksum(target, dst, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&to);
    f.extend_from_slice(&holder);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&target.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f
}

/// One netlink attribute (host-endian header, padded to 4 bytes).
pub fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + value.len() + 3);
    v.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    v.extend_from_slice(&kind.to_ne_bytes());
    v.extend_from_slice(value);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

/// A netlink message of `ty` carrying `body` (after the 16-byte header).
pub fn netlink_message(ty: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + body.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m
}

/// A ctnetlink CT_NEW message as the kernel dumps it: nested tuples
/// (NLA_F_NESTED), big-endian values, TCP protoinfo, status, timeout, id.
pub fn ct_new(
    family: u8,
    orig: (IpAddr, u16, IpAddr, u16),
    reply: (IpAddr, u16, IpAddr, u16),
    proto: u8,
    status: u32,
) -> Vec<u8> {
    const NESTED: u16 = 0x8000;
    let ip_attr = |a: IpAddr, v4: u16, v6: u16| match a {
        IpAddr::V4(a) => nla(v4, &a.octets()),
        IpAddr::V6(a) => nla(v6, &a.octets()),
    };
    let tuple = |(src, sport, dst, dport): (IpAddr, u16, IpAddr, u16)| {
        // CTA_IP_V4_SRC 1, V4_DST 2, V6_SRC 3, V6_DST 4.
        let ip = [ip_attr(src, 1, 3), ip_attr(dst, 2, 4)].concat();
        let ports = [
            nla(1, &[proto]),
            nla(2, &sport.to_be_bytes()),
            nla(3, &dport.to_be_bytes()),
        ]
        .concat();
        [nla(1 | NESTED, &ip), nla(2 | NESTED, &ports)].concat()
    };
    let tcp = [
        nla(1, &[3]), // ESTABLISHED
        nla(2, &[7]),
        nla(3, &[7]),
        nla(4, &[0x23, 0]),
        nla(5, &[0x23, 0]),
    ]
    .concat();
    let attrs = [
        nla(1 | NESTED, &tuple(orig)),
        nla(2 | NESTED, &tuple(reply)),
        nla(3, &status.to_be_bytes()),
        nla(7, &431_999u32.to_be_bytes()),
        nla(4 | NESTED, &nla(1 | NESTED, &tcp)),
        nla(12, &0x0000_beefu32.to_be_bytes()),
    ]
    .concat();
    let mut body = vec![family, 0, 0, 0]; // nfgenmsg
    body.extend_from_slice(&attrs);
    netlink_message(CT_NEW, 2, 77, &body)
}

/// NLMSG_DONE closing a dump.
pub fn nlmsg_done(seq: u32) -> Vec<u8> {
    netlink_message(3, 2, seq, &0i32.to_ne_bytes())
}

/// A route-netlink message as the kernel sends it in a dump (NLM_F_MULTI).
pub fn rtnl_message(inner: RouteNetlinkMessage, seq: u32) -> Vec<u8> {
    let mut msg = NetlinkMessage::new(
        netlink_packet_core::NetlinkHeader::default(),
        NetlinkPayload::InnerMessage(inner),
    );
    msg.header.flags = 2;
    msg.header.sequence_number = seq;
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// RTM_NEWLINK for an up Ethernet interface.
pub fn rtnl_link(index: u32, name: &str, mac: [u8; 6]) -> RouteNetlinkMessage {
    use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.link_layer_type = LinkLayerType::Ether;
    m.header.flags = LinkFlags::Up | LinkFlags::Running;
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m.attributes.push(LinkAttribute::Address(mac.to_vec()));
    RouteNetlinkMessage::NewLink(m)
}

/// RTM_NEWNEIGH with a MAC (if any) and cache times in ticks.
pub fn rtnl_neighbour(ifindex: u32, ip: IpAddr, mac: Option<[u8; 6]>) -> RouteNetlinkMessage {
    use netlink_packet_route::{
        AddressFamily,
        neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourCacheInfo, NeighbourMessage,
            NeighbourState,
        },
    };
    let mut m = NeighbourMessage::default();
    m.header.ifindex = ifindex;
    m.header.state = if mac.is_some() {
        NeighbourState::Stale
    } else {
        NeighbourState::Failed
    };
    let (family, addr) = match ip {
        IpAddr::V4(a) => (AddressFamily::Inet, NeighbourAddress::Inet(a)),
        IpAddr::V6(a) => (AddressFamily::Inet6, NeighbourAddress::Inet6(a)),
    };
    m.header.family = family;
    m.attributes.push(NeighbourAttribute::Destination(addr));
    if let Some(mac) = mac {
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    }
    // confirmed, used, updated, refcnt (u32 each, host order).
    let cache: Vec<u8> = [250u32, 7, 1234, 1]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    let cache = NeighbourCacheInfo::parse(&cache).expect("cache info layout");
    m.attributes.push(NeighbourAttribute::CacheInfo(cache));
    RouteNetlinkMessage::NewNeighbour(m)
}

/// RTM_NEWROUTE answering `ip route get dst`: via `gw` out of `oif`.
pub fn rtnl_route(dst: Ipv4Addr, gw: Ipv4Addr, oif: u32) -> RouteNetlinkMessage {
    use netlink_packet_route::{
        AddressFamily,
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
    };
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = 32;
    m.header.kind = RouteType::Unicast;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
    m.attributes
        .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
    m.attributes.push(RouteAttribute::Oif(oif));
    RouteNetlinkMessage::NewRoute(m)
}

// ---------------------------------------------------------------------------
// btf_parse: raw BTF -> index -> struct and member look-ups
// ---------------------------------------------------------------------------

/// Indexes the input as BTF, reads every type and member it claims, and
/// runs the kernel-offset look-ups over it.
pub fn btf_parse(data: &[u8]) -> Outcome {
    use probe_user::kernel::btf::{Btf, kind};
    let mut out = Outcome::default();
    let Ok(btf) = Btf::parse(data) else {
        out.rejected += 1;
        return out;
    };
    out.accepted += 1;
    for id in 1..=btf.len() as u32 {
        let t = btf.get(id).expect("an indexed id reads");
        let _ = btf.name(t.name_off);
        if let Ok(members) = btf.members(&t) {
            let aggregate = t.kind == kind::STRUCT || t.kind == kind::UNION;
            assert_eq!(members.len(), if aggregate { t.vlen as usize } else { 0 });
        }
    }
    assert!(btf.get(btf.len() as u32 + 1).is_err());
    // The nested look-up the retransmit program's layout check makes.
    for field in ["skc_rcv_saddr", "skc_family"] {
        let path = ["__sk_common", field];
        let found = probe_user::kernel::btf_offsets::member_offset(&btf, "sock", &path);
        out.found.push(match found {
            Ok(off) => format!("sock.__sk_common.{field} at {off}"),
            Err(e) => e.to_string(),
        });
    }
    if let Ok(o) = probe_user::kernel::btf_offsets::from_btf(&btf) {
        out.found.push(format!("{o:?}"));
    }
    out
}
