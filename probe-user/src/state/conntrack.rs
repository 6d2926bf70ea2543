//! The conntrack table over ctnetlink (NETLINK_NETFILTER): what
//! `conntrack -L` lists, one flow's entry, and the `conntrack -D` command
//! that deletes exactly that entry.
//!
//! Blocking on purpose (callers use `spawn_blocking`), but bounded: every
//! read waits at most [`READ_TIMEOUT`], a dump stops at NLMSG_DONE or
//! [`MAX_ENTRIES`], and the whole exchange ends by [`TOTAL_TIMEOUT`].

use std::{
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use netlink_packet_core::{Emitable as _, ParseableParametrized as _};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    conntrack::{
        ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple,
        Protocol, Tuple,
    },
};
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};
use serde::{Deserialize, Serialize};

use super::ConntrackEntry;

/// Longest wait for any one answer from the kernel.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a whole dump may take.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(10);
/// A table larger than this is not read to the end (nf_conntrack_max is
/// 262144 on most nodes).
pub const MAX_ENTRIES: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("cannot open a ctnetlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("ctnetlink {what} failed: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("ctnetlink refused the {what}: {source} (needs CAP_NET_ADMIN in this namespace)")]
    Permission {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel answered the conntrack {what} with: {source}")]
    Kernel {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel did not finish the conntrack {0} within the time limit")]
    Timeout(&'static str),
    #[error("the conntrack table has more than {MAX_ENTRIES} entries; not read to the end")]
    TooManyEntries,
    #[error("malformed ctnetlink reply: {0}")]
    Malformed(String),
    #[error("{src} and {dst} are not of the same address family")]
    MixedFamilies { src: SocketAddr, dst: SocketAddr },
}

pub type Result<T> = std::result::Result<T, ConntrackError>;

/// Which layer-3 tables to dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Family {
    Any,
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    fn nfproto(self) -> NetfilterProtoFamily {
        match self {
            Family::Any => NetfilterProtoFamily::Unspec,
            Family::Ipv4 => NetfilterProtoFamily::IPv4,
            Family::Ipv6 => NetfilterProtoFamily::IPv6,
        }
    }
}

// nfnetlink framing (include/uapi/linux/netfilter/nfnetlink*.h).
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const CTA_ID: u16 = 12;

/// Every entry of `family`'s tables, all protocols, all zones.
pub fn dump(family: Family) -> Result<Vec<ConntrackEntry>> {
    let mut out = Vec::new();
    exchange(
        "dump",
        family.nfproto(),
        ConntrackMessage::Get(Vec::new()),
        NLM_F_REQUEST | NLM_F_DUMP,
        |e| {
            if out.len() >= MAX_ENTRIES {
                return Err(ConntrackError::TooManyEntries);
            }
            out.push(e);
            Ok(())
        },
    )?;
    Ok(out)
}

/// The entry whose original tuple is `src` -> `dst`: TCP first, then UDP.
/// Asks the kernel for that tuple (IPCTNL_MSG_CT_GET), so the cost does not
/// grow with the table; it looks in the default zone, as k8s nodes use.
pub fn lookup(src: SocketAddr, dst: SocketAddr) -> Result<Option<ConntrackEntry>> {
    for proto in [libc::IPPROTO_TCP as u8, libc::IPPROTO_UDP as u8] {
        if let Some(e) = get(proto, src, dst)? {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// The entry for one exact original tuple; `None` if the kernel has none.
pub fn get(proto: u8, src: SocketAddr, dst: SocketAddr) -> Result<Option<ConntrackEntry>> {
    let family = match (src.ip(), dst.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => Family::Ipv4,
        (IpAddr::V6(_), IpAddr::V6(_)) => Family::Ipv6,
        _ => return Err(ConntrackError::MixedFamilies { src, dst }),
    };
    let tuple = vec![
        Tuple::Ip(vec![
            IPTuple::SourceAddress(src.ip()),
            IPTuple::DestinationAddress(dst.ip()),
        ]),
        Tuple::Proto(vec![
            ProtoTuple::Protocol(Protocol::from(proto)),
            ProtoTuple::SourcePort(src.port()),
            ProtoTuple::DestinationPort(dst.port()),
        ]),
    ];
    let request = ConntrackMessage::Get(vec![ConntrackAttribute::CtaTupleOrig(tuple)]);
    let mut found = None;
    let result = exchange("lookup", family.nfproto(), request, NLM_F_REQUEST, |e| {
        found = Some(e);
        Ok(())
    });
    match result {
        Ok(()) => Ok(found),
        Err(ConntrackError::Kernel { source, .. })
            if source.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Entries [`by_orig_dst`] keeps at most: enough to tell where a
/// Service's flows go now, whatever the table holds.
pub const MAX_SAME_DST: usize = 256;

/// Entries whose original destination is `dst` (the flows to one Service
/// IP:port, whatever endpoint each was NATed to), at most
/// [`MAX_SAME_DST`]. The table is streamed, datagram by datagram, and only
/// the matches are kept: memory does not grow with the table (a full one
/// on a busy node holds 262,144 entries, ~100 MB as a list).
pub fn by_orig_dst(dst: SocketAddr) -> Result<Vec<ConntrackEntry>> {
    let mut out = Vec::new();
    let mut seen = 0usize;
    exchange(
        "dump",
        Family::of(dst.ip()).nfproto(),
        ConntrackMessage::Get(Vec::new()),
        NLM_F_REQUEST | NLM_F_DUMP,
        |e| {
            seen += 1;
            if seen > MAX_ENTRIES {
                return Err(ConntrackError::TooManyEntries);
            }
            if e.orig_dst == dst && out.len() < MAX_SAME_DST {
                out.push(e);
            }
            Ok(())
        },
    )?;
    Ok(out)
}

/// Conntrack's own TCP states (enum tcp_conntrack), as `conntrack -L`
/// prints them; not the socket states of `ss`.
pub fn tcp_state_name(state: u8) -> &'static str {
    match state {
        0 => "NONE",
        1 => "SYN_SENT",
        2 => "SYN_RECV",
        3 => "ESTABLISHED",
        4 => "FIN_WAIT",
        5 => "CLOSE_WAIT",
        6 => "LAST_ACK",
        7 => "TIME_WAIT",
        8 => "CLOSE",
        9 => "SYN_SENT2",
        _ => "UNKNOWN",
    }
}

const STATUS: [(u32, &str); 17] = [
    (1 << 0, "EXPECTED"),
    (1 << 1, "SEEN_REPLY"),
    (1 << 2, "ASSURED"),
    (1 << 3, "CONFIRMED"),
    (1 << 4, "SRC_NAT"),
    (1 << 5, "DST_NAT"),
    (1 << 6, "SEQ_ADJUST"),
    (1 << 7, "SRC_NAT_DONE"),
    (1 << 8, "DST_NAT_DONE"),
    (1 << 9, "DYING"),
    (1 << 10, "FIXED_TIMEOUT"),
    (1 << 11, "TEMPLATE"),
    (1 << 12, "UNTRACKED"),
    (1 << 13, "HELPER"),
    (1 << 14, "OFFLOAD"),
    (1 << 15, "HW_OFFLOAD"),
    (1 << 16, "NAT_CLASH"),
];

/// IPS_* bits (nf_conntrack_common.h) by name, low bit first.
pub fn status_names(bits: u32) -> Vec<String> {
    STATUS
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// Builds an entry from one CT_NEW message; `None` if either tuple lacks
/// its addresses. Ports default to 0 for protocols without them.
pub fn entry_of(attrs: &[ConntrackAttribute]) -> Option<ConntrackEntry> {
    let mut orig = None;
    let mut reply = None;
    let mut tcp_state = None;
    let mut status = Vec::new();
    let mut timeout_s = None;
    let mut id = None;
    for attr in attrs {
        match attr {
            ConntrackAttribute::CtaTupleOrig(t) => orig = tuple_of(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = tuple_of(t),
            ConntrackAttribute::CtaStatus(s) => status = status_names(s.bits()),
            ConntrackAttribute::CtaTimeout(t) => timeout_s = Some(*t),
            ConntrackAttribute::CtaProtoInfo(infos) => {
                for info in infos {
                    if let ProtoInfo::TCP(tcp) = info {
                        for t in tcp {
                            if let ProtoInfoTCP::State(s) = t {
                                tcp_state = Some(tcp_state_name(*s).to_string());
                            }
                        }
                    }
                }
            }
            ConntrackAttribute::Other(nla) => {
                // DefaultNla keeps flag bits in its kind; CTA_ID is a plain u32.
                use netlink_packet_core::Nla as _;
                if nla.kind() & 0x3fff == CTA_ID && nla.value_len() == 4 {
                    let mut v = [0u8; 4];
                    nla.emit_value(&mut v);
                    id = Some(u32::from_be_bytes(v));
                }
            }
            _ => {}
        }
    }
    let (proto, orig_src, orig_dst) = orig?;
    let (_, reply_src, reply_dst) = reply?;
    Some(ConntrackEntry {
        proto,
        orig_src,
        orig_dst,
        reply_src,
        reply_dst,
        tcp_state,
        status,
        timeout_s,
        id,
    })
}

fn tuple_of(parts: &[Tuple]) -> Option<(u8, SocketAddr, SocketAddr)> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, 0u8, 0u16, 0u16);
    for part in parts {
        match part {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(ps) => {
                for p in ps {
                    match p {
                        ProtoTuple::Protocol(p) => proto = u8::from(*p),
                        ProtoTuple::SourcePort(p) => sport = *p,
                        ProtoTuple::DestinationPort(p) => dport = *p,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((
        proto,
        SocketAddr::new(src?, sport),
        SocketAddr::new(dst?, dport),
    ))
}

/// Sends one request and feeds every entry of the answer to `each`, until
/// NLMSG_DONE (dumps) or the single answer (gets).
fn exchange(
    what: &'static str,
    family: NetfilterProtoFamily,
    request: ConntrackMessage,
    flags: u16,
    mut each: impl FnMut(ConntrackEntry) -> Result<()>,
) -> Result<()> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(ConntrackError::Socket)?;
    socket.bind_auto().map_err(ConntrackError::Socket)?;
    let seq = sequence_number();
    let frame = encode(family, request, flags, seq);
    socket
        .send(&frame, 0)
        .map_err(|source| io_error(what, source))?;

    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    let deadline = Instant::now() + TOTAL_TIMEOUT;
    // Dump datagrams are at most 32 KiB (netlink_recvmsg caps them).
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(ConntrackError::Timeout(what));
        }
        wait_readable(&socket, READ_TIMEOUT.min(deadline - now), what)?;
        let n = socket
            .recv(&mut &mut buf[..], libc::MSG_DONTWAIT)
            .map_err(|source| io_error(what, source))?;
        match walk(&buf[..n], seq, &mut each)? {
            Walk::Done => return Ok(()),
            Walk::More if !dump && answered(&buf[..n], seq) => return Ok(()),
            Walk::More => {}
        }
    }
}

enum Walk {
    Done,
    More,
}

/// True if the datagram carried a CT_NEW answer to `seq` (a get's reply).
fn answered(datagram: &[u8], seq: u32) -> bool {
    frames(datagram)
        .any(|(ty, _, s, _)| s == seq && ty == (NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW))
}

/// Goes through one datagram's netlink messages.
fn walk(
    datagram: &[u8],
    seq: u32,
    each: &mut impl FnMut(ConntrackEntry) -> Result<()>,
) -> Result<Walk> {
    let mut seen = 0;
    for (ty, _flags, s, payload) in frames(datagram) {
        seen += 1;
        if s != seq {
            continue; // Not ours (a late answer to an earlier socket user).
        }
        match ty {
            NLMSG_NOOP => {}
            NLMSG_DONE => {
                // Dumps report a late failure as a negative errno here.
                let code = payload
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                if code < 0 {
                    return Err(kernel_error("dump", -code));
                }
                return Ok(Walk::Done);
            }
            NLMSG_ERROR => {
                let code = payload
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                match code {
                    Some(0) => return Ok(Walk::Done), // ACK
                    Some(c) => return Err(kernel_error("request", -c)),
                    None => return Err(ConntrackError::Malformed("truncated NLMSG_ERROR".into())),
                }
            }
            t if t == (NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW) => {
                // An entry this crate cannot parse is skipped, not fatal: one
                // odd flow must not hide the others.
                if let Ok(msg) = NetfilterMessage::parse_with_param(payload, t)
                    && let NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)) =
                        msg.inner
                    && let Some(entry) = entry_of(&attrs)
                {
                    each(entry)?;
                }
            }
            _ => {}
        }
    }
    if seen == 0 && !datagram.is_empty() {
        return Err(ConntrackError::Malformed(format!(
            "{} bytes without a netlink header",
            datagram.len()
        )));
    }
    Ok(Walk::More)
}

/// (type, flags, seq, payload) of each well-formed message; stops at the
/// first length that does not fit.
pub(super) fn frames(datagram: &[u8]) -> impl Iterator<Item = (u16, u16, u32, &[u8])> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        let rest = datagram.get(off..)?;
        if rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return None;
        }
        let ty = u16::from_ne_bytes([rest[4], rest[5]]);
        let flags = u16::from_ne_bytes([rest[6], rest[7]]);
        let seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
        off += (len + 3) & !3;
        Some((ty, flags, seq, &rest[NLMSG_HDRLEN..len]))
    })
}

fn encode(
    family: NetfilterProtoFamily,
    request: ConntrackMessage,
    flags: u16,
    seq: u32,
) -> Vec<u8> {
    let ty = (NFNL_SUBSYS_CTNETLINK << 8) | u16::from(u8::from(request.message_type()));
    let body = NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), request);
    let len = NLMSG_HDRLEN + body.buffer_len();
    let mut frame = vec![0u8; len];
    frame[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    frame[4..6].copy_from_slice(&ty.to_ne_bytes());
    frame[6..8].copy_from_slice(&flags.to_ne_bytes());
    frame[8..12].copy_from_slice(&seq.to_ne_bytes());
    // Port id 0: the kernel fills in ours.
    body.emit(&mut frame[NLMSG_HDRLEN..]);
    frame
}

pub(super) fn sequence_number() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16) | 1
}

fn wait_readable(socket: &Socket, timeout: Duration, what: &'static str) -> Result<()> {
    let mut pfd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    loop {
        // SAFETY: one valid pollfd, living across the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        match rc {
            0 => return Err(ConntrackError::Timeout(what)),
            r if r > 0 => return Ok(()),
            _ => {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    return Err(io_error(what, err));
                }
            }
        }
    }
}

fn io_error(what: &'static str, source: std::io::Error) -> ConntrackError {
    if source.raw_os_error() == Some(libc::EPERM) {
        ConntrackError::Permission { what, source }
    } else {
        ConntrackError::Io { what, source }
    }
}

fn kernel_error(what: &'static str, errno: i32) -> ConntrackError {
    let source = std::io::Error::from_raw_os_error(errno);
    if errno == libc::EPERM {
        ConntrackError::Permission { what, source }
    } else {
        ConntrackError::Kernel { what, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> ConntrackEntry {
        ConntrackEntry {
            proto: 6,
            orig_src: "10.0.0.1:40000".parse().unwrap(),
            orig_dst: "10.96.0.10:8000".parse().unwrap(),
            reply_src: "10.244.1.7:8080".parse().unwrap(),
            reply_dst: "10.0.0.1:40000".parse().unwrap(),
            tcp_state: Some("ESTABLISHED".into()),
            status: status_names(0x1ae),
            timeout_s: Some(431_999),
            id: Some(1),
        }
    }

    #[test]
    fn delete_command_names_the_whole_tuple() {
        let e = entry();
        assert!(e.is_dnat());
        assert_eq!(
            e.delete_command(),
            "conntrack -D -p tcp --orig-src 10.0.0.1 --orig-dst 10.96.0.10 --orig-port-src 40000 \
             --orig-port-dst 8000 --reply-src 10.244.1.7 --reply-port-src 8080"
        );
        let mut v6 = e.clone();
        v6.proto = 17;
        v6.orig_src = "[fd00::1]:5353".parse().unwrap();
        v6.orig_dst = "[fd00::2]:53".parse().unwrap();
        v6.reply_src = v6.orig_dst;
        assert!(!v6.is_dnat());
        assert_eq!(
            v6.delete_command(),
            "conntrack -D -p udp --orig-src fd00::1 --orig-dst fd00::2 --orig-port-src 5353 \
             --orig-port-dst 53 --reply-src fd00::2 --reply-port-src 53"
        );
        let mut icmp = e;
        icmp.proto = 1;
        assert_eq!(
            icmp.delete_command(),
            "conntrack -D -p icmp --orig-src 10.0.0.1 --orig-dst 10.96.0.10 --reply-src 10.244.1.7"
        );
    }

    #[test]
    fn status_bits_by_name() {
        // SEEN_REPLY|ASSURED|CONFIRMED|DST_NAT|SRC_NAT_DONE|DST_NAT_DONE
        assert_eq!(
            status_names(0x1ae),
            vec![
                "SEEN_REPLY",
                "ASSURED",
                "CONFIRMED",
                "DST_NAT",
                "SRC_NAT_DONE",
                "DST_NAT_DONE"
            ]
        );
        assert_eq!(tcp_state_name(3), "ESTABLISHED");
        assert_eq!(tcp_state_name(200), "UNKNOWN");
    }

    /// A CT_NEW message as the kernel sends it for a DNATed TCP flow,
    /// written out by hand (nested attributes flagged NLA_F_NESTED, values
    /// big-endian), plus an attribute from the future.
    fn kernel_message(seq: u32) -> Vec<u8> {
        fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
            let mut v = Vec::new();
            v.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
            v.extend_from_slice(&kind.to_ne_bytes());
            v.extend_from_slice(value);
            while v.len() % 4 != 0 {
                v.push(0);
            }
            v
        }
        const NESTED: u16 = 0x8000;
        let tuple = |src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16| {
            let ip = [nla(1, &src), nla(2, &dst)].concat();
            let proto = [
                nla(1, &[6]),
                nla(2, &sport.to_be_bytes()),
                nla(3, &dport.to_be_bytes()),
            ]
            .concat();
            [nla(1 | NESTED, &ip), nla(2 | NESTED, &proto)].concat()
        };
        let tcp = [
            nla(1, &[3]),
            nla(2, &[7]),
            nla(3, &[7]),
            nla(4, &[0x23, 0]),
            nla(5, &[0x23, 0]),
        ]
        .concat();
        let attrs = [
            nla(
                1 | NESTED,
                &tuple([10, 0, 0, 1], [10, 96, 0, 10], 40000, 8000),
            ),
            nla(
                2 | NESTED,
                &tuple([10, 244, 1, 7], [10, 0, 0, 1], 8080, 40000),
            ),
            nla(3, &0x1aeu32.to_be_bytes()),
            nla(7, &431_999u32.to_be_bytes()),
            nla(4 | NESTED, &nla(1 | NESTED, &tcp)),
            nla(12, &0xdead_beefu32.to_be_bytes()),
            nla(99, &[1, 2, 3]),
        ]
        .concat();
        let mut msg = Vec::new();
        let len = NLMSG_HDRLEN + 4 + attrs.len();
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW).to_ne_bytes());
        msg.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&[2, 0, 0, 0]); // nfgenmsg: AF_INET, v0, res_id 0
        msg.extend_from_slice(&attrs);
        msg
    }

    #[test]
    fn parses_a_kernel_dump_datagram() {
        let seq = 77;
        let mut datagram = kernel_message(seq);
        datagram.extend(kernel_message(seq + 1)); // someone else's: skipped
        let mut done = vec![0u8; 20];
        done[0..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        done[8..12].copy_from_slice(&seq.to_ne_bytes());
        datagram.extend(&done);

        let mut got = Vec::new();
        let walked = walk(&datagram, seq, &mut |e| {
            got.push(e);
            Ok(())
        })
        .unwrap();
        assert!(matches!(walked, Walk::Done));
        assert_eq!(got.len(), 1);
        let e = &got[0];
        assert_eq!(e.orig_dst, "10.96.0.10:8000".parse().unwrap());
        assert_eq!(e.reply_src, "10.244.1.7:8080".parse().unwrap());
        assert_eq!(e.tcp_state.as_deref(), Some("ESTABLISHED"));
        assert_eq!(e.timeout_s, Some(431_999));
        assert_eq!(e.id, Some(0xdead_beef));
        assert!(e.status.contains(&"DST_NAT".to_string()));
        assert!(e.is_dnat());
    }

    #[test]
    fn kernel_errors_and_garbage() {
        let mut nack = vec![0u8; 36];
        nack[0..4].copy_from_slice(&36u32.to_ne_bytes());
        nack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        nack[8..12].copy_from_slice(&5u32.to_ne_bytes());
        nack[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        let err = walk(&nack, 5, &mut |_| Ok(())).err().unwrap();
        assert!(
            matches!(&err, ConntrackError::Kernel { source, .. } if source.raw_os_error() == Some(libc::ENOENT))
        );

        // A length field that overruns the datagram is not followed.
        let mut bad = kernel_message(5);
        bad[0..4].copy_from_slice(&10_000u32.to_ne_bytes());
        assert!(matches!(
            walk(&bad, 5, &mut |_| Ok(())),
            Err(ConntrackError::Malformed(_))
        ));

        // A truncated entry inside an otherwise fine message is skipped.
        let mut short = kernel_message(5);
        let cut = short.len() - 30;
        short.truncate(cut);
        short[0..4].copy_from_slice(&(cut as u32).to_ne_bytes());
        let mut n = 0;
        assert!(matches!(
            walk(&short, 5, &mut |_| {
                n += 1;
                Ok(())
            }),
            Ok(Walk::More)
        ));
        assert_eq!(n, 0);
    }

    #[test]
    fn request_layout() {
        let frame = encode(
            NetfilterProtoFamily::IPv6,
            ConntrackMessage::Get(Vec::new()),
            NLM_F_REQUEST | NLM_F_DUMP,
            9,
        );
        assert_eq!(frame.len(), 20);
        assert_eq!(u16::from_ne_bytes([frame[4], frame[5]]), 0x0101); // CTNETLINK << 8 | CT_GET
        assert_eq!(u16::from_ne_bytes([frame[6], frame[7]]), 0x301);
        assert_eq!(frame[16], 10); // AF_INET6
    }
}
