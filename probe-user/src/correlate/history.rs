//! What the wire and the kernel said about who owns an IP: neighbour-table
//! changes (neigh_update), ARP/NDP claims seen on the wire, and which MACs
//! TLS handshakes to the IP completed through. Bounded.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
};

use chrono::{DateTime, Utc};

use crate::model::event::{Arp, Neighbour};

const MAX_IPS: usize = 4096;
const CHANGES_PER_IP: usize = 32;

/// One change of a neighbour entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub time: DateTime<Utc>,
    pub dev: String,
    pub old_mac: Option<String>,
    pub new_mac: Option<String>,
    pub old_state: String,
    pub new_state: String,
    pub pid: u32,
    pub flags: Vec<String>,
}

/// A MAC that announced or answered for an IP.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    pub mac: String,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    /// How often, by ARP op name (`reply`, `gratuitous`, ...).
    pub ops: Vec<(String, u32)>,
}

/// Wire claims older than this are history, not a current claimant.
pub const CLAIM_MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::seconds(120);
/// MACs remembered per IP for completed handshakes.
const SERVED_PER_IP: usize = 8;

/// A TLS handshake to an IP completed through a MAC: that MAC serves it.
#[derive(Clone, Debug, PartialEq)]
pub struct Served {
    pub mac: String,
    pub last: DateTime<Utc>,
    pub count: u32,
}

#[derive(Default)]
pub struct History {
    changes: HashMap<IpAddr, VecDeque<Change>>,
    claims: HashMap<IpAddr, Vec<Claim>>,
    served: HashMap<IpAddr, Vec<Served>>,
    /// Insertion order of IPs, to forget the oldest past MAX_IPS.
    order: VecDeque<IpAddr>,
    pub evicted: u64,
}

impl History {
    fn touch(&mut self, ip: IpAddr) {
        if self.changes.contains_key(&ip)
            || self.claims.contains_key(&ip)
            || self.served.contains_key(&ip)
        {
            return;
        }
        while self.order.len() >= MAX_IPS {
            if let Some(old) = self.order.pop_front() {
                self.changes.remove(&old);
                self.claims.remove(&old);
                self.served.remove(&old);
                self.evicted += 1;
            }
        }
        self.order.push_back(ip);
    }

    pub fn neighbour(&mut self, time: DateTime<Utc>, n: &Neighbour) {
        // Only changes of MAC or state are history; refreshes are noise.
        if n.old_mac == n.new_mac && n.old_state == n.new_state {
            return;
        }
        self.touch(n.ip);
        let list = self.changes.entry(n.ip).or_default();
        if list.len() >= CHANGES_PER_IP {
            list.pop_front();
        }
        list.push_back(Change {
            time,
            dev: n.dev.clone(),
            old_mac: n.old_mac.clone(),
            new_mac: n.new_mac.clone(),
            old_state: n.old_state.clone(),
            new_state: n.new_state.clone(),
            pid: n.pid,
            flags: n.update_flags.clone(),
        });
    }

    /// Every ARP/NDP frame whose sender says "this IP is at this MAC".
    pub fn arp(&mut self, time: DateTime<Utc>, a: &Arp) {
        if a.sender_ip.is_unspecified() {
            return; // probes (ours or RFC 5227) claim nothing
        }
        self.touch(a.sender_ip);
        let claims = self.claims.entry(a.sender_ip).or_default();
        let claim = match claims.iter_mut().position(|c| c.mac == a.sender_mac) {
            Some(i) => &mut claims[i],
            None => {
                claims.push(Claim {
                    mac: a.sender_mac.clone(),
                    first: time,
                    last: time,
                    ops: Vec::new(),
                });
                claims.last_mut().expect("just pushed")
            }
        };
        claim.last = time;
        match claim.ops.iter_mut().find(|(op, _)| *op == a.op) {
            Some((_, n)) => *n += 1,
            None => claim.ops.push((a.op.clone(), 1)),
        }
    }

    /// A handshake to `ip` was answered; its hello left toward `mac`.
    pub fn served(&mut self, time: DateTime<Utc>, ip: IpAddr, mac: &str) {
        self.touch(ip);
        let list = self.served.entry(ip).or_default();
        match list.iter_mut().find(|s| s.mac == mac) {
            Some(s) => {
                s.last = time;
                s.count += 1;
            }
            None => {
                if list.len() >= SERVED_PER_IP {
                    list.sort_by_key(|s| std::cmp::Reverse(s.last));
                    list.truncate(SERVED_PER_IP - 1);
                }
                list.push(Served {
                    mac: mac.to_string(),
                    last: time,
                    count: 1,
                });
            }
        }
    }

    /// MACs through which handshakes to `ip` completed.
    pub fn served_by(&self, ip: &IpAddr) -> &[Served] {
        self.served.get(ip).map(Vec::as_slice).unwrap_or_default()
    }

    pub fn changes(&self, ip: &IpAddr) -> impl Iterator<Item = &Change> {
        self.changes.get(ip).into_iter().flatten()
    }

    pub fn claims(&self, ip: &IpAddr) -> &[Claim] {
        self.claims.get(ip).map(Vec::as_slice).unwrap_or_default()
    }

    /// Claims seen within [`CLAIM_MAX_AGE`] of `now`.
    pub fn recent_claims(&self, ip: &IpAddr, now: DateTime<Utc>) -> Vec<&Claim> {
        self.claims(ip)
            .iter()
            .filter(|c| now - c.last <= CLAIM_MAX_AGE)
            .collect()
    }
}
