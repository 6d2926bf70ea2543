//! Network interfaces of the namespace netprobe runs in: the ones to attach
//! to now, and a stream of those that appear or go later.
//!
//! tc hooks go on the node's uplink-class interfaces only (see
//! [`Link::uplink_class`]): the wire's evidence (ARP and NDP claims, the
//! destination MAC a frame leaves with, forwarded traffic) is there, while
//! every local socket, pods' included, is seen at the root cgroup. A pod
//! veth gets no hook of its own unless named with `--iface`: each tcx link
//! costs the kernel an RCU grace period under RTNL, at attach and detach,
//! which would slow the node's pod creation.

use futures_util::TryStreamExt as _;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage},
};
use netlink_sys::{AsyncSocket as _, SocketAddr};
use tokio::sync::mpsc::UnboundedReceiver;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub up: bool,
    /// Ethernet-framed (Ethernet, veth, bridge, loopback): what the classifier parses.
    pub ethernet: bool,
    /// The kernel's link kind (`veth`, `bridge`, `bond`, `vxlan`...); empty
    /// for a physical NIC.
    pub kind: String,
    /// Enslaved to a bridge, bond or team (its controller gets the hook).
    pub controller: Option<u32>,
    /// For a veth: the namespace id (relative to this one) its peer is in.
    pub peer_netnsid: Option<i32>,
    pub loopback: bool,
}

/// Kinds of interface that carry the node's own traffic to the network.
const UPLINK_KINDS: &[&str] = &[
    "bridge",
    "bond",
    "team",
    "vlan",
    "macvlan",
    "macvtap",
    "ipvlan",
    "vxlan",
    "geneve",
    "gretap",
    "ip6gretap",
    "hsr",
    "macsec",
];

impl Link {
    pub fn from_message(msg: &LinkMessage) -> Option<Self> {
        let name = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })?;
        let mut kind = String::new();
        let mut controller = None;
        let mut peer_netnsid = None;
        for a in &msg.attributes {
            match a {
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            kind = match k {
                                InfoKind::Other(s) => s.clone(),
                                k => k.to_string(),
                            };
                        }
                    }
                }
                LinkAttribute::Controller(c) => controller = Some(*c),
                LinkAttribute::LinkNetNsId(id) => peer_netnsid = Some(*id),
                _ => {}
            }
        }
        Some(Self {
            index: msg.header.index,
            name,
            up: msg.header.flags.contains(LinkFlags::Up),
            ethernet: matches!(
                msg.header.link_layer_type,
                LinkLayerType::Ether | LinkLayerType::Loopback
            ),
            kind,
            controller,
            peer_netnsid,
            loopback: msg.header.link_layer_type == LinkLayerType::Loopback,
        })
    }

    /// Whether the interface is one of the node's uplinks, decided from its
    /// kind, never its name: a physical NIC (no kind), a bond, bridge,
    /// VLAN, macvlan/ipvlan or an Ethernet overlay (vxlan, geneve). A veth
    /// is an uplink only when it carries a global address of this
    /// namespace (`addressed`): a container's or a kind node's eth0, a
    /// lab's cable; a pod's veth has none (Calico routes to it, flannel
    /// enslaves it to its bridge). Ports of a bridge or bond are left to
    /// their controller, so a frame is not counted once per port.
    /// Loopback and devices without a link layer are never hooked (their
    /// sockets are seen at the root cgroup).
    pub fn uplink_class(&self, addressed: bool) -> bool {
        if !self.up || !self.ethernet || self.loopback || self.controller.is_some() {
            return false;
        }
        match self.kind.as_str() {
            "" => true,
            "veth" => addressed,
            k => UPLINK_KINDS.contains(&k),
        }
    }

    /// A pod's veth: its peer is in another namespace and it is no uplink.
    pub fn pod_veth(&self, addressed: bool) -> bool {
        self.kind == "veth" && self.peer_netnsid.is_some() && !addressed
    }
}

/// Interfaces of this namespace with a global (not link-local) address.
pub async fn addressed() -> anyhow::Result<std::collections::HashSet<u32>> {
    use netlink_packet_route::address::AddressAttribute;
    let (conn, handle, _) = rtnetlink::new_connection()?;
    let task = tokio::spawn(conn);
    let mut out = std::collections::HashSet::new();
    let mut stream = handle.address().get().execute();
    while let Some(msg) = stream.try_next().await? {
        let global = msg.attributes.iter().any(|a| match a {
            AddressAttribute::Address(ip) => match ip {
                std::net::IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_loopback(),
                std::net::IpAddr::V6(v6) => !v6.is_unicast_link_local() && !v6.is_loopback(),
            },
            _ => false,
        });
        if global {
            out.insert(msg.header.index);
        }
    }
    task.abort();
    Ok(out)
}

/// A change seen on the link multicast group.
#[derive(Debug)]
pub enum LinkChange {
    New(Link),
    Gone(u32),
}

/// Lists the links of this namespace.
pub async fn list() -> anyhow::Result<Vec<Link>> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    let task = tokio::spawn(conn);
    let mut links = Vec::new();
    let mut stream = handle.link().get().execute();
    while let Some(msg) = stream.try_next().await? {
        links.extend(Link::from_message(&msg));
    }
    task.abort();
    Ok(links)
}

/// Subscribes to link notifications; the returned task must be kept alive.
pub fn watch() -> anyhow::Result<(tokio::task::JoinHandle<()>, UnboundedReceiver<LinkChange>)> {
    let (mut conn, _handle, mut messages) = rtnetlink::new_connection()?;
    conn.socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, rtnetlink::constants::RTMGRP_LINK))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let conn_task = tokio::spawn(conn);
        while let Some((msg, _)) = futures_util::StreamExt::next(&mut messages).await {
            if let Some(change) = change_of(msg)
                && tx.send(change).is_err()
            {
                break;
            }
        }
        conn_task.abort();
    });
    Ok((task, rx))
}

fn change_of(msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<LinkChange> {
    match msg.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
            Link::from_message(&m).map(LinkChange::New)
        }
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => {
            Some(LinkChange::Gone(m.header.index))
        }
        _ => None,
    }
}
