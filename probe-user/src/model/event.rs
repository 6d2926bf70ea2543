//! Decoded events: the typed form of what the kernel reported, and the JSON
//! lines contract of `netprobe trace --json` (see shared/design.md).
//!
//! These types serialise and deserialise, so a recorded stream can be fed
//! back to the correlator (`netprobe replay`) without root.

use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A MAC that may be unknown: `null` in JSON, empty in memory (a socket
/// hook's record is above the link layer).
mod mac_or_null {
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mac: &str, s: S) -> Result<S::Ok, S::Error> {
        if mac.is_empty() {
            s.serialize_none()
        } else {
            s.serialize_str(mac)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
    }
}

/// One line of the stream: a timestamp, the namespace it came from where the
/// kernel tells it, and the payload.
///
/// A diagnosis names its namespace itself ([`Diagnosis::netns`], by name
/// where it has one) and leaves [`Event::netns`] empty, so the line has one
/// `netns` key; reading a line back routes that key to the diagnosis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawEvent")]
pub struct Event {
    #[serde(flatten)]
    pub body: EventBody,
    #[serde(with = "rfc3339")]
    pub time: DateTime<Utc>,
    /// Inode of the network namespace (as in `/proc/PID/ns/net`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<u32>,
}

/// [`Event`] as read: `netns` may be a diagnosis's name for it.
#[derive(Deserialize)]
struct RawEvent {
    #[serde(flatten)]
    body: EventBody,
    #[serde(with = "rfc3339")]
    time: DateTime<Utc>,
    #[serde(default)]
    netns: Option<NetnsLabel>,
}

impl From<RawEvent> for Event {
    fn from(raw: RawEvent) -> Self {
        let mut body = raw.body;
        let netns = match (&mut body, raw.netns) {
            (EventBody::Diagnosis(d), label @ Some(_)) => {
                d.netns = label;
                None
            }
            (_, Some(NetnsLabel::Inode(inode))) => Some(inode),
            (_, _) => None,
        };
        Event {
            body,
            time: raw.time,
            netns,
        }
    }
}

/// A network namespace as a diagnosis names it: its name under /run/netns
/// where it has one, else its inode (as other events carry it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NetnsLabel {
    Inode(u32),
    Name(String),
}

impl std::fmt::Display for NetnsLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetnsLabel::Inode(i) => write!(f, "net:[{i}]"),
            NetnsLabel::Name(n) => f.write_str(n),
        }
    }
}

/// Raised on any incompatible change to the JSON lines (a field renamed,
/// removed or retyped); new types and fields do not raise it.
pub const SCHEMA: u32 = 1;

/// The first object of every stream: what wrote it, where, and what this
/// kernel and these privileges allow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Start {
    /// [`SCHEMA`].
    pub schema: u32,
    /// `0.1.0 (commit abcdef1)`.
    pub netprobe: String,
    /// The node's name: $NODE_NAME (the DaemonSet sets it from
    /// spec.nodeName), else the host name.
    pub node: String,
    /// The kernel release (`uname -r`).
    pub kernel: String,
    /// The watched TLS ports.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// The namespace the session runs in, by name where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_netns: Option<NetnsLabel>,
    /// Capabilities of this kernel and session, on or off: `tcx`, `btf`
    /// (socket namespace and sequence numbers), `drop_reasons`,
    /// `retransmit_err`, `active_probe`.
    #[serde(default)]
    pub capabilities: std::collections::BTreeMap<String, bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// The first line of a stream.
    Start(Start),
    Retransmit(Retransmit),
    Reset(Reset),
    TlsClientHello(TlsClientHello),
    TlsServerHello(TlsServerHello),
    Neighbour(Neighbour),
    Arp(Arp),
    Stats(Stats),
    Snapshot(Box<Snapshot>),
    Diagnosis(Box<Diagnosis>),
    /// A TLS segment already reported, seen again on another hook: the path
    /// a packet takes through this node (pod veth, bridge, uplink).
    TlsHop(TlsHop),
    /// A diagnosed flow made progress again.
    Recovered(Recovered),
    /// This kernel dropped packets of a flow under suspicion.
    Drop(Drop),
    /// The client's first segment after its ClientHello: the server's
    /// flight reached it and the handshake went on (`record` says with
    /// what: an alert means the client refused it).
    TlsClientFlight(TlsClientFlight),
    /// This node answered a packet of a flow with an ICMP error.
    IcmpSent(IcmpSent),
    /// This node's TCP stack sent a RST on a flow.
    ResetSent(ResetSent),
    /// A listener on this node retransmitted its SYN-ACK: `src` is the
    /// listener's address, `dst` the client's.
    SynackRetransmit(SynackRetransmit),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SynackRetransmit {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// SYN-ACKs retransmitted to this client so far.
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TlsClientFlight {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub iface: String,
    pub direction: String,
    /// `change_cipher_spec`, `handshake`, `alert` or `application_data`.
    pub record: String,
}

/// A TLS record's content type as a name.
pub fn tls_content_type(b: Option<u8>) -> String {
    match b {
        Some(0x14) => "change_cipher_spec".into(),
        Some(0x15) => "alert".into(),
        Some(0x16) => "handshake".into(),
        Some(0x17) => "application_data".into(),
        Some(other) => format!("0x{other:02x}"),
        None => "unknown".into(),
    }
}

/// ICMP destination-unreachable errors this node sent about one flow's
/// packets, counted in the kernel; an `icmp_sent` event is written at
/// counts 1, 2, 4, 8, ...
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IcmpSent {
    /// The offending packet's source and destination.
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub icmp_type: u8,
    pub code: u8,
    /// `host_unreachable`, `port_unreachable`, `frag_needed`,
    /// `admin_prohibited`, ... (`code_N` for others).
    pub message: String,
    pub count: u32,
}

/// RSTs this node's TCP stack sent on one flow, counted in the kernel; a
/// `reset_sent` event is written at counts 1, 2, 4, 8, ...
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResetSent {
    /// This node's end (the RST's source).
    pub src: SocketAddr,
    /// The peer the RST goes to.
    pub dst: SocketAddr,
    /// The socket's TCP state; null when no socket matched (nothing listens).
    pub state: Option<String>,
    /// The kernel's reset reason as tracefs prints it (`NO_SOCKET`).
    pub reason: String,
    pub count: u32,
}

/// Name of an ICMP destination-unreachable code (RFC 792, 1812).
pub fn unreach_name(code: u8) -> String {
    match code {
        0 => "net_unreachable",
        1 => "host_unreachable",
        2 => "protocol_unreachable",
        3 => "port_unreachable",
        4 => "frag_needed",
        5 => "source_route_failed",
        6 => "net_unknown",
        7 => "host_unknown",
        9 => "net_prohibited",
        10 => "host_prohibited",
        13 => "admin_prohibited",
        c => return format!("code_{c}"),
    }
    .to_string()
}

/// Drops of one flow direction for one reason, counted in the kernel; a
/// `drop` event is written at counts 1, 2, 4, 8, ...
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Drop {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// The kernel's skb drop reason as tracefs prints it (`NETFILTER_DROP`).
    pub reason: String,
    pub count: u32,
    /// Kernel text address of the function that dropped it.
    pub location: String,
    /// The pod whose network namespace dropped it (not the node's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Box<crate::model::pod::Pod>>,
}

/// One more hook a TLS handshake segment crossed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TlsHop {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub iface: String,
    pub direction: String,
    #[serde(with = "mac_or_null", default)]
    pub src_mac: String,
    #[serde(with = "mac_or_null", default)]
    pub dst_mac: String,
}

/// The flow an earlier diagnosis was about is moving again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recovered {
    pub flow: FlowRef,
    pub symptom: String,
    /// The earlier verdict.
    pub cause: String,
    /// From that verdict to the sign of progress.
    pub after_ms: u64,
    /// What showed the progress.
    pub how: String,
}

/// A TCP flow as the client's socket sees it (before any NAT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlowRef {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// Kernel state read to explain one symptom, recorded in the stream so that
/// `netprobe replay` reaches the same diagnosis without the kernel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub symptom: String,
    pub flow: Option<FlowRef>,
    /// Route to the flow's destination (or the NAT target), `ip route get`.
    #[serde(default)]
    pub route: Option<crate::model::facts::RouteInfo>,
    /// Neighbour entry of the next hop.
    #[serde(default)]
    pub neighbour: Option<crate::model::facts::NeighbourEntry>,
    /// Who answered an active ARP/NDP probe for the next hop.
    #[serde(default)]
    pub probe: Option<crate::model::facts::ProbeResult>,
    /// The flow's conntrack entry.
    #[serde(default)]
    pub conntrack: Option<crate::model::facts::ConntrackEntry>,
    /// Other conntrack entries with the same original destination.
    #[serde(default)]
    pub same_service: Vec<crate::model::facts::ConntrackEntry>,
    #[serde(default)]
    pub tcp_retries2: Option<u32>,
    /// Where the NAT rules of this node send the flow's Service now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translation: Option<crate::model::facts::Translation>,
    /// A fresh connection attempt to the NAT target (or destination).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<crate::model::facts::Liveness>,
    /// Inode of the namespace the look-ups ran in (the node's): only drops
    /// in it are this node's evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_netns: Option<u32>,
    /// Rules of this node's ruleset that drop and match the flow's
    /// addresses or ports (`family table chain: ...`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop_rules: Vec<String>,
    /// Connections a full accept queue turned away in this namespace since
    /// netprobe started (TcpExt ListenOverflows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_overflows: Option<u64>,
    /// Connections waiting in the accept queue of the local listener on
    /// the flow's destination port, when the destination is this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_queue: Option<u32>,
    /// Conntrack table use when the drops were looked at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conntrack_usage: Option<crate::model::facts::ConntrackUsage>,
    /// DF echo requests of a few sizes toward the server: what came back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<crate::model::facts::PathCheck>,
    /// Why no active probe was sent (`--no-probe`, rate limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_skipped: Option<String>,
    /// netprobe's own TLS handshakes through each MAC claiming the next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_probe: Option<crate::model::facts::OwnerProbe>,
    /// Why no owner probe was made although two MACs claim the next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_probe_skipped: Option<String>,
    /// The socket lives in this other namespace and nothing here (no
    /// conntrack entry) ties its path to ours: route and neighbour state of
    /// netprobe's namespace says nothing about it, so none was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreign_netns: Option<u32>,
    /// Look-ups that failed, and why.
    #[serde(default)]
    pub errors: Vec<String>,
}

impl Diagnosis {
    /// A diagnosis with no evidence, fix or cause-specific fields yet;
    /// callers fill in what their cause knows.
    pub fn new(
        symptom: impl Into<String>,
        cause: impl Into<String>,
        flow: FlowRef,
        summary: impl Into<String>,
    ) -> Self {
        Self {
            symptom: symptom.into(),
            cause: cause.into(),
            flow,
            summary: summary.into(),
            evidence: Vec::new(),
            fix: None,
            ip: None,
            dev: None,
            mac_used: None,
            macs_claiming: None,
            service: None,
            nat_target: None,
            stage: None,
            drop_reason: None,
            rule: None,
            path_mtu: None,
            process: None,
            pod: None,
            container: None,
            detected_after_ms: 0,
            netns: None,
            node: None,
        }
    }
}

/// A named cause, with its evidence and the command that fixes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// `tls_handshake_unanswered` or `retransmit_storm`.
    pub symptom: String,
    /// A [`crate::correlate::Cause`] name: `stale_neighbour`,
    /// `stale_conntrack_nat`, `endpoint_unreachable`, `server_not_responding`,
    /// `packet_loss` or `unknown`.
    pub cause: String,
    pub flow: FlowRef,
    pub summary: String,
    pub evidence: Vec<String>,
    pub fix: Option<String>,
    /// stale_neighbour: the next hop, its device, the MAC the traffic went
    /// to, and every MAC seen or probed claiming the IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_used: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macs_claiming: Option<Vec<String>>,
    /// stale_conntrack_nat: the original destination and where it is NATed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_target: Option<SocketAddr>,
    /// Handshake symptoms: where it stalled (`hello_sent`, `hello_acked`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// kernel_drop: the skb drop reason, and the rule that holds the drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// mtu_blackhole: the largest packet that came back from the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_mtu: Option<u16>,
    /// The process that owns the stuck socket, where known, and its pod
    /// (the runtime's sandbox of the socket's namespace or IP, else the
    /// process's cgroup) and container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<crate::model::pod::Pod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<crate::model::pod::Container>,
    /// Milliseconds from the first sign of trouble to this diagnosis.
    pub detected_after_ms: u64,
    /// The namespace the verdict was judged in (the session's), by name
    /// where it has one; the fix acts there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<NetnsLabel>,
    /// The node that judged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Retransmit {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// `ESTABLISHED`, `SYN_SENT`, ...
    pub state: String,
    /// Retransmits of this flow seen so far.
    pub count: u64,
    /// Lowest unacknowledged sequence number when it fired, if read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snd_una: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snd_nxt: Option<u32>,
    /// The process that connected the socket, when netprobe saw the connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    /// Why nothing left this host, when the kernel tried and failed
    /// (`EHOSTUNREACH`: no route; `ENOBUFS`: a full queue...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_sent: Option<String>,
    /// The socket's pod (the runtime's sandbox owning its namespace, else
    /// the process's cgroup) and the process's container. Boxed: most
    /// retransmits have none, and events stay small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Box<crate::model::pod::Pod>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<crate::model::pod::Container>,
}

/// A process, as the kernel named it at connect().
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
}

/// The peer reset the connection (`src` is the local end).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reset {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TlsClientHello {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub iface: String,
    #[serde(with = "mac_or_null", default)]
    pub src_mac: String,
    #[serde(with = "mac_or_null", default)]
    pub dst_mac: String,
    pub sni: Option<String>,
    /// Record-layer version, e.g. `0x0301`.
    pub record_version: String,
    /// Version in the ClientHello body (TLS 1.3 still says `0x0303` here).
    pub handshake_version: String,
    /// Number of TCP segments the ClientHello arrived in.
    pub segments: u32,
    /// `ingress` or `egress`.
    pub direction: String,
    /// The rest of the hello never came: reported from its first segment
    /// (no SNI) so the handshake it starts is not lost.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TlsServerHello {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub iface: String,
    #[serde(with = "mac_or_null", default)]
    pub src_mac: String,
    #[serde(with = "mac_or_null", default)]
    pub dst_mac: String,
    pub record_version: String,
    /// Version in the ServerHello body (TLS 1.3 still says `0x0303` here).
    pub handshake_version: String,
    /// From the supported_versions extension: `0x0304` for TLS 1.3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_version: Option<String>,
    pub direction: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Neighbour {
    pub ip: std::net::IpAddr,
    pub dev: String,
    /// `None` when the entry had no link-layer address.
    pub old_mac: Option<String>,
    pub new_mac: Option<String>,
    /// `REACHABLE`, `STALE`, `FAILED`, ... (`NONE` for 0).
    pub old_state: String,
    pub new_state: String,
    /// NEIGH_UPDATE_F_* names, e.g. `OVERRIDE`, `ADMIN`.
    pub update_flags: Vec<String>,
    /// Process that asked for the change; 0 for the kernel itself.
    pub pid: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Arp {
    pub iface: String,
    /// `request`, `reply`, `gratuitous`, `neighbour_advert`.
    pub op: String,
    pub sender_ip: std::net::IpAddr,
    pub sender_mac: String,
    pub target_ip: std::net::IpAddr,
    pub eth_src: String,
    pub eth_dst: String,
    pub direction: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Records decoded since start.
    pub events: u64,
    /// Records the kernel could not put in the ring buffer, since start.
    pub lost: u64,
    /// The same loss, by record type (only non-zero entries).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub lost_by_type: std::collections::BTreeMap<String, u64>,
    /// Runs of netprobe's tracepoint programs the kernel skipped because
    /// another BPF program was running on that CPU (by program; included in
    /// `lost` for the programs that write records).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub skipped_by_kernel: std::collections::BTreeMap<String, u64>,
    /// Records that failed to decode (bad size, unknown type).
    #[serde(default)]
    pub malformed: u64,
    /// TLS segments that did not make a full handshake message.
    #[serde(default)]
    pub tls_incomplete: u64,
    /// Interfaces the classifier is attached to now.
    #[serde(default)]
    pub interfaces: u32,
    /// ClientHellos reported without their end (no SNI): a continuation
    /// segment never came.
    #[serde(default)]
    pub tls_partial: u64,
    /// Storms of sockets in other namespaces whose traffic does not pass
    /// through this one: counted, not diagnosed.
    #[serde(default)]
    pub storms_other_netns: u64,
    /// Kernel-state look-ups (route, neighbour, conntrack, NAT rules) that failed.
    #[serde(default)]
    pub lookup_failures: u64,
    /// Active ARP/ND probes sent, and the ones not sent (`--no-probe`, rate limit).
    #[serde(default)]
    pub probes_sent: u64,
    #[serde(default)]
    pub probes_skipped: u64,
    /// Diagnosed flows that made progress again.
    #[serde(default)]
    pub recovered: u64,
    /// `true` on the last line, written at exit.
    #[serde(default)]
    pub r#final: bool,
}

/// Lower-case `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8]) -> String {
    let mut out = String::with_capacity(mac.len() * 3);
    for (i, b) in mac.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// `0x0303` style.
pub fn format_version(v: u16) -> String {
    format!("0x{v:04x}")
}

/// Timestamps as RFC 3339 in UTC with microseconds, `Z` suffix.
mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T12:00:00.5Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn retransmit_json_has_contract_fields() {
        let e = Event {
            time: at(),
            netns: Some(4026531840),
            body: EventBody::Retransmit(Retransmit {
                src: "10.0.0.1:40000".parse().unwrap(),
                dst: "[fd00::2]:8000".parse().unwrap(),
                state: "ESTABLISHED".into(),
                count: 3,
                snd_una: None,
                snd_nxt: None,
                not_sent: None,
                process: None,
                pod: None,
                container: None,
            }),
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "retransmit");
        assert_eq!(v["time"], "2026-11-21T12:00:00.500000Z");
        assert_eq!(v["src"], "10.0.0.1:40000");
        assert_eq!(v["dst"], "[fd00::2]:8000");
        assert_eq!(v["state"], "ESTABLISHED");
        assert_eq!(v["count"], 3);
        assert!(v.get("snd_una").is_none());
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn client_hello_sni_null_when_absent() {
        let e = Event {
            time: at(),
            netns: None,
            body: EventBody::TlsClientHello(TlsClientHello {
                src: "10.0.0.1:40000".parse().unwrap(),
                dst: "10.0.0.2:6443".parse().unwrap(),
                iface: "eth0".into(),
                src_mac: format_mac(&[2, 0, 0, 0, 0, 1]),
                dst_mac: format_mac(&[0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF]),
                sni: None,
                record_version: format_version(0x0301),
                handshake_version: format_version(0x0303),
                segments: 1,
                direction: "egress".into(),
                partial: false,
            }),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "tls_client_hello");
        assert!(v["sni"].is_null());
        assert!(v.get("partial").is_none(), "only said when true: {v}");
        assert_eq!(v["dst_mac"], "aa:bb:cc:dd:ee:ff");
        assert_eq!(v["record_version"], "0x0301");
    }
}
