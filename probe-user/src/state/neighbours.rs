//! The neighbour table (ARP and NDP cache) over rtnetlink: what `ip neigh
//! show` prints, with how long ago each entry changed.

use std::{collections::HashMap, net::IpAddr};

use futures_util::TryStreamExt as _;
use netlink_packet_route::{
    AddressFamily,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
};

use super::{NETLINK_TIMEOUT, NeighbourEntry, Rtnl};
use crate::{model::event::format_mac, model::names::nud_state};

#[derive(Debug, thiserror::Error)]
pub enum NeighbourError {
    #[error("cannot open an rtnetlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("neighbour table dump failed: {0}")]
    Dump(#[source] rtnetlink::Error),
    #[error("interface list dump failed: {0}")]
    Links(#[source] rtnetlink::Error),
    #[error("no interface named {0:?} in this network namespace")]
    NoSuchDevice(String),
    #[error("the kernel did not answer the {0} within {NETLINK_TIMEOUT:?}")]
    Timeout(&'static str),
}

pub type Result<T> = std::result::Result<T, NeighbourError>;

/// NDA_CACHEINFO ages are clock_t ticks at USER_HZ, which is 100 on Linux.
const MS_PER_TICK: u64 = 10;

/// The entry for `ip` (on `dev`, if given). Without `dev`, and with entries
/// on several interfaces, one with a usable link-layer address wins over an
/// INCOMPLETE/FAILED one.
pub async fn lookup(ip: IpAddr, dev: Option<&str>) -> Result<Option<NeighbourEntry>> {
    let rtnl = Rtnl::open().map_err(NeighbourError::Socket)?;
    let names = link_names(&rtnl).await?;
    if let Some(dev) = dev
        && !names.values().any(|n| n == dev)
    {
        return Err(NeighbourError::NoSuchDevice(dev.to_string()));
    }
    let family = match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    let mut found: Vec<NeighbourEntry> = dump(&rtnl, family, &names)
        .await?
        .into_iter()
        .filter(|e| e.ip == ip && dev.is_none_or(|d| e.dev == d))
        .collect();
    // Stable: among equals, the kernel's (ifindex) order decides.
    found.sort_by_key(|e| {
        e.mac.is_none() || e.state.contains("FAILED") || e.state.contains("INCOMPLETE")
    });
    Ok(found.into_iter().next())
}

/// Every IPv4 and IPv6 neighbour entry of the namespace, NOARP ones
/// (multicast, loopback) included.
pub async fn all() -> Result<Vec<NeighbourEntry>> {
    let rtnl = Rtnl::open().map_err(NeighbourError::Socket)?;
    let names = link_names(&rtnl).await?;
    dump(&rtnl, AddressFamily::Unspec, &names).await
}

async fn link_names(rtnl: &Rtnl) -> Result<HashMap<u32, String>> {
    tokio::time::timeout(NETLINK_TIMEOUT, rtnl.link_names())
        .await
        .map_err(|_| NeighbourError::Timeout("interface list dump"))?
        .map_err(NeighbourError::Links)
}

async fn dump(
    rtnl: &Rtnl,
    family: AddressFamily,
    names: &HashMap<u32, String>,
) -> Result<Vec<NeighbourEntry>> {
    let collect = async {
        let mut out = Vec::new();
        let mut stream = rtnl
            .handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute();
        while let Some(msg) = stream.try_next().await? {
            out.extend(entry_of(&msg, names));
        }
        Ok(out)
    };
    tokio::time::timeout(NETLINK_TIMEOUT, collect)
        .await
        .map_err(|_| NeighbourError::Timeout("neighbour table dump"))?
        .map_err(NeighbourError::Dump)
}

/// One kernel message to an entry; `None` for non-IP families (bridge FDB)
/// or a message without a destination.
pub fn entry_of(msg: &NeighbourMessage, names: &HashMap<u32, String>) -> Option<NeighbourEntry> {
    let mut ip = None;
    let mut mac = None;
    let mut cache = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(IpAddr::V4(*a)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                ip = Some(IpAddr::V6(*a))
            }
            // Zero-length for INCOMPLETE entries on some paths: treat as absent.
            NeighbourAttribute::LinkLayerAddress(bytes) if !bytes.is_empty() => {
                mac = Some(format_mac(bytes))
            }
            NeighbourAttribute::CacheInfo(info) => cache = Some(*info),
            _ => {}
        }
    }
    let index = msg.header.ifindex;
    // NUD_* fits in a byte; the u16 is only the crate's representation.
    let state = u16::from(msg.header.state) as u8;
    Some(NeighbourEntry {
        ip: ip?,
        dev: names
            .get(&index)
            .cloned()
            .unwrap_or_else(|| format!("if{index}")),
        mac,
        state: nud_state(state),
        updated_ago_ms: cache.map(|c| u64::from(c.updated) * MS_PER_TICK),
        confirmed_ago_ms: cache.map(|c| u64::from(c.confirmed) * MS_PER_TICK),
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use netlink_packet_core::{Emitable as _, Parseable as _};
    use netlink_packet_route::neighbour::{NeighbourCacheInfo, NeighbourState};

    use super::*;

    fn message(state: NeighbourState, lladdr: Option<&[u8]>) -> NeighbourMessage {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = 3;
        msg.header.state = state;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                Ipv4Addr::new(10, 1, 0, 100),
            )));
        if let Some(mac) = lladdr {
            msg.attributes
                .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        }
        msg
    }

    #[test]
    fn entry_from_kernel_bytes() {
        // Serialise and re-parse so NDA_CACHEINFO goes through the real
        // wire layout (u32 confirmed, used, updated, refcnt).
        let mut msg = message(NeighbourState::Stale, Some(&[0x02, 0x6E, 0x70, 0, 1, 2]));
        let mut bytes = vec![0u8; msg.buffer_len()];
        msg.emit(&mut bytes);
        let mut cache = vec![0u8; 4 + 16];
        cache[0..2].copy_from_slice(&20u16.to_ne_bytes());
        cache[2..4].copy_from_slice(&3u16.to_ne_bytes()); // NDA_CACHEINFO
        for (i, v) in [250u32, 7, 1234, 1].iter().enumerate() {
            cache[4 + 4 * i..8 + 4 * i].copy_from_slice(&v.to_ne_bytes());
        }
        bytes.extend_from_slice(&cache);
        // An attribute this code has never heard of is skipped.
        bytes.extend_from_slice(&[8, 0, 0x7f, 0, 1, 2, 3, 4]);
        msg = NeighbourMessage::parse(&bytes[..]).unwrap();

        let names = HashMap::from([(3, "eth0".to_string())]);
        let e = entry_of(&msg, &names).unwrap();
        assert_eq!(e.ip, IpAddr::V4(Ipv4Addr::new(10, 1, 0, 100)));
        assert_eq!(e.dev, "eth0");
        assert_eq!(e.mac.as_deref(), Some("02:6e:70:00:01:02"));
        assert_eq!(e.state, "STALE");
        assert_eq!(e.updated_ago_ms, Some(12_340));
        assert_eq!(e.confirmed_ago_ms, Some(2_500));
        let _ = NeighbourCacheInfo::parse(&cache[4..]).unwrap();
    }

    #[test]
    fn failed_entry_has_no_mac_and_unknown_ifindex_gets_a_name() {
        let msg = message(NeighbourState::Failed, Some(&[]));
        let e = entry_of(&msg, &HashMap::new()).unwrap();
        assert_eq!(e.mac, None);
        assert_eq!(e.state, "FAILED");
        assert_eq!(e.dev, "if3");
        assert_eq!(e.updated_ago_ms, None);
    }
}
