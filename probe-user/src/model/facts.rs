//! Facts about kernel state, as plain data: what `state/` reads from the
//! kernel and records in `snapshot` events, and what the correlator judges.
//! Neither side depends on the other; both depend on this.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// TCP_RTO_MIN: the base the kernel models the retransmission timeout on
/// for established connections.
pub const TCP_RTO_MIN_MS: u64 = 200;
/// TCP_RTO_MAX: the cap on one backed-off RTO.
pub const TCP_RTO_MAX_MS: u64 = 120_000;

/// One row of the neighbour table (`ip neigh show`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighbourEntry {
    pub ip: IpAddr,
    pub dev: String,
    /// Lower-case `aa:bb:cc:dd:ee:ff`; `None` for INCOMPLETE/FAILED entries.
    pub mac: Option<String>,
    /// `REACHABLE`, `STALE`, `FAILED`, `INCOMPLETE`, `PERMANENT`, ...
    pub state: String,
    /// Time since the entry last changed (NDA_CACHEINFO `updated`).
    pub updated_ago_ms: Option<u64>,
    /// Time since reachability was last confirmed (NDA_CACHEINFO `confirmed`).
    pub confirmed_ago_ms: Option<u64>,
}

/// The kernel's answer to `ip route get DST`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteInfo {
    pub dst: IpAddr,
    /// Output interface; `None` for reject routes.
    pub dev: Option<String>,
    /// Next hop, if not on-link.
    pub gateway: Option<IpAddr>,
    /// `unicast`, `local`, `broadcast`, `multicast`, `unreachable`,
    /// `blackhole`, `prohibit`, ...
    pub kind: String,
}

impl RouteInfo {
    /// False for the reject kinds (`unreachable`, `blackhole`, `prohibit`).
    pub fn is_deliverable(&self) -> bool {
        !matches!(
            self.kind.as_str(),
            "unreachable" | "blackhole" | "prohibit" | "throw"
        )
    }
}

/// One conntrack entry (`conntrack -L`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackEntry {
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...).
    pub proto: u8,
    pub orig_src: SocketAddr,
    pub orig_dst: SocketAddr,
    pub reply_src: SocketAddr,
    pub reply_dst: SocketAddr,
    /// Conntrack's TCP state: `ESTABLISHED`, `SYN_SENT`, `TIME_WAIT`, ...
    pub tcp_state: Option<String>,
    /// IPS_* status bits: `SEEN_REPLY`, `ASSURED`, `CONFIRMED`, `DST_NAT`, ...
    pub status: Vec<String>,
    /// Seconds until the entry expires.
    pub timeout_s: Option<u32>,
    pub id: Option<u32>,
}

/// What an active claimant probe saw: every MAC that answered for `ip`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub ip: IpAddr,
    pub dev: String,
    /// The foreign source MAC the probe was sent from.
    pub probe_mac: String,
    pub window_ms: u64,
    /// One per answering MAC, in order of arrival.
    pub answers: Vec<ProbeAnswer>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeAnswer {
    pub mac: String,
    /// Time from the first request to this answer.
    pub after_us: u64,
}

impl ProbeResult {
    /// The answering MACs, first answer first, each once.
    pub fn distinct_macs(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(self.answers.len());
        for a in &self.answers {
            if !out.contains(&a.mac) {
                out.push(a.mac.clone());
            }
        }
        out
    }
}

impl ConntrackEntry {
    /// The flow's replies come from somewhere other than where it was sent.
    pub fn is_dnat(&self) -> bool {
        self.reply_src != self.orig_dst
    }

    /// The `conntrack -D` command (conntrack-tools 1.4.7 options) that
    /// deletes this entry and no other. The reply source pins it to this NAT
    /// binding: once deleted, the next packet of the flow makes a new entry
    /// (to a live endpoint) that running the command again must not hit.
    /// conntrack infers IPv6 from the addresses.
    pub fn delete_command(&self) -> String {
        let mut cmd = format!(
            "conntrack -D -p {} --orig-src {} --orig-dst {}",
            proto_name(self.proto),
            self.orig_src.ip(),
            self.orig_dst.ip()
        );
        let ports = has_ports(self.proto);
        if ports {
            cmd += &format!(
                " --orig-port-src {} --orig-port-dst {}",
                self.orig_src.port(),
                self.orig_dst.port()
            );
        }
        cmd += &format!(" --reply-src {}", self.reply_src.ip());
        if ports {
            cmd += &format!(" --reply-port-src {}", self.reply_src.port());
        }
        cmd
    }
}

/// `conntrack -p` names (getprotobyname spellings); numbers otherwise.
pub fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        33 => "dccp".into(),
        47 => "gre".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        n => n.to_string(),
    }
}

pub fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 33 | 132 | 136)
}

/// How long after its first unanswered retransmission a connection is
/// killed with ETIMEDOUT: the kernel's tcp_model_timeout(), as used by
/// retransmits_timed_out() with `boundary = retries2` and `rto_base =
/// rto_ms`. The RTO doubles from `rto_base` until it would pass
/// TCP_RTO_MAX (that is ilog2(TCP_RTO_MAX / rto_base) doublings), then
/// stays at TCP_RTO_MAX for the remaining retries. The kernel uses
/// TCP_RTO_MIN (200 ms) here for established connections, whatever their
/// measured RTO; pass [`TCP_RTO_MIN_MS`]. The default retries2 of 15 gives
/// 924.6 s, the "about 15 minutes" of a client stuck on a dead peer.
pub fn hang_estimate(retries2: u32, rto_ms: u64) -> Duration {
    let rto_base = rto_ms.clamp(1, TCP_RTO_MAX_MS);
    let linear_backoff_thresh = (TCP_RTO_MAX_MS / rto_base).ilog2();
    let boundary = retries2;
    let ms = if boundary <= linear_backoff_thresh {
        ((2u64 << boundary) - 1) * rto_base
    } else {
        ((2u64 << linear_backoff_thresh) - 1) * rto_base
            + u64::from(boundary - linear_backoff_thresh) * TCP_RTO_MAX_MS
    };
    Duration::from_millis(ms)
}

/// A neighbour entry's state, typed: whether it gives a usable MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// REACHABLE, STALE, DELAY, PROBE, PERMANENT, NOARP: frames go out.
    Resolved,
    /// FAILED or INCOMPLETE: the next hop does not answer ARP/ND.
    Unresolved,
    /// NONE or anything unrecognised.
    Unknown,
}

impl NeighbourEntry {
    pub fn resolution(&self) -> Resolution {
        let has = |s: &str| self.state.split('|').any(|p| p.trim() == s);
        if has("FAILED") || has("INCOMPLETE") {
            Resolution::Unresolved
        } else if ["REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT", "NOARP"]
            .iter()
            .any(|s| has(s))
        {
            Resolution::Resolved
        } else {
            Resolution::Unknown
        }
    }
}

/// A route's kind, typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    Unicast,
    /// Delivered to this host (a VIP held here, a local address).
    Local,
    /// `unreachable`, `blackhole`, `prohibit`, `throw`: dropped here.
    Reject,
    Other,
}

impl RouteInfo {
    pub fn route_kind(&self) -> RouteKind {
        match self.kind.as_str() {
            "unicast" => RouteKind::Unicast,
            "local" => RouteKind::Local,
            _ if !self.is_deliverable() => RouteKind::Reject,
            _ => RouteKind::Other,
        }
    }
}

/// Where this node's netfilter NAT rules send a Service: read from the
/// nftables ruleset over netlink (iptables-nft rules included).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Translation {
    /// The NAT target looked for.
    pub target: Option<SocketAddr>,
    /// Rules (`family table chain`) that match the Service address.
    pub service_rules: Vec<String>,
    /// NAT rules (`family table chain`) that translate to the target.
    pub target_rules: Vec<String>,
    /// Every DNAT destination address found in the ruleset (bounded).
    pub dnat_targets: Vec<IpAddr>,
    /// Some NAT rule takes its address from a map or set that was not
    /// read: the target's absence proves nothing.
    pub incomplete: bool,
    /// NAT rules seen at all.
    pub nat_rules: u32,
}

impl Translation {
    /// The ruleset was read, knows the Service, has no map it could not
    /// read, and no NAT rule translates to the target any more.
    pub fn target_removed(&self) -> bool {
        !self.incomplete
            && self.nat_rules > 0
            && !self.service_rules.is_empty()
            && self.target_rules.is_empty()
    }

    /// A NAT rule still sends traffic to the target.
    pub fn target_present(&self) -> bool {
        !self.target_rules.is_empty()
    }
}

/// A fresh TCP connection attempt to an address from netprobe's namespace:
/// does anything there answer right now?
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    pub addr: SocketAddr,
    pub outcome: LivenessOutcome,
    /// How long the attempt took.
    pub after_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LivenessOutcome {
    /// SYN-ACK: something accepts connections there.
    Accepted,
    /// RST: the host is there, nothing listens on the port.
    Refused,
    /// An ICMP error came back (host or network unreachable).
    Unreachable,
    /// Nothing within the window.
    NoAnswer,
}

impl LivenessOutcome {
    /// A host answered at all (accepted or refused).
    pub fn host_answers(self) -> bool {
        matches!(self, Self::Accepted | Self::Refused)
    }
}

/// What DF echo requests of a few sizes toward an address brought back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathCheck {
    pub dst: IpAddr,
    /// The MTU the kernel uses toward it (route or cached path MTU).
    pub route_mtu: u16,
    /// Largest first.
    pub sizes: Vec<SizeResult>,
    /// A "fragmentation needed" came back, with this next-hop MTU.
    pub frag_needed: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeResult {
    /// IP packet size.
    pub size: u16,
    pub sent: bool,
    /// At least one of the rounds came back.
    pub answered: bool,
}

impl PathCheck {
    /// The largest size that came back.
    pub fn largest_answered(&self) -> Option<u16> {
        self.sizes
            .iter()
            .filter(|s| s.answered)
            .map(|s| s.size)
            .max()
    }

    /// Full-size packets came back: the path carries what the route allows.
    pub fn full_size_passes(&self) -> bool {
        self.largest_answered() == Some(self.route_mtu)
    }

    /// Small packets come back and full-size ones vanish, cleanly: every
    /// size above the largest answered was lost in every round and every
    /// size below it came back (random loss gives no such staircase).
    pub fn black_hole(&self) -> bool {
        let Some(l) = self.largest_answered() else {
            return false;
        };
        l < self.route_mtu
            && self
                .sizes
                .iter()
                .filter(|s| s.sent)
                .all(|s| s.answered == (s.size <= l))
    }
}

/// Drop reasons that mean "the path through this node threw it away", as
/// the kernel names them. The kernel program counts only these; the rest
/// (no socket, TCP's own bookkeeping: old data, out of window, a closed
/// socket) are not a path's fault.
pub const PATH_DROP_REASONS: &[&str] = &[
    "NETFILTER_DROP",
    "IP_RPFILTER",
    "NEIGH_FAILED",
    "NEIGH_CREATEFAIL",
    "NEIGH_QUEUEFULL",
    "NEIGH_DEAD",
    "IP_OUTNOROUTES",
    "IP_INNOROUTES",
    "IP_INADDRERRORS",
    "IP_INVALID_SOURCE",
    "IP_INVALID_DEST",
    "PKT_TOO_BIG",
    "TCP_LISTEN_OVERFLOW",
    "QDISC_DROP",
    "QDISC_OVERLIMIT",
    "XFRM_POLICY",
    "SECURITY_HOOK",
    "BPF_CGROUP_EGRESS",
    "TC_INGRESS",
    "TC_EGRESS",
    "FULL_RING",
    "CPU_BACKLOG",
];

/// How full the conntrack table is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackUsage {
    pub count: u32,
    pub max: u32,
    /// What conntrack gave up on in this namespace since netprobe started
    /// (per-CPU statistics summed). Absent when they could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_start: Option<ConntrackStats>,
}

/// Conntrack's per-CPU failure counters, summed (`/proc/net/stat/nf_conntrack`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackStats {
    /// Packets dropped because no entry could be made (the table is full).
    pub drop: u64,
    /// Unreplied entries evicted to make room.
    pub early_drop: u64,
    /// Entries that lost a race to be inserted (their packet dropped).
    pub insert_failed: u64,
}

impl ConntrackStats {
    pub fn since(&self, start: &ConntrackStats) -> ConntrackStats {
        ConntrackStats {
            drop: self.drop.saturating_sub(start.drop),
            early_drop: self.early_drop.saturating_sub(start.early_drop),
            insert_failed: self.insert_failed.saturating_sub(start.insert_failed),
        }
    }
}

impl ConntrackUsage {
    /// New connections cannot get an entry (a few slots of slack: the
    /// count moves while it is read).
    pub fn full(&self) -> bool {
        self.max > 0 && self.count.saturating_add(8) >= self.max
    }
}

/// netprobe's own TLS handshakes to a stuck handshake's address and port,
/// one through each MAC claiming the next hop (the frames of each pinned
/// to its MAC by the egress classifier; see `state::owner`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerProbe {
    pub dst: SocketAddr,
    pub dev: String,
    /// The SNI sent: the stuck ClientHello's.
    pub sni: Option<String>,
    /// One per claimant, in the order probed.
    pub attempts: Vec<OwnerAttempt>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerAttempt {
    pub mac: String,
    pub outcome: OwnerOutcome,
    /// Time to the TCP handshake's end, when it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<u64>,
    /// Time from the ClientHello sent to the outcome (or from the connect
    /// to its failure).
    pub after_ms: u64,
    /// Frames the classifier sent to `mac`. Zero: nothing went through the
    /// pin (no netprobe hook on the device), so the attempt says nothing
    /// about `mac`.
    pub frames: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What came back through one MAC. Only a ServerHello shows the MAC serves
/// the address; an alert or another TLS record shows a TLS speaker there
/// (not decisive); TCP accepted and then silence, or no TCP at all, is
/// evidence the MAC does not serve it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerOutcome {
    ServerHello,
    /// A TLS alert record (e.g. an SNI the server does not know).
    Alert,
    /// A TLS record that is neither a ServerHello nor an alert.
    OtherTls,
    /// Bytes that are not TLS.
    NotTls,
    /// TCP accepted, nothing within the deadline.
    Silent,
    /// TCP accepted, then closed or reset without a TLS record.
    Closed,
    /// The SYN was refused (RST).
    Refused,
    /// No answer to the SYN within the connect deadline.
    NoAnswer,
    /// The attempt could not be made (socket error, no free slot).
    Failed,
}

impl OwnerAttempt {
    /// The frames really left through `mac`.
    pub fn pinned(&self) -> bool {
        self.frames > 0
    }

    /// A ServerHello came back through `mac`: it serves the address.
    pub fn serves(&self) -> bool {
        self.pinned() && self.outcome == OwnerOutcome::ServerHello
    }

    /// Something at `mac` speaks TLS on the port (a ServerHello or an alert).
    pub fn speaks_tls(&self) -> bool {
        self.pinned()
            && matches!(
                self.outcome,
                OwnerOutcome::ServerHello | OwnerOutcome::Alert | OwnerOutcome::OtherTls
            )
    }

    /// The host at `mac` took the TCP connection: it holds the address.
    pub fn holds(&self) -> bool {
        self.pinned()
            && !matches!(
                self.outcome,
                OwnerOutcome::Refused | OwnerOutcome::NoAnswer | OwnerOutcome::Failed
            )
    }

    /// "through 02:..:11: TCP accepted in 0 ms, ServerHello in 3 ms".
    pub fn describe(&self) -> String {
        let tcp = self
            .connect_ms
            .map(|ms| format!("TCP accepted in {ms} ms, "))
            .unwrap_or_default();
        let what = match self.outcome {
            OwnerOutcome::ServerHello => format!("{tcp}ServerHello in {} ms", self.after_ms),
            OwnerOutcome::Alert => {
                format!("{tcp}TLS alert (no ServerHello) in {} ms", self.after_ms)
            }
            OwnerOutcome::OtherTls => {
                format!(
                    "{tcp}a TLS record other than a ServerHello in {} ms",
                    self.after_ms
                )
            }
            OwnerOutcome::NotTls => {
                format!("{tcp}an answer that is not TLS in {} ms", self.after_ms)
            }
            OwnerOutcome::Silent => format!("{tcp}no ServerHello in {} ms", self.after_ms),
            OwnerOutcome::Closed => {
                format!(
                    "{tcp}closed without a TLS record after {} ms",
                    self.after_ms
                )
            }
            OwnerOutcome::Refused => format!("TCP refused (RST) in {} ms", self.after_ms),
            OwnerOutcome::NoAnswer => format!("no answer to the SYN in {} ms", self.after_ms),
            OwnerOutcome::Failed => {
                format!("not made ({})", self.error.as_deref().unwrap_or("error"))
            }
        };
        let unpinned = if self.pinned() || self.outcome == OwnerOutcome::Failed {
            ""
        } else {
            " (but no frame went through the pin: not evidence about this MAC)"
        };
        format!("through {}: {what}{unpinned}", self.mac)
    }
}

impl OwnerProbe {
    pub fn attempt(&self, mac: &str) -> Option<&OwnerAttempt> {
        self.attempts.iter().find(|a| a.mac == mac)
    }

    /// "netprobe's own TLS handshake to 10.0.0.100:6443 (SNI kubernetes):
    /// through A: ...; through B: ...".
    pub fn describe(&self) -> String {
        let sni = self
            .sni
            .as_deref()
            .map(|s| format!(" (SNI {s})"))
            .unwrap_or_default();
        let parts: Vec<String> = self.attempts.iter().map(OwnerAttempt::describe).collect();
        format!(
            "netprobe's own TLS handshake to {}{sni} out of {}, one through each claimant: {}",
            self.dst,
            self.dev,
            parts.join("; ")
        )
    }
}
