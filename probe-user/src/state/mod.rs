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
pub mod cri;
pub mod liveness;
pub mod nat_rules;
pub mod neighbours;
pub mod owner;
pub mod path_checks;
pub mod path_mtu;
pub mod probe;
pub mod routes;
pub mod sysctl;

use std::{collections::HashMap, time::Duration};

use futures_util::TryStreamExt as _;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};

pub use conntrack::ConntrackError;
pub use neighbours::NeighbourError;
pub use probe::ProbeError;
pub use routes::RouteError;
pub use sysctl::tcp_retries2;

// The facts these modules read are plain data shared with the correlator.
pub use crate::model::facts::{
    ConntrackEntry, NeighbourEntry, ProbeAnswer, ProbeResult, RouteInfo, hang_estimate,
};

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
