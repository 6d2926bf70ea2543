//! Network interfaces of the namespace netprobe runs in: the ones to attach
//! to now, and a stream of those that appear or go later (pod veths).

use futures_util::TryStreamExt as _;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage},
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
}

impl Link {
    pub fn from_message(msg: &LinkMessage) -> Option<Self> {
        let name = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })?;
        Some(Self {
            index: msg.header.index,
            name,
            up: msg.header.flags.contains(LinkFlags::Up),
            ethernet: matches!(
                msg.header.link_layer_type,
                LinkLayerType::Ether | LinkLayerType::Loopback
            ),
        })
    }
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
