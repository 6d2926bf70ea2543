//! Where this node's netfilter NAT sends a Service: the nftables ruleset
//! (iptables-nft rules are nftables rules underneath) dumped over
//! nfnetlink, read-only. Answers two questions about a NATed flow: does a
//! rule still match the Service address, and does any DNAT rule still
//! translate to the flow's target?
//!
//! Rules are read expression by expression: `cmp` data (what a rule
//! matches), `immediate` data (what a native `dnat to` loads), the `nat`
//! expression's type, and the `DNAT` target of iptables-nft with its range.
//! A DNAT that takes its address from a map is not followed; the answer
//! says so (`incomplete`) instead of claiming the target is gone.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use super::conntrack::{frames, sequence_number};
use crate::model::facts::Translation;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLA_TYPE_MASK: u16 = 0x3fff;

const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
/// NF_DROP as a verdict code.
const NF_DROP: i32 = 0;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_NAT_TYPE: u16 = 1;
const NFT_NAT_DNAT: u32 = 1;
const NFTA_LOOKUP_DREG: u16 = 3;
const NFTA_TARGET_NAME: u16 = 1;
const NFTA_TARGET_REV: u16 = 2;
const NFTA_TARGET_INFO: u16 = 3;

/// A ruleset dump of a busy node is a few MiB at most; give up past this.
const TOTAL_TIMEOUT: Duration = Duration::from_secs(2);
/// DNAT targets listed at most (a node with thousands of endpoints).
const MAX_TARGETS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum NatRulesError {
    #[error("cannot open an nfnetlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("reading the nftables ruleset needs CAP_NET_ADMIN: {0}")]
    Permission(#[source] std::io::Error),
    #[error("reading the nftables ruleset: {0}")]
    Io(#[source] std::io::Error),
    #[error("the kernel refused the ruleset dump: {0}")]
    Kernel(#[source] std::io::Error),
    #[error("the ruleset dump took longer than {TOTAL_TIMEOUT:?}")]
    Timeout,
}

/// What one rule holds that matters here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// `ip nat prerouting` style.
    pub location: String,
    /// Data the rule compares packets with.
    pub matches: Vec<Vec<u8>>,
    /// Addresses a DNAT in this rule translates to.
    pub dnat_to: Vec<IpAddr>,
    /// The rule does DNAT.
    pub dnat: bool,
    /// The rule's DNAT takes its address from a map lookup.
    pub from_map: bool,
    /// The rule's verdict is drop.
    pub drops: bool,
    /// The rule rejects (drops and answers: an ICMP error or a TCP RST).
    pub rejects: bool,
}

/// Reads the ruleset of this thread's namespace. Blocking.
pub fn read() -> Result<Vec<Rule>, NatRulesError> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NatRulesError::Socket)?;
    socket.bind_auto().map_err(NatRulesError::Socket)?;
    let seq = sequence_number();
    socket
        .send(&request(seq), 0)
        .map_err(|e| io_error(e, false))?;
    let deadline = Instant::now() + TOTAL_TIMEOUT;
    let mut rules = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !readable(&socket, left)? {
            return Err(NatRulesError::Timeout);
        }
        let n = socket
            .recv(&mut &mut buf[..], libc::MSG_DONTWAIT)
            .map_err(|e| io_error(e, false))?;
        for (ty, _, s, payload) in frames(&buf[..n]) {
            if s != seq {
                continue;
            }
            match ty {
                NLMSG_DONE => return Ok(rules),
                NLMSG_ERROR => {
                    let code = payload
                        .get(..4)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(0);
                    if code == 0 {
                        return Ok(rules);
                    }
                    return Err(io_error(std::io::Error::from_raw_os_error(-code), true));
                }
                t if t == (NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWRULE) => {
                    if let Some(rule) = parse_rule(payload) {
                        rules.push(rule);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The Service's translation as the rules show it, for `service` NATed to
/// `target`.
pub fn translation(rules: &[Rule], service: SocketAddr, target: SocketAddr) -> Translation {
    let svc = ip_bytes(service.ip());
    let mut t = Translation {
        target: Some(target),
        ..Default::default()
    };
    for r in rules {
        if r.matches.contains(&svc) && !t.service_rules.contains(&r.location) {
            t.service_rules.push(r.location.clone());
        }
        if !r.dnat {
            continue;
        }
        t.nat_rules += 1;
        t.incomplete |= r.from_map && r.dnat_to.is_empty();
        for ip in &r.dnat_to {
            if *ip == target.ip() && !t.target_rules.contains(&r.location) {
                t.target_rules.push(r.location.clone());
            }
            if !t.dnat_targets.contains(ip) && t.dnat_targets.len() < MAX_TARGETS {
                t.dnat_targets.push(*ip);
            }
        }
    }
    t
}

/// Rules that drop and match the flow's addresses or ports (either
/// direction), as `family table chain: matches ...`; at most 8.
pub fn drop_rules(rules: &[Rule], src: SocketAddr, dst: SocketAddr) -> Vec<String> {
    let wanted: Vec<(Vec<u8>, String)> = vec![
        (ip_bytes(dst.ip()), dst.ip().to_string()),
        (ip_bytes(src.ip()), src.ip().to_string()),
        (
            dst.port().to_be_bytes().to_vec(),
            format!("port {}", dst.port()),
        ),
        (
            src.port().to_be_bytes().to_vec(),
            format!("port {}", src.port()),
        ),
    ];
    let mut out: Vec<String> = Vec::new();
    for r in rules.iter().filter(|r| r.drops) {
        let hits: Vec<&str> = wanted
            .iter()
            .filter(|(bytes, _)| r.matches.contains(bytes))
            .map(|(_, name)| name.as_str())
            .collect();
        if hits.is_empty() || out.len() >= 8 {
            continue;
        }
        let verb = if r.rejects { "rejects" } else { "drops" };
        let line = format!("{}: {verb} what matches {}", r.location, hits.join(" and "));
        if !out.contains(&line) {
            out.push(line);
        }
    }
    out
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn request(seq: u32) -> Vec<u8> {
    // nlmsghdr + nfgenmsg (family NFPROTO_UNSPEC: every family, version 0).
    let len = 16 + 4;
    let mut f = vec![0u8; len];
    f[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    f[4..6].copy_from_slice(&(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETRULE).to_ne_bytes());
    f[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    f[8..12].copy_from_slice(&seq.to_ne_bytes());
    f
}

/// Netlink attributes of `data`: (type without flags, payload).
fn attrs(data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        let rest = data.get(off..)?;
        if rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let ty = u16::from_ne_bytes([rest[2], rest[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > rest.len() {
            return None;
        }
        off += (len + 3) & !3;
        Some((ty, &rest[4..len]))
    })
}

fn attr(data: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(data).find(|(t, _)| *t == ty).map(|(_, v)| v)
}

fn string(data: &[u8]) -> String {
    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

fn family_name(f: u8) -> &'static str {
    match f {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => "unknown",
    }
}

/// One NEWRULE message (nfgenmsg, then attributes).
pub fn parse_rule(payload: &[u8]) -> Option<Rule> {
    let family = *payload.first()?;
    let body = payload.get(4..)?;
    let mut rule = Rule::default();
    let table = string(attr(body, NFTA_RULE_TABLE)?);
    let chain = string(attr(body, NFTA_RULE_CHAIN)?);
    rule.location = format!("{} {table} {chain}", family_name(family));
    let mut loaded: Vec<IpAddr> = Vec::new();
    for (ty, elem) in attrs(attr(body, NFTA_RULE_EXPRESSIONS).unwrap_or_default()) {
        if ty != NFTA_LIST_ELEM {
            continue;
        }
        let name = attr(elem, NFTA_EXPR_NAME).map(string).unwrap_or_default();
        let data = attr(elem, NFTA_EXPR_DATA).unwrap_or_default();
        match name.as_str() {
            "cmp" => {
                if let Some(v) = attr(data, NFTA_CMP_DATA).and_then(|d| attr(d, NFTA_DATA_VALUE)) {
                    rule.matches.push(v.to_vec());
                }
            }
            "immediate" => {
                let value = attr(data, NFTA_IMMEDIATE_DATA);
                if let Some(ip) = value.and_then(|d| attr(d, NFTA_DATA_VALUE)).and_then(ip_of) {
                    loaded.push(ip);
                }
                let verdict = value
                    .and_then(|d| attr(d, NFTA_DATA_VERDICT))
                    .and_then(|v| attr(v, NFTA_VERDICT_CODE))
                    .and_then(|c| c.get(..4))
                    .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                rule.drops |= verdict == Some(NF_DROP);
            }
            // `reject`: the packet is dropped (NF_DROP) after the answer.
            "reject" => {
                rule.drops = true;
                rule.rejects = true;
            }
            "lookup" => rule.from_map |= attr(data, NFTA_LOOKUP_DREG).is_some(),
            "nat" => {
                let ty = attr(data, NFTA_NAT_TYPE)
                    .and_then(|v| v.get(..4))
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                rule.dnat |= ty == Some(NFT_NAT_DNAT);
            }
            "target" if attr(data, NFTA_TARGET_NAME).map(string).as_deref() == Some("DNAT") => {
                rule.dnat = true;
                let rev = attr(data, NFTA_TARGET_REV)
                    .and_then(|v| v.get(..4))
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                if let Some(ip) =
                    attr(data, NFTA_TARGET_INFO).and_then(|info| xt_dnat_min(info, rev, family))
                {
                    rule.dnat_to.push(ip);
                }
            }
            _ => {}
        }
    }
    if rule.dnat {
        rule.dnat_to.extend(loaded);
    }
    Some(rule)
}

fn ip_of(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))),
        16 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(v);
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

/// The lowest address of an iptables DNAT target's range: revision 0 is
/// `nf_nat_ipv4_multi_range_compat` (rangesize, flags, min_ip), later ones
/// `nf_nat_range{,2}` (flags, min_addr as 16 bytes).
fn xt_dnat_min(info: &[u8], rev: u32, family: u8) -> Option<IpAddr> {
    if rev == 0 {
        return ip_of(info.get(8..12)?);
    }
    if family == 10 {
        ip_of(info.get(4..20)?)
    } else {
        ip_of(info.get(4..8)?)
    }
}

fn readable(socket: &Socket, timeout: Duration) -> Result<bool, NatRulesError> {
    let mut pfd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    for _ in 0..16 {
        // SAFETY: one valid pollfd, living across the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc >= 0 {
            return Ok(rc > 0);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(NatRulesError::Io(err));
        }
    }
    Ok(false)
}

fn io_error(e: std::io::Error, from_kernel: bool) -> NatRulesError {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => NatRulesError::Permission(e),
        _ if from_kernel => NatRulesError::Kernel(e),
        _ => NatRulesError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(ty: u16, payload: &[u8]) -> Vec<u8> {
        let len = 4 + payload.len();
        let mut v = Vec::new();
        v.extend((len as u16).to_ne_bytes());
        v.extend(ty.to_ne_bytes());
        v.extend(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn nested(ty: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        nla(ty | 0x8000, &parts.concat())
    }

    fn expr(name: &str, data: Vec<Vec<u8>>) -> Vec<u8> {
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        nested(
            NFTA_LIST_ELEM,
            &[nla(NFTA_EXPR_NAME, &n), nested(NFTA_EXPR_DATA, &data)],
        )
    }

    /// A `cmp` expression against `data`.
    fn cmp(data: &[u8]) -> Vec<u8> {
        expr(
            "cmp",
            vec![nested(NFTA_CMP_DATA, &[nla(NFTA_DATA_VALUE, data)])],
        )
    }

    fn rule(family: u8, exprs: Vec<Vec<u8>>) -> Vec<u8> {
        let mut p = vec![family, 0, 0, 0];
        p.extend(nla(NFTA_RULE_TABLE, b"nat\0"));
        p.extend(nla(NFTA_RULE_CHAIN, b"prerouting\0"));
        p.extend(nested(NFTA_RULE_EXPRESSIONS, &exprs));
        p
    }

    /// `ip daddr 10.96.0.10 tcp dport 8000 dnat to 10.244.2.7:8000`, as
    /// nft encodes it (payload loads elided: they carry no addresses).
    fn native_dnat(target: [u8; 4]) -> Vec<u8> {
        rule(
            2,
            vec![
                cmp(&[10, 96, 0, 10]),
                expr(
                    "immediate",
                    vec![nested(
                        NFTA_IMMEDIATE_DATA,
                        &[nla(NFTA_DATA_VALUE, &target)],
                    )],
                ),
                expr("nat", vec![nla(NFTA_NAT_TYPE, &NFT_NAT_DNAT.to_be_bytes())]),
            ],
        )
    }

    #[test]
    fn native_dnat_rule_is_read() {
        let r = parse_rule(&native_dnat([10, 244, 2, 7])).unwrap();
        assert_eq!(r.location, "ip nat prerouting");
        assert!(r.dnat);
        assert_eq!(r.dnat_to, vec!["10.244.2.7".parse::<IpAddr>().unwrap()]);
        let t = translation(
            &[r],
            "10.96.0.10:8000".parse().unwrap(),
            "10.244.2.7:8000".parse().unwrap(),
        );
        assert!(t.target_present() && !t.target_removed());
    }

    #[test]
    fn repointed_service_shows_the_old_target_removed() {
        let r = parse_rule(&native_dnat([10, 244, 3, 9])).unwrap();
        let t = translation(
            &[r],
            "10.96.0.10:8000".parse().unwrap(),
            "10.244.2.7:8000".parse().unwrap(),
        );
        assert!(t.target_removed(), "{t:?}");
        assert_eq!(
            t.dnat_targets,
            vec!["10.244.3.9".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn iptables_nft_dnat_target_is_read() {
        // nf_nat_ipv4_multi_range_compat: rangesize 1, flags, min, max, ports.
        let mut info = 1u32.to_ne_bytes().to_vec();
        info.extend(3u32.to_ne_bytes());
        info.extend([10, 244, 2, 7, 10, 244, 2, 7, 0x1f, 0x40, 0x1f, 0x40]);
        let r = parse_rule(&rule(
            2,
            vec![expr(
                "target",
                vec![
                    nla(NFTA_TARGET_NAME, b"DNAT\0"),
                    nla(NFTA_TARGET_REV, &0u32.to_be_bytes()),
                    nla(NFTA_TARGET_INFO, &info),
                ],
            )],
        ))
        .unwrap();
        assert!(r.dnat);
        assert_eq!(r.dnat_to, vec!["10.244.2.7".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn dnat_from_a_map_makes_absence_unprovable() {
        let r = parse_rule(&rule(
            2,
            vec![
                cmp(&[10, 96, 0, 10]),
                expr("lookup", vec![nla(NFTA_LOOKUP_DREG, &1u32.to_be_bytes())]),
                expr("nat", vec![nla(NFTA_NAT_TYPE, &NFT_NAT_DNAT.to_be_bytes())]),
            ],
        ))
        .unwrap();
        let t = translation(
            &[r],
            "10.96.0.10:8000".parse().unwrap(),
            "10.244.2.7:8000".parse().unwrap(),
        );
        assert!(t.incomplete && !t.target_removed(), "{t:?}");
    }

    #[test]
    fn a_drop_rule_matching_the_port_is_found() {
        let verdict = nested(
            NFTA_DATA_VERDICT,
            &[nla(NFTA_VERDICT_CODE, &NF_DROP.to_be_bytes())],
        );
        let r = parse_rule(&rule(
            1,
            vec![
                cmp(&9443u16.to_be_bytes()),
                expr("immediate", vec![nested(NFTA_IMMEDIATE_DATA, &[verdict])]),
            ],
        ))
        .unwrap();
        assert!(r.drops && !r.dnat);
        let found = drop_rules(
            &[r],
            "10.1.0.5:40000".parse().unwrap(),
            "10.0.0.2:9443".parse().unwrap(),
        );
        assert_eq!(
            found,
            vec!["inet nat prerouting: drops what matches port 9443"]
        );
    }

    #[test]
    fn garbage_is_not_a_rule() {
        assert_eq!(parse_rule(&[]), None);
        assert_eq!(parse_rule(&[2, 0, 0, 0, 0xff, 0xff, 1]), None);
    }
}
