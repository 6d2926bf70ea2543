//! Answers the correlator's questions with kernel state: routes and
//! neighbours over rtnetlink, conntrack over ctnetlink, and the active
//! claimant probe. Runs in netprobe's namespace (`--netns`). A failed
//! look-up is written into the snapshot, never hidden.

use std::{net::IpAddr, time::Duration};

use chrono::Utc;

use crate::{
    correlate::{Investigation, diagnose},
    event::{Event, EventBody, FlowRef, Snapshot},
    state::{self, conntrack, neighbours, probe, routes},
};

/// How long the active probe listens for answers.
pub const PROBE_WINDOW: Duration = Duration::from_millis(300);

/// A conntrack table dump is reused this long: a storm over many flows asks
/// "who else goes to this Service" once, not once per flow. The flow's own
/// entry is always read live.
const DUMP_TTL: Duration = Duration::from_secs(1);

type Dump = std::sync::Arc<Vec<crate::state::ConntrackEntry>>;

static DUMP_CACHE: std::sync::Mutex<Option<(std::time::Instant, conntrack::Family, Dump)>> =
    std::sync::Mutex::new(None);

/// Entries whose original destination is `dst`, from a dump at most
/// `DUMP_TTL` old. Blocking: call from spawn_blocking.
fn same_service(
    dst: std::net::SocketAddr,
) -> Result<Vec<crate::state::ConntrackEntry>, crate::state::ConntrackError> {
    let family = conntrack::Family::of(dst.ip());
    let mut cache = DUMP_CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let fresh = cache
        .as_ref()
        .filter(|(at, f, _)| *f == family && at.elapsed() < DUMP_TTL)
        .map(|(_, _, d)| d.clone());
    let dump = match fresh {
        Some(d) => d,
        None => {
            let d: Dump = std::sync::Arc::new(conntrack::dump(family)?);
            *cache = Some((std::time::Instant::now(), family, d.clone()));
            d
        }
    };
    Ok(dump.iter().filter(|e| e.orig_dst == dst).cloned().collect())
}

pub async fn run(inv: Investigation) -> Event {
    let snapshot = match inv {
        Investigation::Handshake { flow, iface } => handshake(flow, &iface).await,
        Investigation::Storm { flow, netns } => storm(flow, netns).await,
    };
    Event {
        time: Utc::now(),
        netns: None,
        body: EventBody::Snapshot(Box::new(snapshot)),
    }
}

/// Route, next hop and device toward `ip` (device defaults to `fallback_dev`).
async fn next_hop(
    ip: IpAddr,
    fallback_dev: Option<&str>,
    snap: &mut Snapshot,
) -> (IpAddr, Option<String>) {
    match routes::route_to(ip).await {
        Ok(route) => snap.route = route,
        Err(e) => snap.errors.push(format!("route to {ip}: {e}")),
    }
    let hop = snap.route.as_ref().and_then(|r| r.gateway).unwrap_or(ip);
    let dev = snap
        .route
        .as_ref()
        .and_then(|r| r.dev.clone())
        .or_else(|| fallback_dev.map(str::to_string));
    match neighbours::lookup(hop, dev.as_deref()).await {
        Ok(n) => snap.neighbour = n,
        Err(e) => snap.errors.push(format!("neighbour {hop}: {e}")),
    }
    (hop, dev)
}

async fn handshake(flow: FlowRef, iface: &str) -> Snapshot {
    let mut snap = Snapshot {
        symptom: diagnose::HANDSHAKE.to_string(),
        flow: Some(flow),
        ..Default::default()
    };
    let (hop, dev) = next_hop(flow.dst.ip(), Some(iface), &mut snap).await;
    let dev = dev.unwrap_or_else(|| iface.to_string());
    match probe::claimants(&dev, hop, PROBE_WINDOW).await {
        Ok(result) => snap.probe = Some(result),
        Err(e) => snap
            .errors
            .push(format!("probing who claims {hop} on {dev}: {e}")),
    }
    snap
}

async fn storm(flow: FlowRef, socket_netns: Option<u32>) -> Snapshot {
    let mut snap = Snapshot {
        symptom: diagnose::STORM.to_string(),
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
                Err(e) => snap
                    .errors
                    .push(format!("conntrack {} -> {}: {e}", flow.src, flow.dst)),
            }
            match same {
                Ok(v) => snap.same_service = v,
                Err(e) => snap
                    .errors
                    .push(format!("conntrack entries to {}: {e}", flow.dst)),
            }
            // Where the packets really go: the NAT target when there is one.
            snap.conntrack
                .as_ref()
                .filter(|c| c.is_dnat())
                .map(|c| c.reply_src.ip())
                .unwrap_or(flow.dst.ip())
        }
        Err(e) => {
            snap.errors.push(format!("conntrack look-up task: {e}"));
            flow.dst.ip()
        }
    };
    let ours = crate::netns::current_inode();
    if snap.conntrack.is_none() && socket_netns.is_some() && socket_netns != ours {
        snap.foreign_netns = socket_netns;
        return snap;
    }
    next_hop(target, None, &mut snap).await;
    snap
}
