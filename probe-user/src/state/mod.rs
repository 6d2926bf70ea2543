//! Kernel state looked up on demand: neighbour entries and routes
//! (rtnetlink), conntrack entries (ctnetlink), who answers for an IP on the
//! wire (an ARP/NDP probe that leaves the neighbour table alone), and the
//! TCP sysctls that bound how long a dead flow hangs.
//!
//! Everything here runs in the calling thread's network namespace: netprobe
//! enters `--netns` before its runtime starts, so every socket opened here
//! belongs to that namespace. Nothing here runs a subprocess.
//!
//! The types below are recorded in the JSON stream as snapshots and fed back
//! to the correlator by `netprobe replay`, hence serde on all of them.

pub mod conntrack;
pub mod neighbours;
pub mod probe;
pub mod routes;
pub mod sysctl;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use futures_util::TryStreamExt as _;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use serde::{Deserialize, Serialize};

pub use conntrack::ConntrackError;
pub use neighbours::NeighbourError;
pub use probe::ProbeError;
pub use routes::RouteError;
pub use sysctl::{hang_estimate, tcp_retries2};

/// Any of this module's errors, for callers that mix lookups.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Neighbour(#[from] NeighbourError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Conntrack(#[from] ConntrackError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
}

/// How long any one rtnetlink request may take: the kernel answers these in
/// microseconds, so hitting this means something is badly wrong.
pub(crate) const NETLINK_TIMEOUT: Duration = Duration::from_secs(2);

/// An rtnetlink connection whose driver task dies with it.
pub(crate) struct Rtnl {
    pub handle: rtnetlink::Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Rtnl {
    /// Opens the socket in the calling thread, hence in its namespace.
    pub fn open() -> std::io::Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        Ok(Self {
            handle,
            task: tokio::spawn(conn),
        })
    }

    /// ifindex -> name for every link of the namespace.
    pub async fn link_names(&self) -> Result<HashMap<u32, String>, rtnetlink::Error> {
        let mut names = HashMap::new();
        let mut stream = self.handle.link().get().execute();
        while let Some(msg) = stream.try_next().await? {
            if let Some(name) = link_name(&msg) {
                names.insert(msg.header.index, name);
            }
        }
        Ok(names)
    }

    /// One link by index; `None` if the kernel does not know it.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<LinkMessage>, rtnetlink::Error> {
        let mut stream = self.handle.link().get().match_index(index).execute();
        match stream.try_next().await {
            Ok(msg) => Ok(msg),
            Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One link by name; `None` if there is no such interface here.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, rtnetlink::Error> {
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match stream.try_next().await {
            Ok(msg) => Ok(msg),
            Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Rtnl {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn link_name(msg: &LinkMessage) -> Option<String> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

/// The positive errno of a kernel NACK, if that is what `e` is.
pub(crate) fn netlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| c.get().abs()),
        _ => None,
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_through_json() {
        let entry = ConntrackEntry {
            proto: 6,
            orig_src: "10.0.0.1:40000".parse().unwrap(),
            orig_dst: "10.96.0.10:8000".parse().unwrap(),
            reply_src: "10.244.1.7:8000".parse().unwrap(),
            reply_dst: "10.0.0.1:40000".parse().unwrap(),
            tcp_state: Some("ESTABLISHED".into()),
            status: vec!["SEEN_REPLY".into(), "ASSURED".into(), "DST_NAT".into()],
            timeout_s: Some(431999),
            id: Some(7),
        };
        let json = serde_json::to_string(&entry).unwrap();
        assert!(json.contains(r#""orig_dst":"10.96.0.10:8000""#), "{json}");
        assert_eq!(
            serde_json::from_str::<ConntrackEntry>(&json).unwrap(),
            entry
        );

        let probe = ProbeResult {
            ip: "fd00::64".parse().unwrap(),
            dev: "eth0".into(),
            probe_mac: "02:11:22:33:44:55".into(),
            window_ms: 300,
            answers: vec![
                ProbeAnswer {
                    mac: "02:00:00:00:00:01".into(),
                    after_us: 80,
                },
                ProbeAnswer {
                    mac: "02:00:00:00:00:02".into(),
                    after_us: 95,
                },
                ProbeAnswer {
                    mac: "02:00:00:00:00:01".into(),
                    after_us: 10_100,
                },
            ],
        };
        assert_eq!(
            probe.distinct_macs(),
            vec!["02:00:00:00:00:01", "02:00:00:00:00:02"]
        );
        let back: ProbeResult =
            serde_json::from_str(&serde_json::to_string(&probe).unwrap()).unwrap();
        assert_eq!(back, probe);

        let route = RouteInfo {
            dst: "10.1.2.3".parse().unwrap(),
            dev: None,
            gateway: None,
            kind: "unreachable".into(),
        };
        assert!(!route.is_deliverable());
    }
}
