//! Sentences shared by the rules: times, claims, neighbour changes, the
//! RTO back-off of a retransmit series.

use std::net::IpAddr;

use chrono::{DateTime, Utc};

use super::{history::History, storm::Series};

pub fn clock(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S%.3f").to_string()
}

pub fn claims(history: &History, ip: &IpAddr, now: DateTime<Utc>) -> Vec<String> {
    history
        .claims(ip)
        .iter()
        .map(|c| {
            let ops: Vec<String> = c.ops.iter().map(|(op, n)| format!("{op} x{n}")).collect();
            let age = if now - c.last > super::history::CLAIM_MAX_AGE {
                " (too old to count as a current claim)"
            } else {
                ""
            };
            format!(
                "{} claimed {ip} on the wire ({}; last at {}){age}",
                c.mac,
                ops.join(", "),
                clock(c.last)
            )
        })
        .collect()
}

pub fn changes(history: &History, ip: &IpAddr) -> Vec<String> {
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

pub fn served(history: &History, ip: &IpAddr) -> Vec<String> {
    history
        .served_by(ip)
        .iter()
        .map(|s| {
            format!(
                "TLS handshakes to {ip} through {} completed {} time(s), last at {}",
                s.mac,
                s.count,
                clock(s.last)
            )
        })
        .collect()
}

/// Look-ups the investigation could not make, said as evidence.
pub fn lookup_failures(snap: &crate::model::event::Snapshot) -> impl Iterator<Item = String> + '_ {
    snap.errors.iter().map(|e| format!("look-up failed: {e}"))
}

pub fn delays(series: &Series) -> String {
    series
        .intervals_ms()
        .iter()
        .map(|ms| format!("{:.1}s", *ms as f64 / 1000.0))
        .collect::<Vec<_>>()
        .join(", ")
}
