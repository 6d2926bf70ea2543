//! A node with a pod behind it and a server past its uplink:
//!
//! ```text
//! pod --veth (gateway MAC ee:ee:ee:ee:ee:ee)-- node --bridge-- server
//! ```
//!
//! netprobe runs in the node's namespace, as on a real node; the server is
//! another "machine" (its own namespace) that routes the pod network back
//! through the node.

use crate::{Host, Lab};

pub struct PodLab {
    pub lab: Lab,
    pub node: Host,
    pub server: Host,
    pub pod: Host,
}

impl PodLab {
    pub fn build(label: &str) -> PodLab {
        let mut lab = Lab::new(label);
        let seg = lab.bridge_segment(2);
        let (node, server) = (seg.host(0).clone(), seg.host(1).clone());
        let pod_ns = lab.namespace("pod");
        let pod = lab.pod_behind(&node, &pod_ns);
        let o = pod.ipv4.octets();
        server.route(
            &format!("{}.{}.{}.0/24", o[0], o[1], o[2]),
            node.ipv4.into(),
        );
        PodLab {
            lab,
            node,
            server,
            pod,
        }
    }
}
