//! Silent packet drops and random loss with nftables, inside one namespace.
//!
//! This kernel has no netem; nft `drop` is the way to make a peer vanish
//! without RST or ICMP (what a deleted pod looks like) or to make a link
//! lossy (the control case).

use serde_json::Value;
use std::net::IpAddr;

use crate::cmd::{self, DEFAULT_TIMEOUT};
use crate::netns::{Netns, parse_json};

pub const TABLE: &str = "nptest";
const CHAINS: [&str; 3] = ["input", "output", "forward"];

/// Rules in table `inet nptest` of one namespace (gone with the namespace).
pub struct Nft<'a> {
    ns: &'a Netns,
}

impl Netns {
    /// Creates (idempotently) the test table and its accept-by-default
    /// input/output/forward chains.
    pub fn nft(&self) -> Nft<'_> {
        let nft = Nft { ns: self };
        nft.run(&format!("add table inet {TABLE}"));
        for c in CHAINS {
            nft.run(&format!(
                "add chain inet {TABLE} {c} {{ type filter hook {c} priority 0; policy accept; }}"
            ));
        }
        nft
    }
}

impl Nft<'_> {
    /// nft joins its arguments into one command; passing it as a single
    /// argv entry needs no shell quoting of braces and semicolons.
    fn run(&self, command: &str) {
        self.ns.exec(["nft", command]);
    }

    /// Appends `rule` (nft syntax, e.g. "tcp dport 80 drop") to `chain`.
    pub fn rule(&self, chain: &str, rule: &str) {
        self.run(&format!("add rule inet {TABLE} {chain} {rule}"));
    }

    /// Drops every TCP segment to or from `port`, in all three chains.
    pub fn drop_tcp_port(&self, port: u16) {
        for c in CHAINS {
            self.rule(c, &format!("tcp dport {port} drop"));
            self.rule(c, &format!("tcp sport {port} drop"));
        }
    }

    /// Drops every IP packet to or from `ip`, in all three chains.
    pub fn drop_host(&self, ip: IpAddr) {
        let fam = if ip.is_ipv4() { "ip" } else { "ip6" };
        for c in CHAINS {
            self.rule(c, &format!("{fam} daddr {ip} drop"));
            self.rule(c, &format!("{fam} saddr {ip} drop"));
        }
    }

    /// Drops `percent` % of the IP packets this namespace sends or forwards
    /// (output and forward chains, so a path is not hit twice by one box).
    pub fn random_loss(&self, percent: u8) {
        assert!(percent <= 100);
        for c in ["output", "forward"] {
            self.rule(c, &format!("numgen random mod 100 < {percent} drop"));
        }
    }

    /// Removes all rules (the chains stay, accepting).
    pub fn flush(&self) {
        self.run(&format!("flush table inet {TABLE}"));
    }

    /// `nft -j list table inet nptest`, parsed.
    pub fn list(&self) -> Value {
        let mut c = self
            .ns
            .command(["nft", "-j", "list", "table", "inet", TABLE]);
        let what = cmd::describe(&c);
        parse_json(&cmd::run(&mut c, DEFAULT_TIMEOUT).stdout, &what)
    }

    /// Number of rules currently in the table.
    pub fn rule_count(&self) -> usize {
        self.list()["nftables"]
            .as_array()
            .map(|a| a.iter().filter(|o| o.get("rule").is_some()).count())
            .unwrap_or(0)
    }
}
