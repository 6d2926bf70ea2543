//! Raw TCP sender: connect, write chosen chunks with pauses (TCP_NODELAY, so
//! each chunk leaves as its own segment), then read what comes back.
//! Used to split a ClientHello across segments or send garbage.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::cmd;
use crate::netns::Netns;
use crate::py;

const SCRIPT: &str = r#"
import json, socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
pause, read_for, want = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
chunks = [bytes.fromhex(h) for h in sys.argv[6:]]
v6 = ':' in host
out = {'connected': False, 'local': None, 'sent': 0, 'received': '',
       'closed_by_peer': False, 'error': None}
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.settimeout(5)
got = b''
try:
    s.connect((host, port))
    out['connected'] = True
    l = s.getsockname()
    out['local'] = ('[%s]:%d' if v6 else '%s:%d') % (l[0], l[1])
    for i, c in enumerate(chunks):
        if i:
            time.sleep(pause)
        s.sendall(c)
        out['sent'] += len(c)
    end = time.monotonic() + read_for
    while want == 0 or len(got) < want:
        left = end - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            d = s.recv(65536)
        except socket.timeout:
            break
        if not d:
            out['closed_by_peer'] = True
            break
        got += d
except Exception as e:
    out['error'] = '%s: %s' % (type(e).__name__, e)
out['received'] = got.hex()
print(json.dumps(out))
"#;

/// What to send and how long to listen for an answer.
#[derive(Clone, Debug)]
pub struct RawPlan {
    /// Written in order, `pause` apart. Each goes in one argv entry as hex:
    /// keep each under ~60 KiB.
    pub chunks: Vec<Vec<u8>>,
    pub pause: Duration,
    /// Read for at most this long after the last write...
    pub read_for: Duration,
    /// ...or until this many bytes came back (0: read the whole time).
    pub read_at_least: usize,
}

impl RawPlan {
    /// `bytes` cut at the given offsets, `pause` between the pieces.
    pub fn split(bytes: &[u8], at: &[usize], pause: Duration) -> RawPlan {
        let mut chunks = Vec::new();
        let mut start = 0;
        for &cut in at {
            assert!(cut > start && cut < bytes.len(), "bad cut {cut}");
            chunks.push(bytes[start..cut].to_vec());
            start = cut;
        }
        chunks.push(bytes[start..].to_vec());
        RawPlan {
            chunks,
            pause,
            read_for: Duration::from_secs(2),
            read_at_least: 1,
        }
    }
}

#[derive(Debug)]
pub struct RawOutcome {
    pub connected: bool,
    /// Our end, "ip:port" / "[v6]:port": identifies the flow in events.
    pub local: Option<String>,
    pub sent: usize,
    pub received: Vec<u8>,
    pub closed_by_peer: bool,
    pub error: Option<String>,
}

/// Runs `plan` against `dst` from `ns`. Connect is bounded to 5 s.
pub fn raw_tcp_send(ns: &Netns, dst: SocketAddr, plan: &RawPlan) -> RawOutcome {
    let mut args = vec![
        dst.ip().to_string(),
        dst.port().to_string(),
        plan.pause.as_secs_f64().to_string(),
        plan.read_for.as_secs_f64().to_string(),
        plan.read_at_least.to_string(),
    ];
    args.extend(plan.chunks.iter().map(|c| hex(c)));
    let bound = Duration::from_secs(10) + plan.pause * plan.chunks.len() as u32 + plan.read_for;
    let done = cmd::run_bounded(&mut py::command(ns, SCRIPT, &args), bound);
    let v: Value = serde_json::from_str(done.stdout().trim())
        .unwrap_or_else(|e| panic!("raw sender gave no result ({e}): {}", done.report()));
    RawOutcome {
        connected: v["connected"].as_bool().unwrap_or(false),
        local: v["local"].as_str().map(String::from),
        sent: v["sent"].as_u64().unwrap_or(0) as usize,
        received: unhex(v["received"].as_str().unwrap_or("")),
        closed_by_peer: v["closed_by_peer"].as_bool().unwrap_or(false),
        error: v["error"].as_str().map(String::from),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex from python"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_split() {
        assert_eq!(unhex(&hex(&[0, 0x16, 0xff])), [0, 0x16, 0xff]);
        let p = RawPlan::split(b"abcdef", &[2, 5], Duration::ZERO);
        assert_eq!(p.chunks, [b"ab".to_vec(), b"cde".to_vec(), b"f".to_vec()]);
    }
}
