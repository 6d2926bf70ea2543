//! Who answers for an IP on this link, asked without touching this host's
//! neighbour table.
//!
//! The request goes out from a made-up, locally administered MAC (never the
//! interface's own), so every holder of the IP answers that MAC. The answers
//! reach this host (the switch learned the made-up MAC on our port) but are
//! not addressed to it: the kernel classes them PACKET_OTHERHOST and drops
//! them before ARP/NDP sees them, so the entry under investigation stays as
//! it was. A packet socket still sees them; a unicast membership for the
//! made-up MAC (not promiscuous mode) makes the NIC pass them up, and is
//! dropped with the socket. The made-up MAC is drawn once per process.
//!
//! - IPv4: an ARP request with sender IP 0.0.0.0 (an RFC 5227 probe) to the
//!   broadcast address. Holders reply unicast to the sender MAC.
//! - IPv6: a neighbour solicitation to the target's solicited-node group,
//!   from the link-local address of the made-up MAC, with that MAC in the
//!   source link-layer option. Holders answer with solicited advertisements
//!   unicast to it. (From `::` they would multicast an override advert,
//!   which rewrites every neighbour cache on the link, ours included.)
//!
//! The request is sent twice, a few ms apart, so one lost frame does not
//! hide a holder; answers are counted once per MAC.

use std::{
    io,
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd},
    time::{Duration, Instant},
};

use netlink_packet_route::link::{LinkAttribute, LinkLayerType};
use tokio::io::{Interest, unix::AsyncFd};

use super::{NETLINK_TIMEOUT, ProbeAnswer, ProbeResult, Rtnl};
use crate::model::event::format_mac;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot open an rtnetlink socket: {0}")]
    Rtnl(#[source] io::Error),
    #[error("looking up interface {dev:?} failed: {source}")]
    LinkLookup {
        dev: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("the kernel did not answer the lookup of interface {0:?} within {NETLINK_TIMEOUT:?}")]
    LinkTimeout(String),
    #[error("no interface named {0:?} in this network namespace")]
    NoSuchDevice(String),
    #[error("interface {0:?} is not Ethernet: ARP/NDP probes need an Ethernet link")]
    NotEthernet(String),
    #[error("interface {0:?} has no 6-byte hardware address")]
    NoMac(String),
    #[error("opening a packet socket needs CAP_NET_RAW: {0}")]
    Permission(#[source] io::Error),
    #[error("{what} on {dev:?} failed: {source}")]
    Socket {
        what: &'static str,
        dev: String,
        #[source]
        source: io::Error,
    },
}

pub type Result<T> = std::result::Result<T, ProbeError>;

/// Longest listening window honoured; a caller asking for more gets this.
pub const MAX_WINDOW: Duration = Duration::from_secs(10);
/// Gap between the request and its repeat.
const RESEND_AFTER: Duration = Duration::from_millis(10);

/// Sends the probe for `ip` on `dev` and lists every MAC that answered
/// within `window`. Takes `window` (at most [`MAX_WINDOW`]) plus the time
/// to open the sockets; never longer.
pub async fn claimants(dev: &str, ip: IpAddr, window: Duration) -> Result<ProbeResult> {
    let (ifindex, own_mac) = interface(dev).await?;
    let probe_mac = foreign_mac(&own_mac, process_bytes());
    let (ethertype, frame, filter) = match ip {
        IpAddr::V4(v4) => (
            libc::ETH_P_ARP as u16,
            arp_request(probe_mac, v4),
            ARP_REPLY_FILTER.as_slice(),
        ),
        IpAddr::V6(v6) => (
            libc::ETH_P_IPV6 as u16,
            neighbour_solicitation(probe_mac, v6),
            ADVERT_FILTER.as_slice(),
        ),
    };
    let fail = |what: &'static str| {
        move |source: io::Error| ProbeError::Socket {
            what,
            dev: dev.to_string(),
            source,
        }
    };
    let socket = PacketSocket::open(ifindex, ethertype, filter, probe_mac).map_err(|e| match e
        .raw_os_error()
    {
        Some(libc::EPERM) | Some(libc::EACCES) => ProbeError::Permission(e),
        _ => fail("opening the packet socket")(e),
    })?;
    // SAFETY: PacketSocket owns its descriptor, never replaces it and
    // returns that same one from as_raw_fd until dropped with the AsyncFd.
    let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
        .map_err(|e| fail("registering the packet socket")(e.into()))?;

    let window = window.min(MAX_WINDOW);
    let start = Instant::now();
    let end = start + window;
    let resend_at = start + RESEND_AFTER.min(window / 2);
    socket
        .get_ref()
        .send(&frame)
        .map_err(fail("sending the probe"))?;
    let mut resent = false;
    let mut answers: Vec<ProbeAnswer> = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let now = Instant::now();
        if !resent && now >= resend_at {
            socket
                .get_ref()
                .send(&frame)
                .map_err(fail("sending the probe again"))?;
            resent = true;
        }
        if now >= end {
            break;
        }
        let wake = if resent { end } else { resend_at.min(end) };
        let Ok(ready) = tokio::time::timeout_at(wake.into(), socket.readable()).await else {
            continue; // Timer: resend or finish.
        };
        let mut guard = ready.map_err(fail("waiting for answers"))?;
        loop {
            match guard.try_io(|s| s.get_ref().recv(&mut buf)) {
                Ok(Ok((n, pkttype))) => {
                    if pkttype == libc::PACKET_OUTGOING {
                        continue;
                    }
                    let mac = match ip {
                        IpAddr::V4(v4) => arp_reply_sender(&buf[..n], v4),
                        IpAddr::V6(v6) => advert_mac(&buf[..n], v6),
                    };
                    if let Some(mac) = mac.map(|m| format_mac(&m))
                        && !answers.iter().any(|a| a.mac == mac)
                    {
                        let after_us =
                            u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
                        answers.push(ProbeAnswer { mac, after_us });
                    }
                }
                Ok(Err(e)) => return Err(fail("reading answers")(e)),
                Err(_would_block) => break,
            }
        }
    }
    Ok(ProbeResult {
        ip,
        dev: dev.to_string(),
        probe_mac: format_mac(&probe_mac),
        window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        answers,
    })
}

/// ifindex and MAC of an Ethernet interface of this namespace.
async fn interface(dev: &str) -> Result<(u32, [u8; 6])> {
    let rtnl = Rtnl::open().map_err(ProbeError::Rtnl)?;
    let link = tokio::time::timeout(NETLINK_TIMEOUT, rtnl.link_by_name(dev))
        .await
        .map_err(|_| ProbeError::LinkTimeout(dev.to_string()))?
        .map_err(|source| ProbeError::LinkLookup {
            dev: dev.to_string(),
            source,
        })?
        .ok_or_else(|| ProbeError::NoSuchDevice(dev.to_string()))?;
    if link.header.link_layer_type != LinkLayerType::Ether {
        return Err(ProbeError::NotEthernet(dev.to_string()));
    }
    let mac = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(m) => <[u8; 6]>::try_from(m.as_slice()).ok(),
            _ => None,
        })
        .ok_or_else(|| ProbeError::NoMac(dev.to_string()))?;
    Ok((link.header.index, mac))
}

/// The random part of the probe MAC, drawn once per process: a switch
/// learns one stable foreign MAC on our port, not a new one per probe.
fn process_bytes() -> [u8; 5] {
    static BYTES: std::sync::OnceLock<[u8; 5]> = std::sync::OnceLock::new();
    *BYTES.get_or_init(random_bytes)
}

fn random_bytes() -> [u8; 5] {
    let mut b = [0u8; 5];
    // SAFETY: writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // Uniqueness on one link is all that matters; time and pid will do.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()) << 20;
        b.copy_from_slice(&t.to_le_bytes()[..5]);
    }
    b
}

/// `02:` + 5 random bytes: locally administered, unicast, and not `avoid`
/// (the interface's own MAC).
pub fn foreign_mac(avoid: &[u8; 6], random: [u8; 5]) -> [u8; 6] {
    let mut mac = [0x02, random[0], random[1], random[2], random[3], random[4]];
    if &mac == avoid {
        mac[5] ^= 0x01;
    }
    mac
}

const BROADCAST: [u8; 6] = [0xff; 6];
const ETH_HLEN: usize = 14;
/// Shortest Ethernet frame without FCS; some NICs will not pad for us.
const ETH_ZLEN: usize = 60;

fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, capacity: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(capacity.max(ETH_ZLEN));
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// Broadcast ARP request "who has `target`", sender IP 0.0.0.0.
pub fn arp_request(src_mac: [u8; 6], target: Ipv4Addr) -> Vec<u8> {
    let mut f = ethernet(BROADCAST, src_mac, libc::ETH_P_ARP as u16, ETH_ZLEN);
    f.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&1u16.to_be_bytes()); // request
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f.resize(ETH_ZLEN, 0);
    f
}

/// Sender MAC of an ARP reply whose sender IP is `ip`.
pub fn arp_reply_sender(frame: &[u8], ip: Ipv4Addr) -> Option<[u8; 6]> {
    let arp = frame.get(ETH_HLEN..ETH_HLEN + 28)?;
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let header_ok = ethertype == libc::ETH_P_ARP as u16
        && arp[0..2] == [0, 1]
        && arp[2..4] == [0x08, 0x00]
        && arp[4..6] == [6, 4]
        && arp[6..8] == [0, 2];
    if !header_ok || arp[14..18] != ip.octets() {
        return None;
    }
    usable_mac(&arp[8..14])
}

/// ff02::1:ffXX:XXXX for the low 24 bits of `target` (RFC 4291 2.7.1).
pub fn solicited_node(target: Ipv6Addr) -> Ipv6Addr {
    let o = target.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// 33:33 + the group's low 32 bits (RFC 2464 7).
pub fn multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// fe80::/64 with the modified EUI-64 of `mac` (RFC 4291 appendix A).
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o[0] = 0xfe;
    o[1] = 0x80;
    o[8] = mac[0] ^ 0x02;
    o[9] = mac[1];
    o[10] = mac[2];
    o[11] = 0xff;
    o[12] = 0xfe;
    o[13] = mac[3];
    o[14] = mac[4];
    o[15] = mac[5];
    Ipv6Addr::from(o)
}

const IPPROTO_ICMPV6: u8 = 58;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;
const ND_OPT_SOURCE_LL: u8 = 1;
const ND_OPT_TARGET_LL: u8 = 2;
const IPV6_HLEN: usize = 40;

/// Neighbour solicitation for `target` from the link-local address of
/// `src_mac`, to the solicited-node group, hop limit 255, with a source
/// link-layer option.
pub fn neighbour_solicitation(src_mac: [u8; 6], target: Ipv6Addr) -> Vec<u8> {
    let src = link_local(src_mac);
    let dst = solicited_node(target);
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[ND_NEIGHBOR_SOLICIT, 0, 0, 0]); // type, code, checksum
    icmp.extend_from_slice(&[0; 4]); // reserved
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[ND_OPT_SOURCE_LL, 1]); // length in units of 8 bytes
    icmp.extend_from_slice(&src_mac);
    let sum = icmpv6_checksum(src, dst, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = ethernet(
        multicast_mac(dst),
        src_mac,
        libc::ETH_P_IPV6 as u16,
        ETH_HLEN + IPV6_HLEN + icmp.len(),
    );
    f.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, no traffic class or flow
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.push(IPPROTO_ICMPV6);
    f.push(255); // hop limit: receivers drop NDP with anything else
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f.resize(f.len().max(ETH_ZLEN), 0);
    f
}

/// The MAC a neighbour advertisement for `ip` claims it at: its target
/// link-layer option, else the frame's Ethernet source.
pub fn advert_mac(frame: &[u8], ip: Ipv6Addr) -> Option<[u8; 6]> {
    if frame.get(12..14)? != (libc::ETH_P_IPV6 as u16).to_be_bytes() {
        return None;
    }
    let ip6 = frame.get(ETH_HLEN..ETH_HLEN + IPV6_HLEN)?;
    let payload_len = usize::from(u16::from_be_bytes([ip6[4], ip6[5]]));
    if ip6[0] >> 4 != 6 || ip6[6] != IPPROTO_ICMPV6 || ip6[7] != 255 {
        return None;
    }
    // Ethernet padding may follow the payload; the IPv6 length is the truth.
    let icmp = frame.get(ETH_HLEN + IPV6_HLEN..ETH_HLEN + IPV6_HLEN + payload_len)?;
    if icmp.len() < 24
        || icmp[0] != ND_NEIGHBOR_ADVERT
        || icmp[1] != 0
        || icmp[8..24] != ip.octets()
    {
        return None;
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip6[8..24]).ok()?);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip6[24..40]).ok()?);
    if icmpv6_checksum(src, dst, icmp) != 0 {
        return None;
    }
    let mut opts = &icmp[24..];
    while opts.len() >= 8 {
        let len = usize::from(opts[1]) * 8;
        if len == 0 || len > opts.len() {
            break;
        }
        if opts[0] == ND_OPT_TARGET_LL && len >= 8 {
            return usable_mac(&opts[2..8]);
        }
        opts = &opts[len..];
    }
    usable_mac(&frame[6..12])
}

/// A unicast, non-zero MAC, or nothing.
fn usable_mac(bytes: &[u8]) -> Option<[u8; 6]> {
    let mac = <[u8; 6]>::try_from(bytes).ok()?;
    (mac != [0; 6] && mac[0] & 0x01 == 0).then_some(mac)
}

/// ICMPv6 checksum over the pseudo-header and `icmp` (RFC 8200 8.1).
/// Over a message that already carries its checksum, the result is 0.
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |b| u64::from(*b));
            sum += hi | lo;
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(icmp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, IPPROTO_ICMPV6]);
    add(icmp);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

// Classic BPF, so a promiscuous socket on a busy node queues only the
// frames that can be answers: offsets are from the Ethernet header.
const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}
const LDH_ABS: u16 = 0x28;
const LDB_ABS: u16 = 0x30;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;
/// ARP opcode (bytes 20-21) == reply.
const ARP_REPLY_FILTER: [libc::sock_filter; 4] = [
    insn(LDH_ABS, 0, 0, 20),
    insn(JEQ_K, 0, 1, 2),
    insn(RET_K, 0, 0, 0xffff),
    insn(RET_K, 0, 0, 0),
];
/// IPv6 next header (byte 20) == ICMPv6 and ICMPv6 type (byte 54) == NA.
const ADVERT_FILTER: [libc::sock_filter; 6] = [
    insn(LDB_ABS, 0, 0, 20),
    insn(JEQ_K, 0, 3, IPPROTO_ICMPV6 as u32),
    insn(LDB_ABS, 0, 0, 54),
    insn(JEQ_K, 0, 1, ND_NEIGHBOR_ADVERT as u32),
    insn(RET_K, 0, 0, 0xffff),
    insn(RET_K, 0, 0, 0),
];

/// AF_PACKET socket bound to one interface and ethertype. It adds the probe
/// MAC to the interface's unicast filter for as long as it is open (so a
/// real NIC passes the answers up) without making the interface
/// promiscuous: its flags are not touched.
struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
    ethertype: u16,
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl PacketSocket {
    fn open(
        ifindex: u32,
        ethertype: u16,
        filter: &[libc::sock_filter],
        mac: [u8; 6],
    ) -> io::Result<Self> {
        let ifindex =
            i32::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
        // Protocol 0: nothing is queued until bind, so the filter is in place
        // before the first frame arrives.
        // SAFETY: plain syscall; the fd is owned right after.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sock = Self {
            fd,
            ifindex,
            ethertype,
        };

        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr().cast_mut(),
        };
        sock.setsockopt(libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)?;

        let addr = sock.address(None);
        // SAFETY: addr is a valid sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }

        let mut address = [0u8; 8];
        address[..6].copy_from_slice(&mac);
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex,
            mr_type: libc::PACKET_MR_UNICAST as u16,
            mr_alen: 6,
            mr_address: address,
        };
        sock.setsockopt(libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)?;
        Ok(sock)
    }

    fn address(&self, dst: Option<[u8; 6]>) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = self.ethertype.to_be();
        addr.sll_ifindex = self.ifindex;
        if let Some(mac) = dst {
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&mac);
        }
        addr
    }

    fn setsockopt<T>(&self, level: i32, name: i32, value: &T) -> io::Result<()> {
        // SAFETY: value points to a live T of the size given.
        let rc = unsafe {
            libc::setsockopt(
                self.as_raw_fd(),
                level,
                name,
                (value as *const T).cast(),
                size_of::<T>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Sends a whole Ethernet frame (its first 6 bytes are the destination).
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        let dst = <[u8; 6]>::try_from(&frame[..6])
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let addr = self.address(Some(dst));
        // SAFETY: frame and addr are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != frame.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {n} of {} bytes", frame.len()),
            ));
        }
        Ok(())
    }

    /// One frame and its packet type (PACKET_HOST, PACKET_OTHERHOST, ...).
    fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, u8)> {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buf and from are valid for the lengths given.
        let n = unsafe {
            libc::recvfrom(
                self.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((n as usize, from.sll_pkttype))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];

    #[test]
    fn foreign_mac_is_local_unicast_and_not_ours() {
        let own = [0x02, 1, 2, 3, 4, 5];
        let m = foreign_mac(&own, [1, 2, 3, 4, 5]);
        assert_ne!(m, own);
        assert_eq!(m[0], 0x02);
        assert_eq!(
            foreign_mac(&[0x52, 0, 0, 0, 0, 1], [9, 9, 9, 9, 9]),
            [0x02, 9, 9, 9, 9, 9]
        );
    }

    #[test]
    fn arp_request_layout() {
        let f = arp_request(MAC, Ipv4Addr::new(10, 1, 0, 100));
        assert_eq!(f.len(), 60);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &MAC);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[14..22], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&f[22..28], &MAC); // sender MAC
        assert_eq!(&f[28..32], &[0, 0, 0, 0]); // sender IP: probe
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &[10, 1, 0, 100]);
        assert!(f[42..].iter().all(|b| *b == 0));
    }

    /// What Linux sends back to a probe: reply, sender = holder, target IP
    /// 0.0.0.0, target MAC = the probe's.
    fn arp_reply(holder: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
        let mut f = ethernet(MAC, holder, 0x0806, 42);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
        f.extend_from_slice(&holder);
        f.extend_from_slice(&ip.octets());
        f.extend_from_slice(&MAC);
        f.extend_from_slice(&[0, 0, 0, 0]);
        f
    }

    #[test]
    fn arp_replies_are_recognised() {
        let ip = Ipv4Addr::new(10, 1, 0, 100);
        let holder = [0x02, 0x6e, 0x70, 1, 0, 2];
        assert_eq!(arp_reply_sender(&arp_reply(holder, ip), ip), Some(holder));
        assert_eq!(
            arp_reply_sender(&arp_reply(holder, ip), Ipv4Addr::new(10, 1, 0, 101)),
            None
        );
        // Our own request is not an answer.
        assert_eq!(arp_reply_sender(&arp_request(MAC, ip), ip), None);
        assert_eq!(arp_reply_sender(&arp_reply(holder, ip)[..30], ip), None);
        assert_eq!(arp_reply_sender(&arp_reply([0; 6], ip), ip), None);
    }

    #[test]
    fn ipv6_addresses_from_mac_and_target() {
        assert_eq!(
            link_local(MAC),
            "fe80::aa:bbff:fecc:ddee".parse::<Ipv6Addr>().unwrap()
        );
        let target: Ipv6Addr = "fd00:10:203::1:2:3:104".parse().unwrap();
        let group = solicited_node(target);
        assert_eq!(group, "ff02::1:ff03:104".parse::<Ipv6Addr>().unwrap());
        assert_eq!(multicast_mac(group), [0x33, 0x33, 0xff, 0x03, 0x01, 0x04]);
    }

    #[test]
    fn checksum_verifies_and_matches_a_reference() {
        // Summed over the message with its checksum in place, the result is
        // 0 (RFC 1071); one flipped bit breaks it.
        let target: Ipv6Addr = "fd00::64".parse().unwrap();
        let f = neighbour_solicitation(MAC, target);
        let icmp = &f[ETH_HLEN + IPV6_HLEN..ETH_HLEN + IPV6_HLEN + 32];
        let (src, dst) = (link_local(MAC), solicited_node(target));
        assert_eq!(icmpv6_checksum(src, dst, icmp), 0);
        let mut bad = icmp.to_vec();
        bad[10] ^= 0x40;
        assert_ne!(icmpv6_checksum(src, dst, &bad), 0);
        // Agrees with an independent, naive implementation.
        assert_eq!(
            u16::from_be_bytes([icmp[2], icmp[3]]),
            reference_checksum(src, dst, icmp)
        );
        // Odd lengths pad with a zero byte.
        assert_eq!(
            icmpv6_checksum(Ipv6Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED, &[0xff]),
            !(0xff00u16 + 1 + 58)
        );
    }

    /// A second, deliberately naive implementation: u32 words, fold once
    /// at the end.
    fn reference_checksum(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 58]);
        let mut body = icmp.to_vec();
        body[2] = 0;
        body[3] = 0;
        bytes.extend_from_slice(&body);
        let mut sum: u32 = bytes
            .chunks(2)
            .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
            .sum();
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        !(sum as u16)
    }

    #[test]
    fn neighbour_solicitation_layout() {
        let target: Ipv6Addr = "fd00:10:1::64".parse().unwrap();
        let f = neighbour_solicitation(MAC, target);
        assert_eq!(f.len(), ETH_HLEN + IPV6_HLEN + 32);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0xff, 0, 0, 0x64]);
        assert_eq!(&f[6..12], &MAC);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        let ip6 = &f[14..54];
        assert_eq!(ip6[0], 0x60);
        assert_eq!(u16::from_be_bytes([ip6[4], ip6[5]]), 32);
        assert_eq!((ip6[6], ip6[7]), (58, 255));
        assert_eq!(&ip6[8..24], &link_local(MAC).octets());
        assert_ne!(&ip6[8..24], &Ipv6Addr::UNSPECIFIED.octets());
        assert_eq!(
            &ip6[24..40],
            &"ff02::1:ff00:64".parse::<Ipv6Addr>().unwrap().octets()
        );
        let icmp = &f[54..];
        assert_eq!((icmp[0], icmp[1]), (135, 0));
        assert_eq!(&icmp[8..24], &target.octets());
        assert_eq!(&icmp[24..26], &[1, 1]);
        assert_eq!(&icmp[26..32], &MAC);
    }

    /// A solicited advert as Linux sends it: S|O flags, target option.
    fn advert(holder: [u8; 6], target: Ipv6Addr, with_option: bool) -> Vec<u8> {
        let src = target;
        let dst = link_local(MAC);
        let mut icmp = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
        icmp.extend_from_slice(&target.octets());
        if with_option {
            icmp.extend_from_slice(&[2, 1]);
            icmp.extend_from_slice(&holder);
        }
        let sum = icmpv6_checksum(src, dst, &icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut f = ethernet(MAC, holder, 0x86dd, 0);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        f.extend_from_slice(&[58, 255]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(&icmp);
        f
    }

    #[test]
    fn adverts_are_recognised() {
        let target: Ipv6Addr = "fd00:10:1::64".parse().unwrap();
        let holder = [0x02, 0x6e, 0x70, 1, 0, 3];
        assert_eq!(
            advert_mac(&advert(holder, target, true), target),
            Some(holder)
        );
        // No option: the Ethernet source says who it is.
        assert_eq!(
            advert_mac(&advert(holder, target, false), target),
            Some(holder)
        );
        // Padding after the IPv6 payload is ignored.
        let mut padded = advert(holder, target, false);
        padded.resize(ETH_ZLEN.max(padded.len() + 6), 0);
        assert_eq!(advert_mac(&padded, target), Some(holder));
        assert_eq!(
            advert_mac(
                &advert(holder, target, true),
                "fd00:10:1::65".parse().unwrap()
            ),
            None
        );
        let mut corrupt = advert(holder, target, true);
        corrupt[ETH_HLEN + IPV6_HLEN + 12] ^= 1;
        assert_eq!(advert_mac(&corrupt, target), None);
        let mut hops = advert(holder, target, true);
        hops[ETH_HLEN + 7] = 64;
        assert_eq!(advert_mac(&hops, target), None);
        // Our own solicitation is not an answer; truncation is not a panic.
        assert_eq!(
            advert_mac(&neighbour_solicitation(MAC, target), target),
            None
        );
        let full = advert(holder, target, true);
        for cut in 0..full.len() {
            let _ = advert_mac(&full[..cut], target);
        }
    }

    #[test]
    fn filters_jump_to_the_right_verdicts() {
        // A tiny cBPF interpreter for the opcodes used, run on real frames.
        fn run(prog: &[libc::sock_filter], pkt: &[u8]) -> u32 {
            let (mut pc, mut a) = (0usize, 0u32);
            loop {
                let i = &prog[pc];
                match i.code {
                    LDH_ABS => {
                        a = u32::from(u16::from_be_bytes([
                            pkt[i.k as usize],
                            pkt[i.k as usize + 1],
                        ]))
                    }
                    LDB_ABS => a = u32::from(pkt[i.k as usize]),
                    JEQ_K => {
                        pc += usize::from(if a == i.k { i.jt } else { i.jf });
                    }
                    RET_K => return i.k,
                    _ => panic!("unexpected opcode"),
                }
                pc += 1;
            }
        }
        let ip = Ipv4Addr::new(10, 1, 0, 100);
        assert_eq!(
            run(&ARP_REPLY_FILTER, &arp_reply([2, 0, 0, 0, 0, 1], ip)),
            0xffff
        );
        assert_eq!(run(&ARP_REPLY_FILTER, &arp_request(MAC, ip)), 0);
        let target: Ipv6Addr = "fd00::64".parse().unwrap();
        assert_eq!(
            run(&ADVERT_FILTER, &advert([2, 0, 0, 0, 0, 1], target, true)),
            0xffff
        );
        assert_eq!(run(&ADVERT_FILTER, &neighbour_solicitation(MAC, target)), 0);
    }
}
