//! From facts to a named cause. Pure functions: the symptom's own facts,
//! the history the correlator kept, and the snapshot of kernel state.
//! Each rule names a cause only when the facts for it are there; otherwise
//! the answer is `unknown` with what was seen.

use std::net::IpAddr;

use chrono::{DateTime, Utc};

use super::{handshake::Pending, history::History, storm::Series};
use crate::{
    event::{Diagnosis, FlowRef, Snapshot},
    state::ConntrackEntry,
};

pub const HANDSHAKE: &str = "tls_handshake_unanswered";
pub const STORM: &str = "retransmit_storm";

fn clock(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S%.3f").to_string()
}

fn base(
    symptom: &str,
    cause: &str,
    flow: FlowRef,
    summary: String,
    evidence: Vec<String>,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Diagnosis {
    Diagnosis {
        evidence,
        detected_after_ms: (now - since).num_milliseconds().max(0) as u64,
        ..Diagnosis::new(symptom, cause, flow, summary)
    }
}

fn describe_claims(history: &History, ip: &IpAddr) -> Vec<String> {
    history
        .claims(ip)
        .iter()
        .map(|c| {
            let ops: Vec<String> = c.ops.iter().map(|(op, n)| format!("{op} x{n}")).collect();
            format!(
                "{} claimed {ip} on the wire ({}; last at {})",
                c.mac,
                ops.join(", "),
                clock(c.last)
            )
        })
        .collect()
}

fn describe_changes(history: &History, ip: &IpAddr) -> Vec<String> {
    history
        .changes(ip)
        .filter(|c| c.old_mac != c.new_mac)
        .map(|c| {
            let who = if c.pid == 0 {
                "the kernel (a packet on the wire)".to_string()
            } else {
                format!("pid {}", c.pid)
            };
            format!(
                "neighbour {ip} dev {} changed at {}: {} {} -> {} {}, by {who}",
                c.dev,
                clock(c.time),
                c.old_mac.as_deref().unwrap_or("(none)"),
                c.old_state,
                c.new_mac.as_deref().unwrap_or("(none)"),
                c.new_state
            )
        })
        .collect()
}

/// MACs that claim `ip` now, and every MAC seen claiming it at all.
/// Active probe answers are the present: when the probe got answers, past
/// claims on the wire are history (an entry that flapped and came back must
/// not be blamed). Without answers, the wire claims are the best we have.
fn claimants(history: &History, snap: &Snapshot, ip: &IpAddr) -> (Vec<String>, Vec<String>) {
    let mut all: Vec<String> = Vec::new();
    let mut add = |m: &str| {
        if !all.iter().any(|x| x == m) {
            all.push(m.to_string());
        }
    };
    let probed = snap
        .probe
        .as_ref()
        .map(|p| p.distinct_macs())
        .unwrap_or_default();
    probed.iter().for_each(|m| add(m));
    history.claims(ip).iter().for_each(|c| add(&c.mac));
    let current = if probed.is_empty() {
        all.clone()
    } else {
        probed
    };
    (current, all)
}

pub fn handshake(
    p: &Pending,
    history: &History,
    snap: &Snapshot,
    // The client's flow, and the server's answer flow.
    retransmits: [Option<&Series>; 2],
    now: DateTime<Utc>,
) -> Diagnosis {
    let hello = &p.hello;
    let flow = FlowRef {
        src: hello.src,
        dst: hello.dst,
    };
    let dst_ip = hello.dst.ip();
    let next_hop = snap
        .route
        .as_ref()
        .and_then(|r| r.gateway)
        .unwrap_or(dst_ip);
    let dev = snap
        .route
        .as_ref()
        .and_then(|r| r.dev.clone())
        .unwrap_or_else(|| hello.iface.clone());
    let sni = hello
        .sni
        .as_deref()
        .map(|s| format!(" (SNI {s})"))
        .unwrap_or_default();
    let waited = (now - p.time).num_milliseconds() as f64 / 1000.0;
    let mut evidence = vec![
        format!(
            "ClientHello {} -> {}{sni} left {} at {} toward MAC {}; no ServerHello after {waited:.1} s",
            hello.src,
            hello.dst,
            hello.iface,
            clock(p.time),
            hello.dst_mac
        ),
        "the TCP connection was established (the ClientHello is only sent after connect), so whoever holds that MAC accepted it but never answered TLS".to_string(),
    ];
    if next_hop != dst_ip {
        evidence.push(format!(
            "{dst_ip} is reached via gateway {next_hop} on {dev}"
        ));
    }
    if let Some(n) = &snap.neighbour {
        let age = n
            .updated_ago_ms
            .map(|ms| format!(", updated {:.1} s ago", ms as f64 / 1000.0))
            .unwrap_or_default();
        evidence.push(format!(
            "neighbour entry {} dev {}: {} {}{age}",
            n.ip,
            n.dev,
            n.mac.as_deref().unwrap_or("(no MAC)"),
            n.state
        ));
    }
    evidence.extend(describe_changes(history, &next_hop));
    evidence.extend(describe_claims(history, &next_hop));
    if let Some(probe) = &snap.probe {
        let macs = probe.distinct_macs();
        evidence.push(if macs.is_empty() {
            format!(
                "active probe for {next_hop} from {} on {}: no answer in {} ms",
                probe.probe_mac, probe.dev, probe.window_ms
            )
        } else {
            format!(
                "active probe for {next_hop} from {} on {}: answered by {} within {} ms",
                probe.probe_mac,
                probe.dev,
                macs.join(" and "),
                probe.window_ms
            )
        });
    }
    let [client, server] = retransmits.map(|s| s.map_or(0, |s| s.total));
    if client > 0 {
        evidence.push(format!(
            "the client retransmitted {client} times on this flow"
        ));
    }
    if server > 0 {
        evidence.push(format!(
            "the server retransmitted its side {server} times: its answer is being lost on the way"
        ));
    }
    let retrans = client + server;
    evidence.extend(snap.errors.iter().map(|e| format!("look-up failed: {e}")));

    let (current, seen) = claimants(history, snap, &next_hop);
    let mac_used = hello.dst_mac.clone();
    let route_kind = snap.route.as_ref().map(|r| r.kind.as_str());
    let neigh_state = snap
        .neighbour
        .as_ref()
        .map(|n| n.state.as_str())
        .unwrap_or("");
    let others: Vec<&String> = current.iter().filter(|m| **m != mac_used).collect();

    let mut d = base(
        HANDSHAKE,
        "unknown",
        flow,
        String::new(),
        evidence,
        p.time,
        now,
    );
    if matches!(route_kind, Some(k) if k != "unicast" && k != "local") {
        d.cause = "endpoint_unreachable".into();
        d.summary = format!(
            "TLS handshake to {} unanswered: the route to {dst_ip} is {}",
            hello.dst,
            route_kind.unwrap_or("")
        );
    } else if neigh_state.contains("FAILED") || neigh_state.contains("INCOMPLETE") {
        d.cause = "endpoint_unreachable".into();
        d.summary = format!(
            "TLS handshake to {} unanswered: {next_hop} does not resolve (neighbour {neigh_state})",
            hello.dst
        );
    } else if !others.is_empty() {
        let mut all = vec![mac_used.clone()];
        all.extend(seen.iter().filter(|m| **m != mac_used).cloned());
        d.cause = "stale_neighbour".into();
        let other_macs = others
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        d.summary = if current.contains(&mac_used) {
            format!(
                "TLS handshake to {} is going to {mac_used}, but {other_macs} also claim(s) {next_hop}: the ARP/ND entry points at the wrong owner",
                hello.dst
            )
        } else {
            format!(
                "TLS handshake to {} is going to {mac_used}, which no longer claims {next_hop}; {other_macs} does: the ARP/ND entry is stale",
                hello.dst
            )
        };
        d.evidence.push(format!("fix: delete the entry so {next_hop} is resolved afresh, then find out why more than one host claims it"));
        d.fix = Some(format!("ip neigh del {next_hop} dev {dev}"));
        d.ip = Some(next_hop);
        d.dev = Some(dev);
        d.mac_used = Some(mac_used);
        d.macs_claiming = Some(all);
    } else if retrans > 0 {
        d.cause = "packet_loss".into();
        d.summary = format!(
            "TLS handshake to {} is slow: segments are being lost ({retrans} retransmits) and {next_hop} has a single owner",
            hello.dst
        );
    } else {
        // Only what was seen: no loss seen on this node, no second owner.
        d.summary = format!(
            "TLS handshake to {} unanswered: no ServerHello came back and no retransmits were seen on either side; {mac_used} is the only owner of {next_hop} found, so the server itself (or something past {next_hop}) is not answering",
            hello.dst
        );
    }
    d
}

fn delays(series: &Series) -> String {
    series
        .intervals_ms()
        .iter()
        .map(|ms| format!("{:.1}s", *ms as f64 / 1000.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A different translated destination for the same service: the service has
/// moved on, the flow has not.
fn moved_to<'a>(ct: &ConntrackEntry, same: &'a [ConntrackEntry]) -> Option<&'a ConntrackEntry> {
    same.iter()
        .find(|o| o.orig_src != ct.orig_src || o.orig_dst != ct.orig_dst)
        .filter(|o| o.reply_src != ct.reply_src && o.is_dnat())
}

pub fn storm(
    flow: FlowRef,
    series: &Series,
    snap: &Snapshot,
    now: DateTime<Utc>,
    hang: Option<std::time::Duration>,
) -> Diagnosis {
    let mut evidence = vec![format!(
        "{} retransmits of {} -> {} since {} ({} in the current run, state {}), intervals {}",
        series.total,
        flow.src,
        flow.dst,
        clock(series.first),
        series.streak,
        series.state,
        delays(series)
    )];
    evidence.push(if series.progressed {
        "the peer acknowledged data between retransmits (snd_una moved)".to_string()
    } else {
        "no forward progress: nothing acknowledged between retransmits".to_string()
    });
    let mut d = base(
        STORM,
        "unknown",
        flow,
        String::new(),
        Vec::new(),
        series.streak_start,
        now,
    );
    if let Some(ct) = &snap.conntrack {
        evidence.push(format!(
            "conntrack: {} -> {} replied from {} ({}; {}{})",
            ct.orig_src,
            ct.orig_dst,
            ct.reply_src,
            ct.tcp_state.as_deref().unwrap_or("-"),
            ct.status.join(","),
            ct.timeout_s
                .map(|t| format!("; expires in {t} s"))
                .unwrap_or_default()
        ));
    } else {
        evidence.push("conntrack: no entry for this flow in this namespace".to_string());
    }
    let target_route = snap.route.as_ref();
    if let Some(r) = target_route {
        evidence.push(format!(
            "route to {}: {} {}",
            r.dst,
            r.kind,
            r.dev.as_deref().unwrap_or("")
        ));
    }
    if let Some(n) = &snap.neighbour {
        evidence.push(format!(
            "neighbour {} dev {}: {} {}",
            n.ip,
            n.dev,
            n.mac.as_deref().unwrap_or("(no MAC)"),
            n.state
        ));
    }
    evidence.extend(snap.errors.iter().map(|e| format!("look-up failed: {e}")));
    let hang_text = hang.map(|h| {
        format!(
            "{:.0} s (~{:.0} min)",
            h.as_secs_f64(),
            h.as_secs_f64() / 60.0
        )
    });

    if let Some(ns) = snap.foreign_netns {
        evidence.push(format!(
            "the socket is in network namespace {ns}, and netprobe's namespace has no conntrack entry for it: its route and neighbours were not read (run netprobe with --netns on the namespace the flow passes through)"
        ));
    }
    let neigh_dead = snap
        .neighbour
        .as_ref()
        .is_some_and(|n| n.state.contains("FAILED") || n.state.contains("INCOMPLETE"));
    let route_dead = target_route.is_some_and(|r| r.kind != "unicast" && r.kind != "local");
    match &snap.conntrack {
        Some(ct) if ct.is_dnat() && !series.progressed => {
            let moved = moved_to(ct, &snap.same_service);
            if let Some(other) = moved {
                evidence.push(format!(
                    "other flows to {} are now translated to {}",
                    ct.orig_dst, other.reply_src
                ));
            }
            if moved.is_some() || neigh_dead || route_dead {
                d.cause = "stale_conntrack_nat".into();
                d.summary = format!(
                    "{} -> {} is stuck: its conntrack entry still NATs to {}, which is gone{}; the client hangs until tcp_retries2 gives up{}",
                    flow.src,
                    ct.orig_dst,
                    ct.reply_src,
                    moved
                        .map(|o| format!(" (the service now goes to {})", o.reply_src))
                        .unwrap_or_default(),
                    hang_text
                        .as_ref()
                        .map(|h| format!(", about {h} after the first loss"))
                        .unwrap_or_default()
                );
                if let Some(h) = &hang_text {
                    evidence.push(format!(
                        "tcp_retries2={} gives up after about {h}",
                        snap.tcp_retries2.unwrap_or(15)
                    ));
                }
                evidence.push("fix: delete this conntrack entry; the next retransmit is translated afresh, gets a RST and the client reconnects at once; set TCP_USER_TIMEOUT or keepalive on the client to bound the hang".to_string());
                d.fix = Some(ct.delete_command());
                d.service = Some(ct.orig_dst);
                d.nat_target = Some(ct.reply_src);
            } else {
                d.summary = format!(
                    "{} -> {} (NATed to {}) retransmits with no progress; the target still looks alive",
                    flow.src, ct.orig_dst, ct.reply_src
                );
            }
        }
        _ if series.progressed => {
            d.cause = "packet_loss".into();
            d.summary = format!(
                "{} -> {} is losing packets: retransmits, but ACKs keep advancing",
                flow.src, flow.dst
            );
        }
        _ if neigh_dead || route_dead => {
            d.cause = "endpoint_unreachable".into();
            d.summary = format!(
                "{} -> {} retransmits into nothing: the destination does not resolve or has no route",
                flow.src, flow.dst
            );
        }
        _ => {
            d.summary = format!(
                "{} -> {} retransmits with no progress; no NAT and the next hop resolves",
                flow.src, flow.dst
            );
        }
    }
    d.evidence = evidence;
    d
}
