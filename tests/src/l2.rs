//! Layer 2 state of a lab host: extra IPs (VIPs), neighbour entries, ARP
//! announcements, reachability.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde_json::Value;

use crate::icmp;
use crate::lab::Host;
use crate::wait::poll_until;

/// A row of `ip neigh`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: String,
    /// Absent for INCOMPLETE/FAILED entries.
    pub lladdr: Option<String>,
    /// e.g. ["REACHABLE"], ["STALE"], ["PERMANENT"].
    pub state: Vec<String>,
}

impl Neighbour {
    pub fn has_state(&self, s: &str) -> bool {
        self.state.iter().any(|x| x.eq_ignore_ascii_case(s))
    }
}

/// NUD state to force with [`Host::set_neighbour`].
#[derive(Clone, Copy, Debug)]
pub enum Nud {
    Permanent,
    Reachable,
    Stale,
    Noarp,
}

impl Nud {
    fn as_str(self) -> &'static str {
        match self {
            Nud::Permanent => "permanent",
            Nud::Reachable => "reachable",
            Nud::Stale => "stale",
            Nud::Noarp => "noarp",
        }
    }
}

fn prefix_len(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 24 } else { 64 }
}

impl Host {
    /// The interface MAC as the kernel reports it.
    pub fn read_mac(&self) -> String {
        let j = self.ip_json(["link", "show", "dev", &self.ifname]);
        j[0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address for {} in {}: {j}", self.ifname, self.name()))
            .to_string()
    }

    /// Adds an extra address (a VIP) on the lab interface, same prefix as
    /// the segment; IPv6 ones without DAD.
    pub fn add_ip(&self, ip: IpAddr) {
        let cidr = format!("{ip}/{}", prefix_len(ip));
        if ip.is_ipv6() {
            self.ip(["addr", "add", &cidr, "dev", &self.ifname, "nodad"]);
        } else {
            self.ip(["addr", "add", &cidr, "dev", &self.ifname]);
        }
    }

    pub fn del_ip(&self, ip: IpAddr) {
        let cidr = format!("{ip}/{}", prefix_len(ip));
        self.ip(["addr", "del", &cidr, "dev", &self.ifname]);
    }

    /// Forces a neighbour entry (a static or "poisoned" one).
    pub fn set_neighbour(&self, ip: IpAddr, mac: &str, nud: Nud) {
        self.ip([
            "neigh",
            "replace",
            &ip.to_string(),
            "lladdr",
            mac,
            "nud",
            nud.as_str(),
            "dev",
            &self.ifname,
        ]);
    }

    /// Removes the entry if present (the incident's fix, `ip neigh del`).
    pub fn del_neighbour(&self, ip: IpAddr) {
        if self.neighbour(ip).is_some() {
            self.ip(["neigh", "del", &ip.to_string(), "dev", &self.ifname]);
        }
    }

    pub fn flush_neighbours(&self) {
        self.ip(["neigh", "flush", "dev", &self.ifname]);
    }

    /// The entry for `ip` on the lab interface, if any.
    pub fn neighbour(&self, ip: IpAddr) -> Option<Neighbour> {
        let j = self.ip_json(["neigh", "show", "to", &ip.to_string(), "dev", &self.ifname]);
        j.as_array()?.first().map(parse_neighbour)
    }

    /// Polls (every 20 ms, up to `timeout`) until the entry matches `pred`.
    pub fn wait_neighbour(
        &self,
        ip: IpAddr,
        timeout: Duration,
        pred: impl Fn(&Neighbour) -> bool,
    ) -> Option<Neighbour> {
        poll_until(timeout, Duration::from_millis(20), || {
            self.neighbour(ip).filter(|n| pred(n))
        })
    }

    /// Gratuitous ARP request for `ip` (sender = target = ip), as keepalived
    /// sends when taking a VIP. `ip` must be on this host. Takes ~1 s
    /// (arping waits one interval).
    pub fn gratuitous_arp(&self, ip: Ipv4Addr) {
        self.arping_announce("-U", ip);
    }

    /// Unsolicited ARP reply for `ip` (`arping -A`).
    pub fn arp_reply_announce(&self, ip: Ipv4Addr) {
        self.arping_announce("-A", ip);
    }

    fn arping_announce(&self, mode: &str, ip: Ipv4Addr) {
        let ip = ip.to_string();
        self.exec([
            "arping",
            mode,
            "-c",
            "1",
            "-w",
            "1",
            "-I",
            &self.ifname,
            "-s",
            &ip,
            &ip,
        ]);
    }

    /// One ICMP echo, 1 s timeout: true if answered.
    pub fn ping(&self, dst: IpAddr) -> bool {
        icmp::ping(self, dst, Duration::from_secs(1)).is_some()
    }
}

fn parse_neighbour(v: &Value) -> Neighbour {
    Neighbour {
        ip: v["dst"].as_str().unwrap_or_default().to_string(),
        lladdr: v["lladdr"].as_str().map(str::to_lowercase),
        state: v["state"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_neigh_json() {
        let v: Value = serde_json::from_str(
            r#"{"dst":"10.200.0.100","lladdr":"02:6E:70:c8:00:02","state":["REACHABLE"]}"#,
        )
        .unwrap();
        let n = parse_neighbour(&v);
        assert_eq!(n.lladdr.as_deref(), Some("02:6e:70:c8:00:02"));
        assert!(n.has_state("reachable"));
        let failed: Value =
            serde_json::from_str(r#"{"dst":"10.1.1.1","state":["FAILED"]}"#).unwrap();
        assert_eq!(parse_neighbour(&failed).lladdr, None);
    }
}
