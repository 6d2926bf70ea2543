//! `ip route get DST` over rtnetlink: the route the kernel would use now,
//! rules and all, rather than a guess from a table dump.

use std::net::IpAddr;

use futures_util::TryStreamExt as _;
use netlink_packet_route::{
    AddressFamily,
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia},
};

use super::{NETLINK_TIMEOUT, RouteInfo, Rtnl, link_name, netlink_errno};

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("cannot open an rtnetlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("route lookup for {ip} failed: {source}")]
    Lookup {
        ip: IpAddr,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("the kernel did not answer the route lookup for {0} within {NETLINK_TIMEOUT:?}")]
    Timeout(IpAddr),
}

pub type Result<T> = std::result::Result<T, RouteError>;

/// The kernel's route to `ip` (RTM_GETROUTE for that one destination).
///
/// A destination without a usable route is an answer, not an error: the
/// kernel NACKs those lookups, and the errno says why (fib_props in
/// net/ipv4/fib_semantics.c; IPv6 uses the same codes). No route at all
/// (ENETUNREACH) and an `unreachable` route (EHOSTUNREACH) both come back as
/// kind `unreachable`, `prohibit` routes as EACCES, `blackhole` ones as
/// EINVAL. `Ok(None)` only if the kernel answered with nothing.
pub async fn route_to(ip: IpAddr) -> Result<Option<RouteInfo>> {
    let rtnl = Rtnl::open().map_err(RouteError::Socket)?;
    let mut request = RouteMessage::default();
    let (family, prefix) = match ip {
        IpAddr::V4(_) => (AddressFamily::Inet, 32),
        IpAddr::V6(_) => (AddressFamily::Inet6, 128),
    };
    request.header.address_family = family;
    request.header.destination_prefix_length = prefix;
    request
        .attributes
        .push(RouteAttribute::Destination(RouteAddress::from(ip)));
    // rtnetlink 0.24 sends NLM_F_REQUEST alone (no dump) when the message
    // carries a destination: exactly `ip route get`.
    let mut answers = rtnl.handle.route().get(request).execute();
    let first = tokio::time::timeout(NETLINK_TIMEOUT, answers.try_next())
        .await
        .map_err(|_| RouteError::Timeout(ip))?;
    let msg = match first {
        Ok(Some(msg)) => msg,
        Ok(None) => return Ok(None),
        Err(e) => {
            return match netlink_errno(&e).and_then(reject_kind) {
                Some(kind) => Ok(Some(RouteInfo {
                    dst: ip,
                    dev: None,
                    gateway: None,
                    kind: kind.to_string(),
                })),
                None => Err(RouteError::Lookup { ip, source: e }),
            };
        }
    };
    let mut info = info_of(ip, &msg);
    if let Some(oif) = oif_of(&msg) {
        let link = tokio::time::timeout(NETLINK_TIMEOUT, rtnl.link_by_index(oif))
            .await
            .map_err(|_| RouteError::Timeout(ip))?
            .map_err(|source| RouteError::Lookup { ip, source })?;
        info.dev = Some(
            link.as_ref()
                .and_then(link_name)
                .unwrap_or_else(|| format!("if{oif}")),
        );
    }
    Ok(Some(info))
}

/// The route kind a lookup NACK stands for.
pub fn reject_kind(errno: i32) -> Option<&'static str> {
    match errno {
        libc::ENETUNREACH | libc::EHOSTUNREACH => Some("unreachable"),
        libc::EACCES => Some("prohibit"),
        libc::EINVAL => Some("blackhole"),
        _ => None,
    }
}

/// `ip route` spelling of RTN_* types.
pub fn kind_name(kind: RouteType) -> String {
    match kind {
        RouteType::Unspec => "unspec".into(),
        RouteType::Unicast => "unicast".into(),
        RouteType::Local => "local".into(),
        RouteType::Broadcast => "broadcast".into(),
        RouteType::Anycast => "anycast".into(),
        RouteType::Multicast => "multicast".into(),
        RouteType::BlackHole => "blackhole".into(),
        RouteType::Unreachable => "unreachable".into(),
        RouteType::Prohibit => "prohibit".into(),
        RouteType::Throw => "throw".into(),
        RouteType::Nat => "nat".into(),
        RouteType::ExternalResolve => "xresolve".into(),
        other => format!("type{}", u8::from(other)),
    }
}

/// Everything but the device name, which needs another request.
fn info_of(dst: IpAddr, msg: &RouteMessage) -> RouteInfo {
    let mut gateway = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Gateway(a) => gateway = gateway.or(address(a)),
            // IPv4 routes with an IPv6 next hop (RFC 5549) say RTA_VIA.
            RouteAttribute::Via(RouteVia::Inet(a)) => gateway = gateway.or(Some(IpAddr::V4(*a))),
            RouteAttribute::Via(RouteVia::Inet6(a)) => gateway = gateway.or(Some(IpAddr::V6(*a))),
            // A lookup answers with the chosen hop, but be ready for a list.
            RouteAttribute::MultiPath(hops) => {
                gateway = gateway.or_else(|| {
                    hops.iter()
                        .flat_map(|h| &h.attributes)
                        .find_map(|a| match a {
                            RouteAttribute::Gateway(a) => address(a),
                            _ => None,
                        })
                })
            }
            _ => {}
        }
    }
    RouteInfo {
        dst,
        dev: None,
        gateway,
        kind: kind_name(msg.header.kind),
    }
}

fn oif_of(msg: &RouteMessage) -> Option<u32> {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        })
        .or_else(|| {
            msg.attributes.iter().find_map(|a| match a {
                RouteAttribute::MultiPath(hops) => hops.first().map(|h| h.interface_index),
                _ => None,
            })
        })
}

fn address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn nacks_are_route_kinds() {
        assert_eq!(reject_kind(libc::ENETUNREACH), Some("unreachable"));
        assert_eq!(reject_kind(libc::EHOSTUNREACH), Some("unreachable"));
        assert_eq!(reject_kind(libc::EACCES), Some("prohibit"));
        assert_eq!(reject_kind(libc::EINVAL), Some("blackhole"));
        assert_eq!(reject_kind(libc::ENOBUFS), None);
    }

    #[test]
    fn gateway_and_kind_from_an_answer() {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                Ipv4Addr::new(10, 50, 1, 1),
            )));
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(
                10, 99, 0, 7,
            ))));
        msg.attributes.push(RouteAttribute::Oif(4));
        let info = info_of("10.50.1.1".parse().unwrap(), &msg);
        assert_eq!(info.kind, "unicast");
        assert_eq!(info.gateway, Some("10.99.0.7".parse().unwrap()));
        assert_eq!(oif_of(&msg), Some(4));

        msg.header.kind = RouteType::Local;
        msg.attributes
            .retain(|a| !matches!(a, RouteAttribute::Gateway(_)));
        let info = info_of("10.99.0.1".parse().unwrap(), &msg);
        assert_eq!((info.kind.as_str(), info.gateway), ("local", None));
        assert_eq!(kind_name(RouteType::Other(42)), "type42");
    }
}
