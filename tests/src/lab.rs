//! Lab topologies: namespaces wired with veths, owned and torn down by `Lab`.
//!
//! Network safety: nothing here touches the root namespace. Veths are created
//! from inside a lab namespace with their peer placed directly in another lab
//! namespace (`ip -n A link add X type veth peer name Y netns B`), and the root
//! namespace gets no address or route for lab networks, so no test packet can
//! leave the machine.
//!
//! Addressing (one block per lab, see `subnet`): segment `s`, host `h` is
//! 10.<o>.<s>.<h> /24 and fd00:10:<o>:<s>::<h> /64, MAC 02:6e:70:<o>:<s>:<h>
//! (hex). The IPv6 groups reuse the decimal digits (10.200.0.3 pairs with
//! fd00:10:200::3) so logs are easy to read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Deref;
use std::sync::Arc;

use crate::netns::Netns;
use crate::subnet::{self, Lease};

/// First host number of the VIP range on each segment (hosts are 1..=99).
pub const VIP_BASE: u8 = 100;

pub struct Lab {
    label: String,
    lease: Lease,
    namespaces: Vec<Arc<Netns>>,
    next_segment: u8,
}

/// One end of a lab link: a namespace plus its interface and addresses.
/// Derefs to its namespace (`host.exec(..)`, `host.name()`).
#[derive(Clone, Debug)]
pub struct Host {
    pub ns: Arc<Netns>,
    pub ifname: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    /// The MAC we assigned at creation (`read_mac()` asks the kernel).
    pub mac: String,
}

/// A switch (bridge in its own namespace) and the hosts plugged into it.
pub struct Segment {
    pub index: u8,
    octet: u8,
    pub switch: Arc<Netns>,
    pub bridge: String,
    pub hosts: Vec<Host>,
}

impl Lab {
    /// `label` (short test name) goes into every namespace name.
    pub fn new(label: &str) -> Lab {
        Lab {
            label: label.to_string(),
            lease: subnet::lease(),
            namespaces: Vec::new(),
            next_segment: 0,
        }
    }

    /// Second octet of this lab's 10.x.0.0/16 block.
    pub fn octet(&self) -> u8 {
        self.lease.octet()
    }

    /// True for addresses of this lab's block: use it to pick this test's
    /// flows out of netprobe's global event stream.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => a.octets()[..2] == [10, self.octet()],
            IpAddr::V6(a) => {
                let s = a.segments();
                s[0] == 0xfd00 && s[1] == 0x10 && s[2] == hexlike(self.octet())
            }
        }
    }

    /// Like [`Lab::contains`] for netprobe's "ip:port" / "[v6]:port" strings.
    pub fn contains_endpoint(&self, endpoint: &str) -> bool {
        let host = match endpoint.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => h,
            _ => endpoint,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.parse().map(|ip| self.contains(ip)).unwrap_or(false)
    }

    /// A bare namespace (lo up) owned by the lab.
    pub fn namespace(&mut self, role: &str) -> Arc<Netns> {
        let ns = Arc::new(Netns::new(&format!("{}-{role}", self.label)));
        // Lab addresses get `nodad`; this covers link-local ones too, so
        // nothing in a lab waits ~1 s for duplicate address detection.
        ns.exec([
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ]);
        self.namespaces.push(ns.clone());
        ns
    }

    pub fn namespace_names(&self) -> Vec<String> {
        self.namespaces
            .iter()
            .map(|n| n.name().to_string())
            .collect()
    }

    fn take_segment(&mut self) -> u8 {
        let s = self.next_segment;
        self.next_segment = s.checked_add(1).expect("more than 255 segments in one lab");
        s
    }

    /// A switch namespace with bridge `br0` and `hosts` host namespaces, each
    /// with `eth0` plugged into the bridge (switch side `p<i>`), addressed
    /// .1, .2, ... on a fresh /24 and /64.
    pub fn bridge_segment(&mut self, hosts: usize) -> Segment {
        assert!(
            (1..VIP_BASE as usize).contains(&hosts),
            "1..=99 hosts per segment"
        );
        let index = self.take_segment();
        let switch = self.namespace(&format!("s{index}sw"));
        // A pure L2 box: no IPv6 on its ports, so it adds no MLD/RS noise
        // to what netprobe sees.
        switch.exec([
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]);
        // No STP, no forward delay: ports forward at once. No multicast
        // snooping: NDP multicast is flooded without MLD state.
        switch.ip([
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        ]);
        switch.ip(["link", "set", "br0", "up"]);
        let mut list = Vec::with_capacity(hosts);
        for i in 0..hosts {
            let ns = self.namespace(&format!("s{index}h{i}"));
            let port = format!("p{i}");
            let host = self.plug(&ns, index, i as u8 + 1, &switch, &port);
            switch.ip(["link", "set", &port, "master", "br0", "up"]);
            list.push(host);
        }
        Segment {
            index,
            octet: self.octet(),
            switch,
            bridge: "br0".to_string(),
            hosts: list,
        }
    }

    /// Two new namespaces joined by one veth (`eth0` each), .1 and .2.
    pub fn pair(&mut self) -> (Host, Host) {
        let index = self.next_segment;
        let a = self.namespace(&format!("s{index}a"));
        let b = self.namespace(&format!("s{index}b"));
        self.connect(&a, &b)
    }

    /// Joins two lab namespaces with a veth on a fresh segment: `a` gets .1,
    /// `b` gets .2; interface names are the next free `ethN` of each.
    pub fn connect(&mut self, a: &Arc<Netns>, b: &Arc<Netns>) -> (Host, Host) {
        let index = self.take_segment();
        let b_if = b.next_ifname();
        let ha = self.plug(a, index, 1, b, &b_if);
        let hb = Host {
            ns: b.clone(),
            ipv4: v4(self.octet(), index, 2),
            ipv6: v6(self.octet(), index, 2),
            mac: mac(self.octet(), index, 2),
            ifname: b_if,
        };
        hb.ns.ip(["link", "set", &hb.ifname, "address", &hb.mac]);
        configure(&hb);
        (ha, hb)
    }

    /// Creates `ns`'s next ethN (addressed as host `n` of segment `seg`) with
    /// its peer `peer_if` created directly inside `peer_ns`.
    fn plug(&self, ns: &Arc<Netns>, seg: u8, n: u8, peer_ns: &Netns, peer_if: &str) -> Host {
        let host = Host {
            ns: ns.clone(),
            ifname: ns.next_ifname(),
            ipv4: v4(self.octet(), seg, n),
            ipv6: v6(self.octet(), seg, n),
            mac: mac(self.octet(), seg, n),
        };
        ns.ip([
            "link",
            "add",
            &host.ifname,
            "address",
            &host.mac,
            "type",
            "veth",
            "peer",
            "name",
            peer_if,
            "netns",
            peer_ns.name(),
        ]);
        peer_ns.ip(["link", "set", peer_if, "up"]);
        configure(&host);
        host
    }

    /// A pod behind a node, as Calico plumbs it: the node's end of the
    /// pod's veth has the MAC ee:ee:ee:ee:ee:ee, no address, proxy ARP, and
    /// a host route to the pod; the pod's default route is 169.254.1.1 on
    /// its eth0 (answered by proxy ARP); the node forwards. Returns the
    /// pod's host.
    pub fn pod_behind(&mut self, node: &Host, pod: &Arc<Netns>) -> Host {
        let (node_side, pod_host) = self.connect(&node.ns, pod);
        let dev = node_side.ifname.as_str();
        node.ns.ip(["link", "set", dev, "address", CALICO_MAC]);
        node.ns.ip(["addr", "flush", "dev", dev]);
        node.ns
            .sysctl(&format!("net.ipv4.conf.{dev}.proxy_arp"), "1");
        node.ns.sysctl("net.ipv4.ip_forward", "1");
        node.ns.ip([
            "route",
            "add",
            &format!("{}/32", pod_host.ipv4),
            "dev",
            dev,
            "scope",
            "link",
        ]);
        pod_host.ns.ip([
            "route",
            "add",
            CALICO_GATEWAY,
            "dev",
            &pod_host.ifname,
            "scope",
            "link",
        ]);
        // The node has no default route in a lab, which proxy ARP would
        // need to answer for the gateway: the pod knows its MAC.
        pod_host.ns.ip([
            "neigh",
            "replace",
            CALICO_GATEWAY,
            "lladdr",
            CALICO_MAC,
            "dev",
            &pod_host.ifname,
            "nud",
            "permanent",
        ]);
        pod_host.ns.ip([
            "route",
            "add",
            "default",
            "via",
            CALICO_GATEWAY,
            "dev",
            &pod_host.ifname,
        ]);
        pod_host
    }

    /// Deletes every namespace now (also done on drop).
    pub fn teardown(&mut self) {
        // Kill-and-delete each; a failure is reported and the rest still go.
        for ns in self.namespaces.iter().rev() {
            ns.teardown();
        }
    }
}

/// Calico's gateway MAC on every pod veth of a node.
pub const CALICO_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// The gateway every Calico pod routes through (answered by proxy ARP).
pub const CALICO_GATEWAY: &str = "169.254.1.1";

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn configure(h: &Host) {
    h.ns.ip(["addr", "add", &format!("{}/24", h.ipv4), "dev", &h.ifname]);
    h.ns.ip([
        "addr",
        "add",
        &format!("{}/64", h.ipv6),
        "dev",
        &h.ifname,
        "nodad",
    ]);
    h.ns.ip(["link", "set", &h.ifname, "up"]);
}

impl Segment {
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Virtual IP number `n` of this segment: 10.o.s.(100+n).
    pub fn vip(&self, n: u8) -> Ipv4Addr {
        v4(self.octet, self.index, VIP_BASE + n)
    }

    /// IPv6 virtual IP number `n`: fd00:10:o:s::(100+n).
    pub fn vip6(&self, n: u8) -> Ipv6Addr {
        v6(self.octet, self.index, VIP_BASE + n)
    }

    /// e.g. "10.203.0.0/24".
    pub fn ipv4_net(&self) -> String {
        format!("{}/24", v4(self.octet, self.index, 0))
    }

    /// e.g. "fd00:10:203::/64".
    pub fn ipv6_net(&self) -> String {
        format!("{}/64", v6(self.octet, self.index, 0))
    }
}

impl Host {
    /// Its segment address, IPv4 or IPv6.
    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 {
            self.ipv6.into()
        } else {
            self.ipv4.into()
        }
    }

    /// Adds a route in this host's namespace: `dst` (CIDR) via `gw`.
    pub fn route(&self, dst: &str, gw: IpAddr) {
        self.ns.ip([
            "route",
            "add",
            dst,
            "via",
            &gw.to_string(),
            "dev",
            &self.ifname,
        ]);
    }
}

impl Deref for Host {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.ns
    }
}

/// 200 -> 0x200: the decimal digits read as hex, for readable IPv6 groups.
fn hexlike(n: u8) -> u16 {
    u16::from_str_radix(&n.to_string(), 16).expect("decimal digits are hex digits")
}

pub(crate) fn v4(octet: u8, seg: u8, n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, octet, seg, n)
}

pub(crate) fn v6(octet: u8, seg: u8, n: u8) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfd00,
        0x10,
        hexlike(octet),
        hexlike(seg),
        0,
        0,
        0,
        hexlike(n),
    )
}

fn mac(octet: u8, seg: u8, n: u8) -> String {
    format!("02:6e:70:{octet:02x}:{seg:02x}:{n:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addressing_is_readable() {
        assert_eq!(v4(200, 0, 3).to_string(), "10.200.0.3");
        assert_eq!(v6(200, 0, 3).to_string(), "fd00:10:200::3");
        assert_eq!(v6(255, 12, 101).to_string(), "fd00:10:255:12::101");
        assert_eq!(mac(200, 1, 101), "02:6e:70:c8:01:65");
    }
}
