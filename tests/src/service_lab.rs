//! The lab of incident 2: a client pod behind a node that DNATs a ClusterIP
//! to a server pod on another node.
//!
//! ```text
//! cpod -- node1 (nft DNAT SVC -> pod) -- node2 -- spod1 / spod2
//! ```
//!
//! node2 blackholes the pod CIDR, as a CNI like Calico does: once a pod's
//! veth is gone its packets vanish, with no ICMP.

use std::{net::SocketAddr, sync::Arc};

use crate::{Host, Lab, Netns};

pub struct ServiceLab {
    pub lab: Lab,
    pub node1: Arc<Netns>,
    pub node2: Arc<Netns>,
    pub spod1: Arc<Netns>,
    pub spod2: Arc<Netns>,
    /// The client pod's end of its veth.
    pub client: Host,
    /// node2's end of spod1's veth: deleting it is the pod's network going.
    pub node2_to_pod1: Host,
    /// The ClusterIP and the two pods behind it, all on `port`.
    pub svc: SocketAddr,
    pub pod1: SocketAddr,
    pub pod2: SocketAddr,
}

impl ServiceLab {
    /// Builds the topology with the Service pointing at pod1.
    pub fn build(label: &str, port: u16) -> ServiceLab {
        let mut lab = Lab::new(label);
        let cpod = lab.namespace("cpod");
        let node1 = lab.namespace("node1");
        let node2 = lab.namespace("node2");
        let spod1 = lab.namespace("spod1");
        let spod2 = lab.namespace("spod2");
        let (n1_cpod, client) = lab.connect(&node1, &cpod); // 10.o.0.1 / .0.2
        let (n1_n2, n2_n1) = lab.connect(&node1, &node2); // 10.o.1.1 / .1.2
        let (node2_to_pod1, s1) = lab.connect(&node2, &spod1); // 10.o.2.1 / .2.2
        let (n2_s2, s2) = lab.connect(&node2, &spod2); // 10.o.3.1 / .3.2
        let o = lab.octet();
        for n in [&node1, &node2] {
            n.sysctl("net.ipv4.ip_forward", "1");
        }
        client.route("default", n1_cpod.ipv4.into());
        s1.route("default", node2_to_pod1.ipv4.into());
        s2.route("default", n2_s2.ipv4.into());
        // node1 reaches the server pod CIDR through node2, node2 the client's.
        n1_n2.route(&format!("10.{o}.2.0/23"), n2_n1.ipv4.into());
        n2_n1.route(&format!("10.{o}.0.0/24"), n1_n2.ipv4.into());
        node2.ip(["route", "add", "blackhole", &format!("10.{o}.2.0/23")]);

        let svc: SocketAddr = format!("10.{o}.250.10:{port}")
            .parse()
            .expect("service address");
        let pod1 = SocketAddr::new(s1.ipv4.into(), port);
        let pod2 = SocketAddr::new(s2.ipv4.into(), port);
        // kube-proxy's DNAT on the client's node.
        node1.exec(["nft", "add table ip nat"]);
        node1.exec([
            "nft",
            "add chain ip nat prerouting { type nat hook prerouting priority -100; }",
        ]);
        let lab = ServiceLab {
            lab,
            node1,
            node2,
            spod1,
            spod2,
            client,
            node2_to_pod1,
            svc,
            pod1,
            pod2,
        };
        lab.add_nat_rule(pod1);
        lab
    }

    fn add_nat_rule(&self, target: SocketAddr) {
        self.node1.exec([
            "nft",
            &format!(
                "add rule ip nat prerouting ip daddr {} tcp dport {} dnat to {target}",
                self.svc.ip(),
                self.svc.port()
            ),
        ]);
    }

    /// pod1's network goes at once, silently (the CNI deletes its veth).
    pub fn cut_pod1_network(&self) {
        self.node2.ip(["link", "del", &self.node2_to_pod1.ifname]);
    }

    /// What `kubectl delete pod --force` of pod1 does: its network first,
    /// then its namespace.
    pub fn delete_pod1(&self) {
        self.cut_pod1_network();
        self.spod1.teardown();
    }

    /// kube-proxy (nftables mode) balances the Service over both pods: a
    /// random pick jumps to one endpoint chain, each with its own DNAT.
    pub fn balance_over_both(&self) {
        let n = &self.node1;
        n.exec(["nft", "flush chain ip nat prerouting"]);
        for (chain, pod) in [("ep1", self.pod1), ("ep2", self.pod2)] {
            n.exec(["nft", &format!("add chain ip nat {chain}")]);
            n.exec([
                "nft",
                &format!("add rule ip nat {chain} meta l4proto tcp dnat to {pod}"),
            ]);
        }
        n.exec([
            "nft",
            &format!(
                "add rule ip nat prerouting ip daddr {} tcp dport {} numgen random mod 2 vmap {{ 0 : jump ep1, 1 : jump ep2 }}",
                self.svc.ip(),
                self.svc.port()
            ),
        ]);
    }

    /// kube-proxy re-points the Service at pod2.
    pub fn repoint_to_pod2(&self) {
        self.node1.exec(["nft", "flush chain ip nat prerouting"]);
        self.add_nat_rule(self.pod2);
    }
}
