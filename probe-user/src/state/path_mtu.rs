//! How large a packet gets through to an address and back: ICMP echo
//! requests with DF set at a few sizes (as tracepath does), sent at once and
//! answered within a short window. A path whose full-size packets vanish
//! while small ones pass, with no "fragmentation needed" coming back, is an
//! MTU black hole. IPv4 only; a handful of packets per check.

use std::{
    io,
    mem::MaybeUninit,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};

use crate::model::facts::{PathCheck, SizeResult};

/// How long replies are waited for, all sizes together.
pub const WINDOW: Duration = Duration::from_millis(500);
/// IP packet sizes tried (those above the route's MTU are left out).
const SIZES: [u16; 6] = [1500, 1480, 1450, 1400, 1280, 576];
const IP_HDR: usize = 20;
/// Each size is sent this many times.
const ROUNDS: usize = 3;
const ICMP_HDR: usize = 8;

/// Checks the path to `dst` from this namespace. Blocking.
pub fn check(dst: Ipv4Addr) -> io::Result<PathCheck> {
    let route_mtu = route_mtu(dst)?;
    let mut sizes: Vec<u16> = vec![route_mtu];
    sizes.extend(SIZES.iter().copied().filter(|s| *s < route_mtu));
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    // DF on, and the cached path MTU ignored: every size goes out as asked.
    let probe: libc::c_int = libc::IP_PMTUDISC_PROBE;
    // SAFETY: a valid int option on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&probe as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let to = SocketAddr::V4(SocketAddrV4::new(dst, 0)).into();
    let id = (std::process::id() as u16) ^ 0x6e70;
    let mut results: Vec<SizeResult> = sizes
        .iter()
        .map(|size| SizeResult {
            size: *size,
            sent: false,
            answered: false,
        })
        .collect();
    // A few rounds, so one lost packet does not pass for a size that never
    // gets through: sequence numbers are round * sizes + index.
    for round in 0..ROUNDS {
        for (i, size) in sizes.iter().enumerate() {
            let seq = (round * sizes.len() + i) as u16;
            let packet = echo(id, seq, usize::from(*size) - IP_HDR);
            results[i].sent |= sock.send_to(&packet, &to).is_ok();
        }
    }
    let mut frag_needed = None;
    let deadline = Instant::now() + WINDOW;
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    // Bounded: one read per reply at most, and never past the window.
    for _ in 0..64 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left))?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // SAFETY: recv initialised the first n bytes.
        let bytes: Vec<u8> = buf[..n]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        match parse(&bytes, id, dst) {
            Some(Reply::Echo(seq)) => {
                if let Some(r) = results.get_mut(usize::from(seq) % sizes.len()) {
                    r.answered = true;
                }
            }
            Some(Reply::FragNeeded(mtu)) => frag_needed = Some(mtu),
            None => {}
        }
    }
    Ok(PathCheck {
        dst: dst.into(),
        route_mtu,
        sizes: results,
        frag_needed,
    })
}

/// The MTU the kernel would use toward `dst` (route or cached path MTU).
fn route_mtu(dst: Ipv4Addr) -> io::Result<u16> {
    let udp = UdpSocket::bind("0.0.0.0:0")?;
    udp.connect(SocketAddrV4::new(dst, 9))?;
    let mut mtu: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid int out-parameter on a socket we own.
    let rc = unsafe {
        libc::getsockopt(
            udp.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(mtu.clamp(576, 9000) as u16)
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request of `len` bytes (header included).
pub fn echo(id: u16, seq: u16, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len.max(ICMP_HDR)];
    p[0] = 8;
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p[ICMP_HDR..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Echo(u16),
    FragNeeded(u16),
}

/// A reply to our echo (by id), or a "fragmentation needed" about one.
fn parse(packet: &[u8], id: u16, dst: Ipv4Addr) -> Option<Reply> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    let icmp = packet.get(ihl..)?;
    match (icmp.first()?, icmp.get(1)?) {
        (0, 0) => {
            let from = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
            let rid = u16::from_be_bytes([*icmp.get(4)?, *icmp.get(5)?]);
            (from == dst && rid == id).then(|| Reply::Echo(u16::from_be_bytes([icmp[6], icmp[7]])))
        }
        (3, 4) => {
            // The offending packet's headers follow: our echo, by id.
            let inner = icmp.get(ICMP_HDR..)?;
            let inner_ihl = usize::from(inner.first()? & 0x0f) * 4;
            let inner_icmp = inner.get(inner_ihl..)?;
            let rid = u16::from_be_bytes([*inner_icmp.get(4)?, *inner_icmp.get(5)?]);
            (rid == id).then(|| Reply::FragNeeded(u16::from_be_bytes([icmp[6], icmp[7]])))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_checksum_verifies() {
        let p = echo(0x1234, 3, 1472);
        assert_eq!(p.len(), 1472);
        assert_eq!(checksum(&p), 0, "a correct checksum sums to zero");
        assert_eq!(&p[4..8], &[0x12, 0x34, 0, 3]);
    }

    #[test]
    fn replies_and_frag_needed_are_recognised() {
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        let mut reply = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
        ];
        reply.extend([0, 0, 0, 0, 0x12, 0x34, 0, 5]);
        assert_eq!(parse(&reply, 0x1234, dst), Some(Reply::Echo(5)));
        assert_eq!(parse(&reply, 0x9999, dst), None, "someone else's echo");
        let mut frag = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 1, 1, 10, 0, 0, 1,
        ];
        frag.extend([3, 4, 0, 0, 0, 0, 0x05, 0x78]);
        frag.extend([
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        frag.extend([8, 0, 0, 0, 0x12, 0x34, 0, 0]);
        assert_eq!(parse(&frag, 0x1234, dst), Some(Reply::FragNeeded(1400)));
        assert_eq!(parse(&[], 1, dst), None);
    }
}
