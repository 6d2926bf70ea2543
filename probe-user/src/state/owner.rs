//! Owner or impostor: one TLS handshake of netprobe's own to a stuck
//! handshake's address and port through each MAC that claims the next hop.
//! The MAC that answers with a ServerHello serves the address.
//!
//! How a handshake goes "through a MAC" without touching the node: the
//! socket is netprobe's own, marked `PIN_MARK_BASE + slot` (SO_MARK) and
//! bound to the route's device; the TC egress classifier rewrites the
//! destination MAC of frames with that mark to `PIN_MAC[slot]` (and counts
//! them). No neighbour entry, route or rule changes, and no other socket's
//! frames carry the mark. The kernel still resolves the next hop through
//! its entry as for any packet (so an entry in STALE may be re-confirmed);
//! its MAC is never changed.
//!
//! What is sent: a minimal ClientHello (TLS 1.2 and 1.3 offered, the stuck
//! hello's SNI, an X25519 key share), then up to [`READ_MAX`] bytes are read
//! until [`REPLY_DEADLINE`]. The socket is then reset (SO_LINGER 0): the
//! handshake is never finished, nothing is left in TIME_WAIT.
//!
//! Bounded: one round per (address, port) per [`REUSE`] (later stuck
//! handshakes to it share the answer), at most [`MAX_MACS`] MACs a round,
//! at most [`ATTEMPTS_PER_WINDOW`] attempts per [`REUSE`] in all, and a
//! round lasts at most [`CONNECT_DEADLINE`] + [`REPLY_DEADLINE`].

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use aya::maps::{Array, MapData};
use probe_common::{PIN_MARK_BASE, PIN_SLOTS, PinSlot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::model::facts::{OwnerAttempt, OwnerOutcome, OwnerProbe};

/// How long the TCP handshake through one MAC may take.
pub const CONNECT_DEADLINE: Duration = Duration::from_millis(1000);
/// How long a ServerHello may take once the ClientHello is sent: a TLS
/// server answers a fresh hello in milliseconds, and the client's own hello
/// has waited the handshake timeout already; longer would bring the verdict
/// closer to kubectl's 10 s.
pub const REPLY_DEADLINE: Duration = Duration::from_millis(1000);
/// Bytes read at most: a record header and the handshake header decide.
const READ_MAX: usize = 4096;
/// One round per (address, port) this long; its answer is reused.
pub const REUSE: Duration = Duration::from_secs(10);
/// MACs probed in one round at most.
pub const MAX_MACS: usize = 4;
/// Attempts (one per MAC) in all per `REUSE`, whatever the targets.
pub const ATTEMPTS_PER_WINDOW: usize = 16;

/// The classifier's pin slots, once the programs are loaded.
static PINS: Mutex<Option<Pins>> = Mutex::new(None);

struct Pins {
    map: Array<MapData, PinSlot>,
    busy: [bool; PIN_SLOTS as usize],
}

/// Hands the loaded `PIN_MAC` map to the owner probes.
pub fn install(map: Array<MapData, PinSlot>) {
    *PINS.lock().unwrap_or_else(|e| e.into_inner()) = Some(Pins {
        map,
        busy: [false; PIN_SLOTS as usize],
    });
}

/// A pin slot held for one attempt; cleared (MAC zeroed) when dropped.
struct Slot(u32);

impl Slot {
    fn take(mac: [u8; 6]) -> Result<Slot, String> {
        let mut guard = PINS.lock().unwrap_or_else(|e| e.into_inner());
        let pins = guard
            .as_mut()
            .ok_or("the classifier's pin map is not loaded")?;
        let i = pins
            .busy
            .iter()
            .position(|b| !b)
            .ok_or("every pin slot is in use")?;
        let value = PinSlot {
            mac,
            ..Default::default()
        };
        pins.map
            .set(i as u32, value, 0)
            .map_err(|e| format!("writing pin slot {i}: {e}"))?;
        pins.busy[i] = true;
        Ok(Slot(i as u32))
    }

    fn mark(&self) -> u32 {
        PIN_MARK_BASE + self.0
    }

    /// Frames the classifier rewrote for this slot so far.
    fn frames(&self) -> u32 {
        let guard = PINS.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .and_then(|p| p.map.get(&self.0, 0).ok())
            .map_or(0, |s| s.frames)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut guard = PINS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = guard.as_mut() {
            if let Err(e) = p.map.set(self.0, PinSlot::default(), 0) {
                log::warn!("clearing pin slot {}: {e}", self.0);
            }
            p.busy[self.0 as usize] = false;
        }
    }
}

#[derive(Default)]
struct Gate {
    recent: HashMap<SocketAddr, (Instant, OwnerProbe)>,
    attempts: VecDeque<Instant>,
}

static GATE: Mutex<Option<Gate>> = Mutex::new(None);

/// Whether a round may run now: the earlier answer to reuse, or why not.
pub enum Admit {
    Run,
    Reuse(OwnerProbe),
    Skip(String),
}

/// Admits a round of `macs` attempts to `dst` (and counts them).
pub fn admit(dst: SocketAddr, macs: usize) -> Admit {
    let mut guard = GATE.lock().unwrap_or_else(|e| e.into_inner());
    let g = guard.get_or_insert_with(Gate::default);
    let now = Instant::now();
    g.recent.retain(|_, (at, _)| now - *at < REUSE);
    if let Some((_, p)) = g.recent.get(&dst) {
        return Admit::Reuse(p.clone());
    }
    while g.attempts.front().is_some_and(|t| now - *t >= REUSE) {
        g.attempts.pop_front();
    }
    if g.attempts.len() + macs > ATTEMPTS_PER_WINDOW {
        return Admit::Skip(format!(
            "rate limit ({ATTEMPTS_PER_WINDOW} owner-probe handshakes per {} s) reached",
            REUSE.as_secs()
        ));
    }
    g.attempts.extend(std::iter::repeat_n(now, macs));
    Admit::Run
}

fn remember(p: &OwnerProbe) {
    let mut guard = GATE.lock().unwrap_or_else(|e| e.into_inner());
    let g = guard.get_or_insert_with(Gate::default);
    g.recent.insert(p.dst, (Instant::now(), p.clone()));
}

/// One handshake through each of `macs` (at most [`MAX_MACS`]) to `dst`
/// out of `dev`, all at once. Call after [`admit`] said `Run`.
pub async fn probe(dst: SocketAddr, dev: &str, macs: &[String], sni: Option<&str>) -> OwnerProbe {
    let attempts = macs
        .iter()
        .take(MAX_MACS)
        .map(|mac| through(dst, dev, mac, sni));
    let attempts = futures_util::future::join_all(attempts).await;
    let p = OwnerProbe {
        dst,
        dev: dev.to_string(),
        sni: sni.map(str::to_string),
        attempts,
    };
    remember(&p);
    p
}

/// Adds a handshake through each of `macs` (MACs found after `p` started)
/// to `p`, within [`MAX_MACS`] a round and the global cap.
pub async fn extend(p: &mut OwnerProbe, macs: &[String]) {
    let room = MAX_MACS.saturating_sub(p.attempts.len());
    let macs: Vec<&String> = macs.iter().take(room).collect();
    if macs.is_empty() {
        return;
    }
    {
        let mut guard = GATE.lock().unwrap_or_else(|e| e.into_inner());
        let g = guard.get_or_insert_with(Gate::default);
        let now = Instant::now();
        while g.attempts.front().is_some_and(|t| now - *t >= REUSE) {
            g.attempts.pop_front();
        }
        if g.attempts.len() + macs.len() > ATTEMPTS_PER_WINDOW {
            return;
        }
        g.attempts.extend(std::iter::repeat_n(now, macs.len()));
    }
    let sni = p.sni.clone();
    let attempts = macs
        .iter()
        .map(|mac| through(p.dst, &p.dev, mac, sni.as_deref()));
    let attempts = futures_util::future::join_all(attempts).await;
    p.attempts.extend(attempts);
    remember(p);
}

fn failed(mac: &str, error: String) -> OwnerAttempt {
    OwnerAttempt {
        mac: mac.to_string(),
        outcome: OwnerOutcome::Failed,
        connect_ms: None,
        after_ms: 0,
        frames: 0,
        error: Some(error),
    }
}

/// One handshake to `dst` whose frames leave `dev` toward `mac`.
async fn through(dst: SocketAddr, dev: &str, mac: &str, sni: Option<&str>) -> OwnerAttempt {
    let Some(bytes) = parse_mac(mac) else {
        return failed(mac, format!("bad MAC {mac}"));
    };
    let slot = match Slot::take(bytes) {
        Ok(s) => s,
        Err(e) => return failed(mac, e),
    };
    let socket = match socket(dst, dev, slot.mark()) {
        Ok(s) => s,
        Err(e) => return failed(mac, format!("socket: {e}")),
    };
    let start = Instant::now();
    let (outcome, connect_ms, after) = match exchange(socket, dst, sni, start).await {
        Exchange::Connect(outcome) => (outcome, None, start.elapsed()),
        Exchange::Replied {
            outcome,
            connected,
            sent,
        } => (outcome, Some(ms(connected - start)), sent.elapsed()),
    };
    OwnerAttempt {
        mac: mac.to_string(),
        outcome,
        connect_ms,
        after_ms: ms(after),
        frames: slot.frames(),
        error: None,
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

enum Exchange {
    /// The TCP handshake did not end in a connection.
    Connect(OwnerOutcome),
    Replied {
        outcome: OwnerOutcome,
        connected: Instant,
        sent: Instant,
    },
}

fn socket(dst: SocketAddr, dev: &str, mark: u32) -> std::io::Result<tokio::net::TcpSocket> {
    let s = match dst {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    let r = socket2::SockRef::from(&s);
    r.set_mark(mark)?;
    // Out of the route's device, where netprobe's classifier sets the MAC.
    r.bind_device(Some(dev.as_bytes()))?;
    // Reset on close: no FIN exchange, nothing left in TIME_WAIT.
    r.set_linger(Some(Duration::ZERO))?;
    r.set_tcp_nodelay(true)?;
    Ok(s)
}

async fn exchange(
    socket: tokio::net::TcpSocket,
    dst: SocketAddr,
    sni: Option<&str>,
    start: Instant,
) -> Exchange {
    let mut stream = match tokio::time::timeout(CONNECT_DEADLINE, socket.connect(dst)).await {
        Err(_) => return Exchange::Connect(OwnerOutcome::NoAnswer),
        Ok(Err(e)) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            return Exchange::Connect(OwnerOutcome::Refused);
        }
        Ok(Err(_)) => return Exchange::Connect(OwnerOutcome::NoAnswer),
        Ok(Ok(s)) => s,
    };
    let connected = Instant::now();
    debug_assert!(connected >= start);
    let hello = client_hello(sni, random(), random());
    let sent = Instant::now();
    if stream.write_all(&hello).await.is_err() {
        return Exchange::Replied {
            outcome: OwnerOutcome::Closed,
            connected,
            sent,
        };
    }
    let mut buf = vec![0u8; READ_MAX];
    let mut have = 0;
    let deadline = tokio::time::Instant::from_std(sent + REPLY_DEADLINE);
    let outcome = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf[have..])).await {
            Err(_) => break OwnerOutcome::Silent,
            Ok(Err(_)) | Ok(Ok(0)) => {
                break match reply(&buf[..have]) {
                    Reply::Incomplete if have == 0 => OwnerOutcome::Closed,
                    Reply::Incomplete => OwnerOutcome::NotTls,
                    r => r.outcome(),
                };
            }
            Ok(Ok(n)) => {
                have += n;
                match reply(&buf[..have]) {
                    Reply::Incomplete if have < buf.len() => continue,
                    Reply::Incomplete => break OwnerOutcome::NotTls,
                    r => break r.outcome(),
                }
            }
        }
    };
    // Dropped with SO_LINGER 0: a reset, the handshake abandoned.
    drop(stream);
    Exchange::Replied {
        outcome,
        connected,
        sent,
    }
}

fn random() -> [u8; 32] {
    let mut b = [0u8; 32];
    // SAFETY: writes at most 32 bytes into the buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // Not secret: a ClientHello's random and a key share nobody uses.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
        }
    }
    b
}

fn parse_mac(mac: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// What the first bytes back say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Not enough bytes to tell.
    Incomplete,
    /// A handshake record whose first message is a ServerHello (type 2;
    /// a TLS 1.3 HelloRetryRequest is one too: a TLS server answered).
    ServerHello,
    Alert,
    /// A TLS record of another kind (or another handshake message).
    OtherTls,
    NotTls,
}

impl Reply {
    fn outcome(self) -> OwnerOutcome {
        match self {
            Reply::ServerHello => OwnerOutcome::ServerHello,
            Reply::Alert => OwnerOutcome::Alert,
            Reply::OtherTls => OwnerOutcome::OtherTls,
            Reply::NotTls | Reply::Incomplete => OwnerOutcome::NotTls,
        }
    }
}

const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_SERVER_HELLO: u8 = 2;

/// Recognises the server's first record from its first bytes.
pub fn reply(b: &[u8]) -> Reply {
    let Some(&content) = b.first() else {
        return Reply::Incomplete;
    };
    if !(20..=23).contains(&content) {
        return Reply::NotTls;
    }
    if b.len() < 5 {
        return Reply::Incomplete;
    }
    let len = u16::from_be_bytes([b[3], b[4]]);
    if b[1] != 3 || b[2] > 4 || len == 0 || len > (1 << 14) + 2048 {
        return Reply::NotTls;
    }
    match content {
        CONTENT_ALERT => Reply::Alert,
        CONTENT_HANDSHAKE => match b.get(5) {
            None => Reply::Incomplete,
            Some(&HANDSHAKE_SERVER_HELLO) => Reply::ServerHello,
            Some(_) => Reply::OtherTls,
        },
        _ => Reply::OtherTls,
    }
}

/// A minimal ClientHello: TLS 1.3 and 1.2 with common AEAD suites, the SNI
/// (when given), X25519 and P-256, and one X25519 key share (`key`: any
/// 32 bytes; the handshake is never finished).
pub fn client_hello(sni: Option<&str>, random: [u8; 32], key: [u8; 32]) -> Vec<u8> {
    fn u16be(v: &mut Vec<u8>, x: usize) {
        v.extend_from_slice(&(x as u16).to_be_bytes());
    }
    fn ext(v: &mut Vec<u8>, kind: u16, body: &[u8]) {
        v.extend_from_slice(&kind.to_be_bytes());
        u16be(v, body.len());
        v.extend_from_slice(body);
    }
    let mut exts = Vec::with_capacity(256);
    if let Some(name) = sni.filter(|n| !n.is_empty() && n.len() < 256) {
        // server_name_list { host_name(0), name }
        let mut b = Vec::new();
        u16be(&mut b, name.len() + 3);
        b.push(0);
        u16be(&mut b, name.len());
        b.extend_from_slice(name.as_bytes());
        ext(&mut exts, 0, &b);
    }
    // supported_groups: x25519, secp256r1, secp384r1.
    ext(&mut exts, 10, &[0, 6, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18]);
    // ec_point_formats: uncompressed.
    ext(&mut exts, 11, &[1, 0]);
    // signature_algorithms.
    let sigs: [u16; 9] = [
        0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601, 0x0201,
    ];
    let mut b = Vec::new();
    u16be(&mut b, sigs.len() * 2);
    for s in sigs {
        b.extend_from_slice(&s.to_be_bytes());
    }
    ext(&mut exts, 13, &b);
    // extended_master_secret, renegotiation_info (empty).
    ext(&mut exts, 23, &[]);
    ext(&mut exts, 0xff01, &[0]);
    // supported_versions: TLS 1.3, TLS 1.2.
    ext(&mut exts, 43, &[4, 0x03, 0x04, 0x03, 0x03]);
    // key_share: x25519 with `key`.
    let mut b = Vec::new();
    u16be(&mut b, 4 + key.len());
    b.extend_from_slice(&[0x00, 0x1d]);
    u16be(&mut b, key.len());
    b.extend_from_slice(&key);
    ext(&mut exts, 51, &b);

    let suites: [u16; 9] = [
        0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8,
    ];
    let mut body = Vec::with_capacity(512);
    body.extend_from_slice(&[0x03, 0x03]);
    body.extend_from_slice(&random);
    // A 32-byte legacy session id (TLS 1.3 middlebox compatibility).
    body.push(32);
    body.extend_from_slice(&key.map(|x| x ^ 0x5a));
    u16be(&mut body, suites.len() * 2);
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    u16be(&mut body, exts.len());
    body.extend_from_slice(&exts);

    let mut out = Vec::with_capacity(body.len() + 9);
    out.extend_from_slice(&[CONTENT_HANDSHAKE, 0x03, 0x01]);
    u16be(&mut out, body.len() + 4);
    out.push(1); // client_hello
    out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tls_parser::{
        TlsExtension, TlsMessage, TlsMessageHandshake, parse_tls_extensions, parse_tls_plaintext,
    };

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/src/pipeline/tls_fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("fixture");
        let hex: String = text.chars().filter(char::is_ascii_hexdigit).collect();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn the_client_hello_parses_with_its_sni_and_versions() {
        let b = client_hello(Some("kubernetes"), [7; 32], [9; 32]);
        let (rest, rec) = parse_tls_plaintext(&b).expect("a TLS record");
        assert!(rest.is_empty());
        let Some(TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch))) = rec.msg.first()
        else {
            panic!("not a ClientHello: {rec:?}");
        };
        assert_eq!(ch.version.0, 0x0303);
        assert_eq!(ch.random, &[7u8; 32][..]);
        let (_, exts) = parse_tls_extensions(ch.ext.expect("extensions")).expect("extensions");
        let sni = exts.iter().find_map(|e| match e {
            TlsExtension::SNI(names) => names.first().map(|(_, n)| n.to_vec()),
            _ => None,
        });
        assert_eq!(sni.as_deref(), Some(&b"kubernetes"[..]));
        assert!(exts.iter().any(|e| matches!(
            e,
            TlsExtension::SupportedVersions(v) if v.iter().any(|x| x.0 == 0x0304)
        )));
        assert!(exts.iter().any(|e| matches!(e, TlsExtension::KeyShare(_))));
    }

    #[test]
    fn the_client_hello_without_sni_has_no_server_name() {
        let b = client_hello(None, [1; 32], [2; 32]);
        let (_, rec) = parse_tls_plaintext(&b).expect("a TLS record");
        let Some(TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch))) = rec.msg.first()
        else {
            panic!("not a ClientHello");
        };
        let (_, exts) = parse_tls_extensions(ch.ext.unwrap()).unwrap();
        assert!(!exts.iter().any(|e| matches!(e, TlsExtension::SNI(_))));
        // And netprobe's own hello parser reads it as a hello.
        assert_eq!(reply(&b), Reply::OtherTls);
    }

    #[test]
    fn a_real_server_hello_is_recognised_from_its_first_bytes() {
        let sh = fixture("server_hello_openssl3.hex");
        assert_eq!(reply(&sh), Reply::ServerHello);
        assert_eq!(reply(&sh[..6]), Reply::ServerHello);
        assert_eq!(reply(&sh[..5]), Reply::Incomplete);
        assert_eq!(reply(&sh[..1]), Reply::Incomplete);
        assert_eq!(reply(&[]), Reply::Incomplete);
    }

    #[test]
    fn alerts_other_records_and_plain_text_are_not_server_hellos() {
        assert_eq!(reply(&[21, 3, 3, 0, 2, 2, 112]), Reply::Alert);
        let ch = fixture("client_hello_openssl3.hex");
        assert_eq!(reply(&ch), Reply::OtherTls);
        assert_eq!(reply(&[23, 3, 3, 0, 10, 0]), Reply::OtherTls);
        assert_eq!(reply(b"HTTP/1.1 400 Bad Request\r\n"), Reply::NotTls);
        assert_eq!(reply(b"SSH-2.0-OpenSSH"), Reply::NotTls);
        // A record header that lies about its length is not TLS.
        assert_eq!(reply(&[22, 3, 3, 0xff, 0xff, 2]), Reply::NotTls);
    }

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("02:6e:70:c8:01:0b"),
            Some([2, 0x6e, 0x70, 0xc8, 1, 0xb])
        );
        assert_eq!(parse_mac("02:6e:70"), None);
        assert_eq!(parse_mac("02:6e:70:c8:01:0b:00"), None);
    }

    #[test]
    fn rounds_are_rate_limited_per_target_and_in_all() {
        let dst: SocketAddr = "192.0.2.1:6443".parse().unwrap();
        assert!(matches!(admit(dst, 2), Admit::Run));
        remember(&OwnerProbe {
            dst,
            dev: "eth0".into(),
            sni: None,
            attempts: vec![],
        });
        assert!(matches!(admit(dst, 2), Admit::Reuse(_)));
        let mut skipped = false;
        for i in 0..ATTEMPTS_PER_WINDOW {
            let other: SocketAddr = format!("192.0.2.{}:6443", i + 2).parse().unwrap();
            if let Admit::Skip(why) = admit(other, 2) {
                assert!(why.contains("rate limit"), "{why}");
                skipped = true;
                break;
            }
        }
        assert!(skipped, "the global cap never applied");
    }
}
