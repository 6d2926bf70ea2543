//! End-to-end tests of `netprobe trace --json` against the real kernel:
//! what netprobe reports for traffic made in lab namespaces, that it leaves
//! nothing attached, and how it refuses bad input (issue 2, section 6).
//!
//! Root only. Run one at a time (tracepoints see every namespace, and the
//! cleanup checks look at every loaded BPF program):
//!
//! ```text
//! NETPROBE_BIN=$PWD/target/release/netprobe \
//!     cargo test -p netprobe-tests --test trace_events -- --test-threads=1
//! ```
//!
//! Events from tracepoints are global, so every test picks its own flows
//! out of the stream by the lab's addresses. On failure the messages carry
//! the lab's events as netprobe printed them, its final stats and stderr.

use netprobe_tests::{require_root, secs};
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use netprobe_tests::cleanup::{self, HeldBpf, NETPROBE_PROGRAMS};
use netprobe_tests::cmd::{self, Finished};
use netprobe_tests::netprobe::{binary, endpoint};
use netprobe_tests::peers::{EchoServer, LineClient, RawPlan, TlsServer, raw_tcp_send, tls_client};
use netprobe_tests::tls_bytes::{
    client_hello, is_server_hello, random_bytes, truncated_client_hello,
};
use netprobe_tests::{Host, Lab, Netns, Netprobe, Nud, Sniffer, Stopped, poll_until};
use serde_json::Value;

/// Loading and attaching (BTF, verifier, tcx per interface) takes a few
/// seconds on 2 cores; this bounds it generously.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// An event for traffic that already happened: the ring buffer is polled,
/// so this is milliseconds in practice.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bad input must be refused quickly.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(20);
/// BPF objects are freed shortly after their last fd closes.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Reading events
// ---------------------------------------------------------------------------

/// An "ip:port" field as a socket address (None if absent or malformed).
fn ep(v: &Value, field: &str) -> Option<SocketAddr> {
    endpoint(&v[field]).ok()
}

fn str_of<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v[field].as_str()
}

fn is_type(v: &Value, t: &str) -> bool {
    v["type"] == t
}

/// The lab's share of a run, for failure messages: every event naming one
/// of the lab's addresses or MACs, every stats line, counts by type, and
/// netprobe's stderr.
fn report(lab: &Lab, events: &[Value], stderr: &str) -> String {
    let mac_prefix = format!("02:6e:70:{:02x}:", lab.octet());
    let mine = |v: &Value| {
        is_type(v, "stats")
            || v.as_object().is_some_and(|o| {
                o.values().any(|f| {
                    f.as_str()
                        .is_some_and(|s| lab.contains_endpoint(s) || s.starts_with(&mac_prefix))
                })
            })
    };
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for v in events {
        *counts
            .entry(v["type"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    let lines: Vec<String> = events
        .iter()
        .filter(|v| mine(v))
        .map(Value::to_string)
        .collect();
    const MAX: usize = 300;
    let shown = lines.len().min(MAX);
    let stderr_tail: Vec<&str> = stderr.lines().rev().take(60).collect();
    format!(
        "--- netprobe events of this lab ({} of {} in total; by type {counts:?}){} ---\n{}\n\
         --- netprobe stderr (last {} lines) ---\n{}",
        lines.len(),
        events.len(),
        if shown < lines.len() {
            format!(", last {MAX} shown")
        } else {
            String::new()
        },
        lines[lines.len() - shown..].join("\n"),
        stderr_tail.len(),
        stderr_tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    )
}

/// A running `netprobe trace --json` and the lab it watches.
struct Trace<'a> {
    np: Netprobe,
    lab: &'a Lab,
}

impl<'a> Trace<'a> {
    /// `netprobe trace --json --netns NS args...`, started from the root
    /// namespace as an operator would point it at a pod's namespace.
    fn with_netns(lab: &'a Lab, ns: &Netns, args: &[&str]) -> Trace<'a> {
        let mut all = vec!["trace", "--json", "--netns", ns.name()];
        all.extend_from_slice(args);
        Self::ready(lab, Netprobe::start(all))
    }

    /// `netprobe trace --json args...` run inside `ns` (nsenter --net).
    fn inside(lab: &'a Lab, ns: &Netns, args: &[&str]) -> Trace<'a> {
        let mut all = vec!["trace", "--json"];
        all.extend_from_slice(args);
        Self::ready(lab, Netprobe::start_in(ns, all))
    }

    fn ready(lab: &'a Lab, mut np: Netprobe) -> Trace<'a> {
        if let Err(e) = np.wait_ready(READY_TIMEOUT) {
            panic!("netprobe did not get ready: {e:#}");
        }
        Trace { np, lab }
    }

    fn report(&self) -> String {
        report(self.lab, &self.np.events(), &self.np.stderr())
    }

    /// Events so far matching `pred`, in the order netprobe printed them.
    fn matching(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.np.events().into_iter().filter(|v| pred(v)).collect()
    }

    /// The first event matching `pred`; panics (with the report) when none
    /// comes within `timeout`.
    fn expect(&self, what: &str, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        self.np.wait_for(&pred, timeout).unwrap_or_else(|| {
            panic!(
                "netprobe reported no {what} within {timeout:?}\n{}",
                self.report()
            )
        })
    }

    /// Waits until at least `n` events match `pred`; returns all that do
    /// (possibly fewer than `n` at the deadline: the caller asserts).
    fn wait_count(&self, pred: impl Fn(&Value) -> bool, n: usize, timeout: Duration) -> Vec<Value> {
        poll_until(timeout, secs(0.05), || {
            let got = self.matching(&pred);
            (got.len() >= n).then_some(got)
        })
        .unwrap_or_else(|| self.matching(&pred))
    }

    /// SIGINT, then the checks every run must pass: a clean exit, only
    /// JSON objects with `type` and `time` on stdout, and exactly one final
    /// `stats` line, printed last, with `lost` == 0.
    fn stop(mut self) -> Stopped {
        let s = self.np.stop();
        let rep = || report(self.lab, &s.events, &s.stderr);
        check_stopped(&s, &rep);
        s
    }
}

/// See [`Trace::stop`].
fn check_stopped(s: &Stopped, rep: &dyn Fn() -> String) {
    assert!(
        s.clean_exit(),
        "netprobe did not exit 0 on SIGINT within the grace period (status {:?}, killed {})\n{}",
        s.status,
        s.killed,
        rep()
    );
    assert!(
        s.non_json_stdout.is_empty(),
        "non-JSON lines on stdout with --json: {:?}\n{}",
        s.non_json_stdout,
        rep()
    );
    for v in &s.events {
        assert!(
            v["type"].is_string() && is_rfc3339_utc(&v["time"]),
            "an object without `type` or an RFC 3339 UTC `time`: {v}"
        );
    }
    let finals: Vec<&Value> = s
        .of_type("stats")
        .into_iter()
        .filter(|v| v["final"] == true)
        .collect();
    assert_eq!(
        finals.len(),
        1,
        "want exactly one final stats line, got {finals:?}\n{}",
        rep()
    );
    assert_eq!(
        s.events.last(),
        Some(finals[0]),
        "the final stats line is not the last line\n{}",
        rep()
    );
    let fin = finals[0];
    assert!(
        fin["events"].is_u64(),
        "final stats without an `events` count: {fin}"
    );
    assert_eq!(
        fin["lost"].as_u64(),
        Some(0),
        "ring buffer records lost: {fin}\n{}",
        rep()
    );
    for stats in s.of_type("stats") {
        assert_eq!(stats["lost"].as_u64(), Some(0), "stats with loss: {stats}");
    }
}

/// "2026-11-21T12:00:00.123456Z"-like: date, `T`, time, `Z` (UTC).
fn is_rfc3339_utc(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let b = s.as_bytes();
    s.len() >= 20
        && s.ends_with('Z')
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[..4].iter().all(u8::is_ascii_digit)
}

// ---------------------------------------------------------------------------
// Nothing left behind
// ---------------------------------------------------------------------------

/// Every interface of the namespaces `hosts` live in.
fn lab_devices<'h>(hosts: &[&'h Host]) -> Vec<(Option<&'h Netns>, String)> {
    let mut devs = Vec::new();
    for h in hosts {
        let links = h.ip_json(["link", "show"]);
        for l in links.as_array().into_iter().flatten() {
            if let Some(name) = l["ifname"].as_str() {
                devs.push((Some(&*h.ns), name.to_string()));
            }
        }
    }
    devs
}

/// What a finished run left: any program or link it held while running
/// (`own`), any netprobe program or link no process holds any more (a TC
/// filter or pin outliving its process), TC filters and clsact qdiscs on
/// the lab's devices.
///
/// Not `cleanup::assert_nothing_left`: that fails on any netprobe program
/// loaded anywhere, and other users of this machine run netprobe too.
fn leftovers(own: &HeldBpf, devs: &[(Option<&Netns>, String)]) -> Vec<String> {
    let mut left = Vec::new();
    for p in cleanup::bpf_programs(NETPROBE_PROGRAMS) {
        if p["id"].as_u64().is_some_and(|id| own.progs.contains(&id)) {
            left.push(format!("bpf prog of this run still loaded: {p}"));
        }
    }
    for l in cleanup::bpf_links(NETPROBE_PROGRAMS) {
        if l["id"].as_u64().is_some_and(|id| own.links.contains(&id)) {
            left.push(format!("bpf link of this run still present: {l}"));
        }
    }
    left.extend(cleanup::bpf_orphans(NETPROBE_PROGRAMS));
    for (ns, dev) in devs {
        left.extend(cleanup::tc_leftovers(*ns, dev));
    }
    left
}

/// Waits (bounded: the kernel frees BPF objects shortly after the last fd
/// closes) until [`leftovers`] is empty; panics with what is left.
fn assert_released(own: &HeldBpf, devs: &[(Option<&Netns>, String)], rep: &dyn Fn() -> String) {
    let mut left = Vec::new();
    let gone = poll_until(RELEASE_TIMEOUT, secs(0.1), || {
        left = leftovers(own, devs);
        left.is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "left behind after {RELEASE_TIMEOUT:?}:\n{}\n{}",
        left.join("\n"),
        rep()
    );
}

// ---------------------------------------------------------------------------
// 1. TLS handshake to 6443, IPv4 and IPv6
// ---------------------------------------------------------------------------

/// openssl s_client in one host, s_server in the other, on one bridge;
/// netprobe attached in the client's namespace sees the ClientHello leave
/// (egress, to the server's MAC, with the SNI) and the ServerHello of the
/// same flow come back.
fn tls_handshake_is_reported(v6: bool, sni: &str) {
    require_root();
    let mut lab = Lab::new(if v6 { "tls6" } else { "tls4" });
    let seg = lab.bridge_segment(2);
    let (srv, cli) = (seg.host(0), seg.host(1));
    let server_ip = srv.addr(v6);
    let server = SocketAddr::new(server_ip, 6443);
    let _tls = TlsServer::start(srv, server_ip, 6443);
    let trace = Trace::with_netns(&lab, cli, &["--port", "6443"]);

    let hs = tls_client(cli, server_ip, 6443, Some(sni), secs(5.0));
    assert!(
        hs.handshake_done,
        "the handshake itself failed: {}",
        hs.report
    );

    let to_server = |v: &Value| is_type(v, "tls_client_hello") && ep(v, "dst") == Some(server);
    let ch = trace.expect("tls_client_hello to the server", to_server, EVENT_TIMEOUT);
    let client = ep(&ch, "src").expect("src is ip:port");
    let from_server = |v: &Value| {
        is_type(v, "tls_server_hello")
            && ep(v, "src") == Some(server)
            && ep(v, "dst") == Some(client)
    };
    trace.expect("tls_server_hello for that flow", from_server, EVENT_TIMEOUT);
    // The client's next flight (openssl 3: change cipher spec, then its
    // Finished): the server's flight arrived whole.
    let flight = trace.expect(
        "tls_client_flight for that flow",
        |v: &Value| {
            is_type(v, "tls_client_flight")
                && ep(v, "src") == Some(client)
                && ep(v, "dst") == Some(server)
        },
        EVENT_TIMEOUT,
    );
    assert_eq!(flight["record"], "change_cipher_spec", "{flight}");
    // Anything late (a duplicate) has had time to arrive.
    std::thread::sleep(secs(0.5));
    let rep = || trace.report();

    assert_eq!(
        client.ip(),
        cli.addr(v6),
        "ClientHello src: {ch}\n{}",
        rep()
    );
    assert_ne!(client.port(), 0, "{ch}");
    assert_eq!(ch["sni"], sni, "SNI: {ch}\n{}", rep());
    // First seen at the client's socket (the root cgroup's hook: no link
    // layer, so no MACs), in the client's namespace...
    assert_eq!(ch["direction"], "socket_egress", "{ch}\n{}", rep());
    assert!(ch["dst_mac"].is_null(), "{ch}\n{}", rep());
    assert_eq!(
        str_of(&ch, "iface"),
        Some(cli.ifname.as_str()),
        "{ch}\n{}",
        rep()
    );
    // ...then on the uplink's tc egress, toward the server's MAC.
    let hop = trace.expect(
        "tls_hop of that ClientHello on the uplink's egress",
        |v: &Value| {
            is_type(v, "tls_hop")
                && ep(v, "src") == Some(client)
                && ep(v, "dst") == Some(server)
                && v["direction"] == "egress"
        },
        EVENT_TIMEOUT,
    );
    assert_eq!(
        str_of(&hop, "dst_mac"),
        Some(srv.mac.as_str()),
        "dst_mac must be the server host's MAC: {hop}\n{}",
        rep()
    );
    assert_eq!(
        str_of(&hop, "src_mac"),
        Some(cli.mac.as_str()),
        "{hop}\n{}",
        rep()
    );
    assert_eq!(
        str_of(&hop, "iface"),
        Some(cli.ifname.as_str()),
        "{hop}\n{}",
        rep()
    );
    // openssl 3.0's ClientHello is a few hundred bytes: one segment.
    assert_eq!(ch["segments"], 1, "{ch}\n{}", rep());
    assert_eq!(ch["record_version"], "0x0301", "{ch}");
    assert_eq!(ch["handshake_version"], "0x0303", "{ch}");
    let inode = cli.inode();
    if let Some(n) = ch.get("netns") {
        assert_eq!(n.as_u64(), Some(inode), "netns of the ClientHello: {ch}");
    }

    let events = trace.np.events();
    let hellos: Vec<(usize, &Value)> = events
        .iter()
        .enumerate()
        .filter(|(_, v)| to_server(v))
        .collect();
    assert_eq!(
        hellos.len(),
        1,
        "one handshake, one ClientHello event: {hellos:?}\n{}",
        rep()
    );
    let servers: Vec<(usize, &Value)> = events
        .iter()
        .enumerate()
        .filter(|(_, v)| from_server(v))
        .collect();
    assert_eq!(
        servers.len(),
        1,
        "one ServerHello event: {servers:?}\n{}",
        rep()
    );
    let (ch_at, (sh_at, sh)) = (hellos[0].0, servers[0]);
    assert!(
        ch_at < sh_at,
        "ServerHello (line {sh_at}) printed before its ClientHello (line {ch_at})\n{}",
        rep()
    );
    assert_eq!(
        str_of(sh, "iface"),
        Some(cli.ifname.as_str()),
        "{sh}\n{}",
        rep()
    );
    assert_eq!(sh["direction"], "ingress", "{sh}\n{}", rep());
    // openssl 3 negotiates TLS 1.3: legacy body version 1.2, the real one
    // in supported_versions.
    assert_eq!(sh["handshake_version"], "0x0303", "{sh}\n{}", rep());
    assert_eq!(sh["selected_version"], "0x0304", "{sh}\n{}", rep());
    assert_eq!(
        str_of(sh, "src_mac"),
        Some(srv.mac.as_str()),
        "{sh}\n{}",
        rep()
    );
    assert_eq!(
        str_of(sh, "dst_mac"),
        Some(cli.mac.as_str()),
        "{sh}\n{}",
        rep()
    );
    assert!(
        is_rfc3339_utc(&ch["time"]) && ch["time"].as_str() <= sh["time"].as_str(),
        "times out of order: {ch} / {sh}"
    );

    let stopped = trace.stop();
    assert!(
        stopped.stderr.contains("netprobe: ready"),
        "{}",
        stopped.stderr
    );
}

#[test]
fn tls_handshake_ipv4_client_and_server_hello() {
    tls_handshake_is_reported(false, "api.v4.lab");
}

#[test]
fn tls_handshake_ipv6_client_and_server_hello() {
    tls_handshake_is_reported(true, "api.v6.lab");
}

// ---------------------------------------------------------------------------
// 2. Split ClientHello on a non-default port; garbage and truncation
// ---------------------------------------------------------------------------

/// Payload length of a tcpdump line ("..., length 40").
fn tcp_payload_len(line: &str) -> Option<usize> {
    line.rsplit_once("length ")?.1.trim().parse().ok()
}

#[test]
fn split_client_hello_on_8443_and_garbage_do_not_fool_it() {
    require_root();
    let mut lab = Lab::new("split");
    let (cli, srv) = lab.pair();
    let server = SocketAddr::new(srv.ipv4.into(), 8443);
    let _tls = TlsServer::start(&srv, srv.ipv4.into(), 8443);
    let sniff = Sniffer::start(&cli, &cli.ifname, "tcp dst port 8443");
    let trace = Trace::with_netns(&lab, &cli, &["--port", "8443", "--iface", &cli.ifname]);

    // A real ClientHello in two segments, 0.3 s apart; the server answers.
    let hello = client_hello(Some("split.lab"));
    let mut plan = RawPlan::split(&hello, &[40], secs(0.3));
    plan.read_at_least = 6;
    let out = raw_tcp_send(&cli, server, &plan);
    assert!(out.connected && out.error.is_none(), "{out:?}");
    assert!(
        is_server_hello(&out.received),
        "no ServerHello came back: {out:?}"
    );
    let local: SocketAddr = out
        .local
        .as_deref()
        .and_then(|l| l.parse().ok())
        .expect("raw sender's local address");
    // Ground truth: two data segments on the wire (else the test, not
    // netprobe, is wrong).
    let wire = sniff.wait_for(2, |l| tcp_payload_len(l).unwrap_or(0) > 0, secs(3.0));
    let lens: Vec<usize> = wire.iter().filter_map(|l| tcp_payload_len(l)).collect();
    assert_eq!(
        lens,
        [40, hello.len() - 40],
        "segments on the wire: {wire:#?}"
    );

    let split_flow = |v: &Value| is_type(v, "tls_client_hello") && ep(v, "src") == Some(local);
    let ch = trace.expect(
        "tls_client_hello of the split flow",
        split_flow,
        EVENT_TIMEOUT,
    );
    trace.expect(
        "tls_server_hello answering the split flow",
        |v| is_type(v, "tls_server_hello") && ep(v, "dst") == Some(local),
        EVENT_TIMEOUT,
    );
    let rep = || trace.report();
    assert_eq!(ep(&ch, "dst"), Some(server), "{ch}\n{}", rep());
    assert_eq!(
        ch["sni"],
        "split.lab",
        "SNI across segments: {ch}\n{}",
        rep()
    );
    assert_eq!(ch["segments"], 2, "{ch}\n{}", rep());
    // Reassembled from the client socket's copies; its first segment's
    // copy on the interface's egress carries the server's MAC.
    assert_eq!(ch["direction"], "socket_egress", "{ch}\n{}", rep());
    assert_eq!(
        str_of(&ch, "iface"),
        Some(cli.ifname.as_str()),
        "{ch}\n{}",
        rep()
    );
    let hop = trace.expect(
        "the split hello's hop on the interface's egress",
        |v| is_type(v, "tls_hop") && ep(v, "src") == Some(local) && v["direction"] == "egress",
        EVENT_TIMEOUT,
    );
    assert_eq!(
        str_of(&hop, "dst_mac"),
        Some(srv.mac.as_str()),
        "{hop}\n{}",
        rep()
    );

    // Now what is not a ClientHello, to the same port. Each connects (the
    // server accepts) and gets no ServerHello.
    let mut flows = Vec::new();
    let mut send = |what: &'static str, bytes: Vec<u8>| {
        let mut p = RawPlan::split(&bytes, &[], secs(0.0));
        p.read_at_least = 0;
        p.read_for = secs(0.5);
        let out = raw_tcp_send(&cli, server, &p);
        assert!(out.connected, "{what}: {out:?}");
        assert!(
            !is_server_hello(&out.received),
            "{what} was answered: {out:?}"
        );
        let local: SocketAddr = out.local.as_deref().and_then(|l| l.parse().ok()).unwrap();
        flows.push((what, local));
    };
    let mut junk = random_bytes(64);
    junk[0] = 0x17 ^ (junk[0] & 0x01); // not a handshake record (0x16)
    send("64 random bytes", junk);
    // A handshake record header announcing 64 bytes of noise.
    let mut noise = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    noise.extend(random_bytes(64));
    send("a handshake record of random bytes", noise);
    send(
        "the first 30 bytes of a ClientHello",
        truncated_client_hello(Some("cut.lab"), 30),
    );
    let long = client_hello(Some("cut.lab"));
    send(
        "a ClientHello record missing its last 10 bytes",
        truncated_client_hello(Some("cut.lab"), long.len() - 10),
    );

    // Still working after all that: a whole ClientHello is reported again.
    let after = tls_client(&cli, srv.ipv4.into(), 8443, Some("after.lab"), secs(5.0));
    assert!(after.handshake_done, "{}", after.report);
    let later = |v: &Value| is_type(v, "tls_client_hello") && v["sni"] == "after.lab";
    trace.expect("tls_client_hello after the garbage", later, EVENT_TIMEOUT);

    let mut trace = trace;
    assert!(
        trace.np.is_running(),
        "netprobe exited after garbage\n{}",
        trace.report()
    );
    let stopped = trace.stop();
    let rep = || report(&lab, &stopped.events, &stopped.stderr);
    // A hello whose rest never comes is reported after 1 s from its first
    // segment, marked `partial` (the handshake it starts may be the one
    // that hangs): never as a whole ClientHello.
    for (what, local) in &flows {
        let false_hellos: Vec<&Value> = stopped
            .events
            .iter()
            .filter(|v| {
                is_type(v, "tls_client_hello")
                    && ep(v, "src") == Some(*local)
                    && v["partial"] != true
            })
            .collect();
        assert!(
            false_hellos.is_empty(),
            "{what} from {local} was reported as a ClientHello: {false_hellos:?}\n{}",
            rep()
        );
    }
    let split: Vec<&Value> = stopped.events.iter().filter(|v| split_flow(v)).collect();
    assert_eq!(
        split.len(),
        1,
        "the split ClientHello must be reported once: {split:?}\n{}",
        rep()
    );
    let hellos: Vec<&Value> = stopped.of_type("tls_client_hello");
    let lab_hellos: Vec<&&Value> = hellos
        .iter()
        .filter(|v| ep(v, "dst") == Some(server) && v["partial"] != true)
        .collect();
    assert_eq!(
        lab_hellos.len(),
        2,
        "exactly the two real ClientHellos: {lab_hellos:?}\n{}",
        rep()
    );
}

// ---------------------------------------------------------------------------
// 3. Retransmits of an established flow whose peer drops silently
// ---------------------------------------------------------------------------

#[test]
fn silent_drop_gives_retransmits_with_tuple_state_growing_count_and_netns() {
    require_root();
    let mut lab = Lab::new("rtx");
    let (cli, srv) = lab.pair();
    let server = SocketAddr::new(srv.ipv4.into(), 8000);
    let _echo = EchoServer::start(&srv, srv.ipv4.into(), 8000);
    let trace = Trace::inside(&lab, &cli, &[]);

    let mut client = LineClient::start(&cli, server, secs(0.1));
    let local = client.local_addr();
    assert!(
        client.wait_echoes(3, secs(5.0)),
        "echoes flow before the drop"
    );
    let rtx_of_flow = |v: &Value| {
        is_type(v, "retransmit") && ep(v, "src") == Some(local) && ep(v, "dst") == Some(server)
    };
    assert!(
        trace.matching(rtx_of_flow).is_empty(),
        "retransmits reported while nothing was dropped\n{}",
        trace.report()
    );

    let kernel_before = cli.tcp_retrans_segs();
    srv.nft().drop_tcp_port(8000);
    // RTO backoff from 200 ms: the 4th retransmit leaves ~3 s after the drop.
    let rtx = trace.wait_count(rtx_of_flow, 4, secs(10.0));
    let kernel_after = cli.tcp_retrans_segs();
    let rep = || trace.report();
    assert!(
        rtx.len() >= 4,
        "want >= 4 retransmit events for {local} -> {server}, got {} (kernel counted {} \
         retransmitted segments in the client namespace)\n{}",
        rtx.len(),
        kernel_after - kernel_before,
        rep()
    );
    assert!(client.is_running() && client.error().is_none());

    let inode = cli.inode();
    let mut last = 0;
    for (i, v) in rtx.iter().enumerate() {
        assert_eq!(v["state"], "ESTABLISHED", "{v}\n{}", rep());
        assert_eq!(
            v["netns"].as_u64(),
            Some(inode),
            "netns must be the client namespace's inode {inode}: {v}\n{}",
            rep()
        );
        let count = v["count"]
            .as_u64()
            .unwrap_or_else(|| panic!("retransmit without a count: {v}"));
        assert!(
            count > last,
            "count not strictly growing at event {i}: {count} after {last}\n{}",
            rep()
        );
        // netprobe saw the flow from its first retransmit: 1, 2, 3...
        assert_eq!(count, i as u64 + 1, "count of event {i}: {v}\n{}", rep());
        last = count;
    }
    // The tracepoint fires once per retransmitted segment: netprobe cannot
    // have seen more than the kernel counted.
    assert!(
        rtx.len() as u64 <= kernel_after - kernel_before + 1,
        "{} events, but the kernel counted {} retransmitted segments\n{}",
        rtx.len(),
        kernel_after - kernel_before,
        rep()
    );
    // Nothing from the server's side: it never sent anything unacked.
    let reverse = trace.matching(|v| is_type(v, "retransmit") && ep(v, "src") == Some(server));
    assert!(
        reverse.is_empty(),
        "retransmits reported from the server side: {reverse:?}"
    );
    trace.stop();
}

/// Whether this kernel's tcp_retransmit_skb carries the attempt's `err`
/// where netprobe reads it (the two tests below need it; older kernels
/// skip them, saying so).
fn retransmit_has_err() -> bool {
    let has = probe_user::kernel::tracefs::retransmit_has_err();
    if !has {
        eprintln!("note: tcp_retransmit_skb has no err field here; skipping");
    }
    has
}

/// A retransmit timer that fires while the original segment still waits
/// in this host's queue sends nothing: the kernel returns -EBUSY, counts
/// TcpExtTCPSpuriousRtxHostQueues and not RetransSegs. Kernels whose
/// tracepoint carries `err` fire it for such attempts too; netprobe must
/// report exactly the kernel's retransmits, not the attempts. A 1 kbit/s
/// token bucket on the client's egress keeps each line in the queue for
/// over half a second, past the 200 ms RTO.
#[test]
fn retransmit_attempts_held_in_the_host_queue_are_not_retransmits() {
    require_root();
    if !retransmit_has_err() {
        return;
    }
    let mut lab = Lab::new("rtxq");
    let (cli, srv) = lab.pair();
    let server = SocketAddr::new(srv.ipv4.into(), 8000);
    let _echo = EchoServer::start(&srv, srv.ipv4.into(), 8000);
    let trace = Trace::inside(&lab, &cli, &[]);
    let (retrans0, held0) = (
        cli.tcp_retrans_segs(),
        cli.tcp_ext("TCPSpuriousRtxHostQueues"),
    );
    let out = cli.exec([
        "tc",
        "qdisc",
        "add",
        "dev",
        &cli.ifname,
        "root",
        "tbf",
        "rate",
        "1kbit",
        "burst",
        "200",
        "latency",
        "30s",
    ]);
    assert!(out.status.success(), "tbf: {out:?}");
    let client = LineClient::start(&cli, server, secs(0.05));
    let local = client.local_addr();
    let rtx_of_flow = |v: &Value| {
        is_type(v, "retransmit") && ep(v, "src") == Some(local) && ep(v, "dst") == Some(server)
    };
    let held = || cli.tcp_ext("TCPSpuriousRtxHostQueues") - held0;
    let _ = poll_until(secs(15.0), secs(0.2), || (held() >= 3).then_some(()));
    assert!(
        held() >= 3,
        "no attempt was held in the host queue ({} echoes)\n{}",
        client.echoes(),
        trace.report()
    );
    // Compare at a quiet moment: the kernel's count unchanged across the
    // wait that lets netprobe's events arrive.
    let settled = poll_until(secs(10.0), secs(0.05), || {
        let before = cli.tcp_retrans_segs();
        std::thread::sleep(secs(0.5));
        let seen = trace.matching(rtx_of_flow).len() as u64;
        (cli.tcp_retrans_segs() == before).then_some((before - retrans0, seen))
    });
    let (kernel, seen) = settled.expect("the kernel's retransmit count never settled");
    eprintln!(
        "retransmits: kernel {kernel}, netprobe {seen}; held in the queue {}",
        held()
    );
    assert_eq!(
        seen,
        kernel,
        "netprobe reported {seen} retransmits, the kernel counted {kernel} ({} attempts held \
         in the host queue)\n{}",
        held(),
        trace.report()
    );
    trace.stop();
}

/// A retransmit whose route vanished leaves nothing on the wire: the kernel
/// tries, fails with EHOSTUNREACH and (where the tracepoint carries `err`)
/// says so; netprobe reports the attempt with why it was not sent, and
/// only the segments that left as plain retransmits.
#[test]
fn retransmits_without_a_route_say_why_nothing_left() {
    require_root();
    if !retransmit_has_err() {
        return;
    }
    let mut lab = Lab::new("rtxnr");
    let (cli, srv) = lab.pair();
    let server = SocketAddr::new(srv.ipv4.into(), 8000);
    let _echo = EchoServer::start(&srv, srv.ipv4.into(), 8000);
    let trace = Trace::inside(&lab, &cli, &[]);
    let client = LineClient::start(&cli, server, secs(0.1));
    let local = client.local_addr();
    assert!(client.wait_echoes(2, secs(5.0)), "echoes flow first");
    let rtx_of_flow = |v: &Value| {
        is_type(v, "retransmit") && ep(v, "src") == Some(local) && ep(v, "dst") == Some(server)
    };
    let retrans0 = cli.tcp_retrans_segs();
    srv.nft().drop_tcp_port(8000);
    // Let one retransmit leave, then take the route away.
    let sent = trace.wait_count(rtx_of_flow, 1, secs(5.0));
    assert!(
        !sent.is_empty(),
        "no retransmit before the route went\n{}",
        trace.report()
    );
    let host = format!("{}/32", srv.ipv4);
    cli.ip(["route", "add", "unreachable", &host]);
    let not_sent = |v: &Value| rtx_of_flow(v) && v["not_sent"] == "EHOSTUNREACH";
    let failed = trace.wait_count(not_sent, 2, secs(10.0));
    assert!(
        failed.len() >= 2,
        "no retransmit reported as not sent for want of a route\n{}",
        trace.report()
    );
    // The ones that left are the kernel's count; the failed ones are not in it.
    let left = trace
        .matching(|v| rtx_of_flow(v) && v.get("not_sent").is_none())
        .len() as u64;
    let kernel = cli.tcp_retrans_segs() - retrans0;
    eprintln!(
        "retransmits: {left} sent, {} not sent; kernel {kernel}",
        failed.len()
    );
    assert_eq!(left, kernel, "\n{}", trace.report());
    trace.stop();
}

/// SYN-ACK retransmits count in the kernel's RetransSegs but do not fire
/// `tcp_retransmit_skb`: netprobe reports them from
/// `tcp_retransmit_synack`, one event each, in the listener's namespace.
/// The server's node drops the client's final ACK (pure ACKs to the port),
/// and the client sends nothing, so the listener keeps retransmitting.
#[test]
fn synack_retransmits_are_reported_as_the_listeners() {
    require_root();
    let mut lab = Lab::new("synack");
    let (cli, srv) = lab.pair();
    let server = SocketAddr::new(srv.ipv4.into(), 8000);
    let _echo = EchoServer::start(&srv, srv.ipv4.into(), 8000);
    srv.nft().rule(
        "input",
        "tcp dport 8000 tcp flags & (syn | ack | fin | rst | psh) == ack drop",
    );
    let trace = Trace::inside(&lab, &srv, &[]);
    let synacks0 = srv.tcp_ext("TCPSynRetrans");
    let connect = "import socket, sys, time\n\
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n\
        print('connected', flush=True)\n\
        time.sleep(30)\n";
    let args = [srv.ipv4.to_string(), "8000".to_string()];
    let mut client = netprobe_tests::Background::spawn(
        netprobe_tests::py::command(&cli, connect, &args),
        "silent client",
    );
    let of_listener = |v: &Value| is_type(v, "synack_retransmit") && ep(v, "src") == Some(server);
    let first = trace.wait_count(of_listener, 2, secs(10.0));
    assert!(
        first.len() >= 2,
        "no SYN-ACK retransmits\n{}",
        trace.report()
    );
    let settled = poll_until(secs(10.0), secs(0.05), || {
        let before = srv.tcp_ext("TCPSynRetrans");
        std::thread::sleep(secs(0.5));
        let seen = trace.matching(of_listener);
        (srv.tcp_ext("TCPSynRetrans") == before).then_some((before - synacks0, seen))
    });
    let (kernel, seen) = settled.expect("the kernel's count never settled");
    eprintln!(
        "SYN-ACK retransmits: kernel {kernel}, netprobe {}",
        seen.len()
    );
    assert_eq!(seen.len() as u64, kernel, "\n{}", trace.report());
    let inode = srv.inode();
    for (i, v) in seen.iter().enumerate() {
        assert_eq!(v["netns"].as_u64(), Some(inode), "{v}");
        assert_eq!(v["count"].as_u64(), Some(i as u64 + 1), "{v}");
        assert_eq!(
            ep(v, "dst").map(|d| d.ip()),
            Some(IpAddr::from(cli.ipv4)),
            "{v}"
        );
    }
    // Not a retransmit of the client's: it sent nothing to retransmit.
    let of_flow = |v: &Value| {
        is_type(v, "retransmit") && (ep(v, "src") == Some(server) || ep(v, "dst") == Some(server))
    };
    assert!(trace.matching(of_flow).is_empty(), "{}", trace.report());
    client.kill();
    trace.stop();
}

// ---------------------------------------------------------------------------
// 4. Neighbour entry changed on the wire and by `ip neigh replace`
// ---------------------------------------------------------------------------

#[test]
fn neighbour_changes_by_arp_on_the_wire_and_by_ip_neigh_replace() {
    require_root();
    let mut lab = Lab::new("neigh");
    let seg = lab.bridge_segment(3);
    let (a, b, cli) = (seg.host(0), seg.host(1), seg.host(2));
    let vip4 = seg.vip(0);
    let vip: IpAddr = vip4.into();
    let fake_mac = format!("02:6e:70:{:02x}:{:02x}:ee", lab.octet(), seg.index);
    let trace = Trace::inside(&lab, cli, &[]);

    let of_vip = |v: &Value| is_type(v, "neighbour") && v["ip"] == vip.to_string();
    let change = |old: &str, new: &str| {
        let (old, new) = (old.to_string(), new.to_string());
        move |v: &Value| of_vip(v) && v["old_mac"] == old && v["new_mac"] == new
    };
    let arp_from = |mac: &str| {
        let mac = mac.to_string();
        move |v: &Value| {
            is_type(v, "arp") && v["sender_ip"] == vip.to_string() && v["sender_mac"] == mac
        }
    };

    // The client learns the VIP at A.
    a.add_ip(vip);
    assert!(cli.ping(vip), "client reaches the VIP on A");
    cli.wait_neighbour(vip, secs(2.0), |n| {
        n.lladdr.as_deref() == Some(a.mac.as_str())
    })
    .expect("client resolved the VIP to A");
    trace.expect(
        "neighbour event resolving the VIP to A",
        |v| of_vip(v) && v["new_mac"] == a.mac.as_str(),
        EVENT_TIMEOUT,
    );

    // B takes the VIP over with a gratuitous ARP request.
    a.del_ip(vip);
    b.add_ip(vip);
    b.gratuitous_arp(vip4);
    cli.wait_neighbour(vip, secs(3.0), |n| {
        n.lladdr.as_deref() == Some(b.mac.as_str())
    })
    .unwrap_or_else(|| panic!("entry not moved to B: {:?}", cli.neighbour(vip)));
    let to_b = trace.expect(
        "neighbour event A -> B after B's gratuitous ARP",
        change(&a.mac, &b.mac),
        EVENT_TIMEOUT,
    );
    let garp = trace.expect(
        "arp event for B's announcement",
        arp_from(&b.mac),
        EVENT_TIMEOUT,
    );

    // A takes it back with an unsolicited ARP reply.
    b.del_ip(vip);
    a.add_ip(vip);
    a.arp_reply_announce(vip4);
    cli.wait_neighbour(vip, secs(3.0), |n| {
        n.lladdr.as_deref() == Some(a.mac.as_str())
    })
    .unwrap_or_else(|| panic!("entry not moved back to A: {:?}", cli.neighbour(vip)));
    let to_a = trace.expect(
        "neighbour event B -> A after A's ARP reply",
        change(&b.mac, &a.mac),
        EVENT_TIMEOUT,
    );
    let reply = trace.expect("arp event for A's reply", arp_from(&a.mac), EVENT_TIMEOUT);

    // An operator pins it somewhere else.
    cli.set_neighbour(vip, &fake_mac, Nud::Permanent);
    let pinned = trace.expect(
        "neighbour event A -> pinned MAC after `ip neigh replace`",
        change(&a.mac, &fake_mac),
        EVENT_TIMEOUT,
    );
    std::thread::sleep(secs(0.3));

    let rep = || trace.report();
    for v in [&to_b, &to_a, &pinned] {
        assert_eq!(
            str_of(v, "dev"),
            Some(cli.ifname.as_str()),
            "{v}\n{}",
            rep()
        );
        assert!(
            v["old_state"].is_string() && v["new_state"].is_string(),
            "{v}"
        );
    }
    assert_eq!(pinned["new_state"], "PERMANENT", "{pinned}\n{}", rep());
    for (v, op_ok) in [
        (&garp, ["gratuitous"].as_slice()),
        (&reply, &["reply", "gratuitous"]),
    ] {
        assert!(
            v["op"].as_str().is_some_and(|op| op_ok.contains(&op)),
            "arp op {} not one of {op_ok:?}: {v}\n{}",
            v["op"],
            rep()
        );
        assert_eq!(
            str_of(v, "iface"),
            Some(cli.ifname.as_str()),
            "{v}\n{}",
            rep()
        );
    }
    // Nobody announced the pinned MAC on the wire.
    assert!(
        trace.matching(arp_from(&fake_mac)).is_empty(),
        "an arp event for a MAC that was only set locally\n{}",
        rep()
    );
    // The MAC changes came in the order they happened.
    let changes: Vec<(Value, Value)> = trace
        .matching(of_vip)
        .into_iter()
        .filter(|v| v["old_mac"].is_string() && v["old_mac"] != v["new_mac"])
        .map(|v| (v["old_mac"].clone(), v["new_mac"].clone()))
        .collect();
    let want: Vec<(Value, Value)> = [(&a.mac, &b.mac), (&b.mac, &a.mac), (&a.mac, &fake_mac)]
        .iter()
        .map(|(o, n)| (Value::from(o.as_str()), Value::from(n.as_str())))
        .collect();
    assert_eq!(changes, want, "MAC changes of the VIP's entry\n{}", rep());
    trace.stop();
}

// ---------------------------------------------------------------------------
// 6. SIGKILL and SIGINT leave nothing attached
// ---------------------------------------------------------------------------

/// Starts netprobe in a lab host, checks it really attached (its own
/// programs and tcx links, a periodic stats line), ends it with `end`, and
/// checks that no program, link, filter or qdisc is left.
fn nothing_left_after(label: &str, end: impl FnOnce(&mut Netprobe) -> Stopped, sigint: bool) {
    require_root();
    let mut lab = Lab::new(label);
    let (a, b) = lab.pair();
    let devs = lab_devices(&[&a, &b]);
    let trace = Trace::inside(&lab, &a, &["--stats-interval", "1s"]);
    trace.expect("periodic stats line", |v| is_type(v, "stats"), secs(5.0));
    // What this netprobe holds (nsenter execs it: same pid).
    let own = cleanup::bpf_held(Some(trace.np.pid()));
    let progs: Vec<Value> = cleanup::bpf_programs(NETPROBE_PROGRAMS)
        .into_iter()
        .filter(|p| p["id"].as_u64().is_some_and(|id| own.progs.contains(&id)))
        .collect();
    let names: Vec<&str> = progs.iter().filter_map(|p| p["name"].as_str()).collect();
    for want in ["tc_ingress", "tc_egress", "tcp_retransmit", "neigh_update"] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "program {want} not held by netprobe while tracing: {names:?}\n{}",
            trace.report()
        );
    }
    let tc_ids: Vec<u64> = progs
        .iter()
        .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("tc_")))
        .filter_map(|p| p["id"].as_u64())
        .collect();
    let tc_links: Vec<Value> = cleanup::bpf_links(NETPROBE_PROGRAMS)
        .into_iter()
        .filter(|l| l["id"].as_u64().is_some_and(|id| own.links.contains(&id)))
        .filter(|l| l["prog_id"].as_u64().is_some_and(|id| tc_ids.contains(&id)))
        .collect();
    assert!(
        tc_links.len() >= 2,
        "want the classifier attached with tcx links (ingress and egress of {}), netprobe holds \
         {tc_links:?}\n{}",
        a.ifname,
        trace.report()
    );
    // Traffic on the attached interface while it runs.
    assert!(a.ping(b.ipv4.into()));

    let Trace {
        mut np,
        lab: lab_ref,
    } = trace;
    let stopped = end(&mut np);
    let rep = || report(lab_ref, &stopped.events, &stopped.stderr);
    if sigint {
        check_stopped(&stopped, &rep);
    } else {
        assert!(stopped.killed, "{stopped:?}");
        for s in stopped.of_type("stats") {
            assert_eq!(s["lost"].as_u64(), Some(0), "{s}");
        }
    }
    assert_released(&own, &devs, &rep);
}

#[test]
fn sigkill_leaves_no_program_link_filter_or_qdisc() {
    nothing_left_after("kill9", |np| np.kill9(), false);
}

#[test]
fn sigint_leaves_no_program_link_filter_or_qdisc() {
    nothing_left_after("sigint", |np| np.stop(), true);
}

// ---------------------------------------------------------------------------
// 7. Bad input: one line, non-zero exit, nothing attached
// ---------------------------------------------------------------------------

/// Runs a bad invocation (inside a fresh lab namespace unless it brings
/// its own `--netns`), and checks: exits by itself with a non-zero code,
/// prints nothing on stdout and exactly one non-empty line on stderr, which
/// contains each of `needles`; nothing is left attached in the lab.
fn refused(label: &str, build: impl FnOnce(&Host) -> Command, needles: &[&str]) {
    require_root();
    let mut lab = Lab::new(label);
    let (a, b) = lab.pair();
    let devs = lab_devices(&[&a, &b]);
    let mut c = build(&a);
    let done: Finished = cmd::run_bounded(&mut c, REFUSE_TIMEOUT);
    let what = done.report();
    assert!(
        !done.timed_out,
        "still running at {REFUSE_TIMEOUT:?}: {what}"
    );
    let code = done.code();
    assert!(
        code.is_some_and(|c| c != 0),
        "want a non-zero exit code (not a signal): {what}"
    );
    let stderr = done.stderr();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want one line on stderr: {what}");
    for n in needles {
        assert!(lines[0].contains(n), "stderr line lacks {n:?}: {what}");
    }
    assert!(
        done.stdout().trim().is_empty(),
        "nothing on stdout for bad input: {what}"
    );
    assert_released(&HeldBpf::default(), &devs, &|| what.clone());
}

/// `nsenter --net=NS netprobe trace --json args...`.
fn netprobe_in(ns: &Netns, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", ns.path().display()))
        .arg("--")
        .arg(binary())
        .args(["trace", "--json"])
        .args(args);
    c
}

#[test]
fn bad_input_unknown_interface() {
    refused(
        "badif",
        |h| {
            let mut c = Command::new(binary());
            c.args(["trace", "--json", "--netns", h.name(), "--iface", "nope0"]);
            c
        },
        &["unknown interface nope0"],
    );
}

#[test]
fn bad_input_port_zero() {
    refused(
        "port0",
        |h| netprobe_in(h, &["--port", "6443", "--port", "0"]),
        &["--port", "0"],
    );
}

#[test]
fn bad_input_port_out_of_range() {
    refused(
        "port70k",
        |h| netprobe_in(h, &["--port", "70000"]),
        &["--port", "70000"],
    );
}

#[test]
fn bad_input_missing_namespace() {
    refused(
        "nons",
        |_| {
            let mut c = Command::new(binary());
            c.args(["trace", "--json", "--netns", "does-not-exist"]);
            c
        },
        &["does-not-exist"],
    );
}

#[test]
fn bad_input_not_privileged() {
    refused(
        "nopriv",
        |h| {
            // Enter the lab namespace as root, then drop to nobody with no
            // capabilities at all before netprobe starts.
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", h.path().display()))
                .args([
                    "--",
                    "setpriv",
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "--inh-caps=-all",
                    "--bounding-set=-all",
                ])
                .arg(binary())
                .args(["trace", "--json"]);
            c
        },
        &["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"],
    );
}
