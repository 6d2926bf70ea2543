//! ICMP echo from inside a namespace. iputils-ping is not installed on the
//! lab hosts, so this is a raw-socket python3 pinger (root only).

use std::net::IpAddr;
use std::time::Duration;

use crate::cmd;
use crate::netns::Netns;
use crate::py;

// Sends `count` echoes `interval` apart, then waits up to `wait` after the
// last one (stopping early once all are answered); prints "<replies> <first rtt or -1>". Exit 0 always (send
// errors such as "network unreachable" count as no reply).
const PING: &str = r#"
import os, select, socket, struct, sys, time
dst, wait, count, interval = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
v6 = ':' in dst
ident = os.getpid() & 0xffff
if v6:
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    req, rep = 128, 129
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    req, rep = 8, 0
def csum(b):
    x = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    x = (x >> 16) + (x & 0xffff); x += x >> 16
    return ~x & 0xffff
sent_at, got, first = {}, set(), -1.0
def drain(until, last):
    global first
    while not (last and len(got) == count):
        left = until - time.monotonic()
        if left <= 0 or not select.select([s], [], [], left)[0]:
            return
        d = s.recv(4096)
        if not v6:
            d = d[(d[0] & 15) * 4:]
        if len(d) < 8 or d[0] != rep:
            continue
        i, q = struct.unpack('!HH', d[4:8])
        if i == ident and q in sent_at and q not in got:
            got.add(q)
            if first < 0:
                first = time.monotonic() - sent_at[q]
for q in range(1, count + 1):
    pkt = struct.pack('!BBHHH', req, 0, 0, ident, q) + b'netprobe-lab'
    if not v6:  # the kernel fills in ICMPv6 checksums, not ICMPv4 ones
        pkt = pkt[:2] + struct.pack('!H', csum(pkt)) + pkt[4:]
    sent_at[q] = time.monotonic()
    try:
        s.sendto(pkt, (dst, 0))
    except OSError as e:
        print(e, file=sys.stderr)
    drain(time.monotonic() + (interval if q < count else wait), q == count)
print(len(got), '%.6f' % first)
"#;

/// Replies to `count` echoes sent `interval` apart, waiting up to `wait`
/// after the last (less once all are answered).
pub fn ping_many(ns: &Netns, dst: IpAddr, count: u32, interval: Duration, wait: Duration) -> u32 {
    run(ns, dst, count, interval, wait).0
}

/// One echo request: the round-trip time if a reply came within `timeout`.
pub fn ping(ns: &Netns, dst: IpAddr, timeout: Duration) -> Option<Duration> {
    let (n, rtt) = run(ns, dst, 1, Duration::ZERO, timeout);
    (n == 1).then_some(rtt).flatten()
}

fn run(
    ns: &Netns,
    dst: IpAddr,
    count: u32,
    interval: Duration,
    wait: Duration,
) -> (u32, Option<Duration>) {
    assert!(count >= 1);
    let args = [
        dst.to_string(),
        wait.as_secs_f64().to_string(),
        count.to_string(),
        interval.as_secs_f64().to_string(),
    ];
    let bound = interval * count + wait + Duration::from_secs(5);
    let done = cmd::run_bounded(&mut py::command(ns, PING, &args), bound);
    let out = done.stdout();
    let mut f = out.split_whitespace();
    let replies = f.next().and_then(|n| n.parse().ok());
    let rtt = f.next().and_then(|r| r.parse::<f64>().ok());
    match (done.success(), replies, rtt) {
        (true, Some(n), Some(r)) => (n, (r >= 0.0).then(|| Duration::from_secs_f64(r))),
        _ => panic!("pinger failed: {}", done.report()),
    }
}
