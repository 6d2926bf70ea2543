//! Tests of the lab harness itself, without netprobe. Root only.
//! Run: cargo test -p netprobe-tests -- --test-threads=1

use netprobe_tests::{require_root, secs};
use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::time::Instant;

use netprobe_tests::background::Background;
use netprobe_tests::peers::{
    BlackHole, EchoServer, LineClient, RawPlan, TlsServer, curl_https, raw_tcp_send, tls_client,
};
use netprobe_tests::tls_bytes::{
    client_hello, is_server_hello, random_bytes, truncated_client_hello,
};
use netprobe_tests::{Lab, Netprobe, Sniffer, Stream, cleanup, icmp, netns, poll_until};

fn listed(names: &[String]) -> Vec<String> {
    let now = netns::list();
    names.iter().filter(|n| now.contains(n)).cloned().collect()
}

/// /proc/PID exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn bridge_segment_hosts_reach_each_other_v4_and_v6() {
    require_root();
    let mut lab = Lab::new("ping");
    let seg = lab.bridge_segment(3);

    for h in &seg.hosts {
        assert_eq!(h.read_mac(), h.mac, "{} has the MAC we assigned", h.name());
    }
    for (i, a) in seg.hosts.iter().enumerate() {
        for (j, b) in seg.hosts.iter().enumerate() {
            if i != j {
                assert!(a.ping(b.ipv4.into()), "{} -> {} (v4)", a.name(), b.ipv4);
                assert!(a.ping(b.ipv6.into()), "{} -> {} (v6)", a.name(), b.ipv6);
            }
        }
    }
    // The pings resolved real neighbour entries to the right MACs.
    let (h0, h1) = (seg.host(0), seg.host(1));
    let n = h0.neighbour(h1.ipv4.into()).expect("ARP entry after ping");
    assert_eq!(n.lladdr.as_deref(), Some(h1.mac.as_str()));
    let n6 = h0.neighbour(h1.ipv6.into()).expect("NDP entry after ping");
    assert_eq!(n6.lladdr.as_deref(), Some(h1.mac.as_str()));

    // An address nobody holds: no answer, and the wait is bounded.
    let start = Instant::now();
    assert!(!h0.ping(seg.vip(50).into()));
    assert!(start.elapsed() < secs(3.0), "{:?}", start.elapsed());

    // The root namespace got nothing of the lab: no address in its block,
    // no interface with a lab MAC.
    let prefix = format!("10.{}.", lab.octet());
    let mac_prefix = format!("02:6e:70:{:02x}:", lab.octet());
    let root = Command::new("ip").args(["-j", "addr"]).output().unwrap();
    let root: serde_json::Value = serde_json::from_slice(&root.stdout).unwrap();
    for link in root.as_array().unwrap() {
        let mac = link["address"].as_str().unwrap_or("");
        assert!(
            !mac.starts_with(&mac_prefix),
            "lab interface in root ns: {link}"
        );
        for a in link["addr_info"].as_array().into_iter().flatten() {
            let local = a["local"].as_str().unwrap_or("");
            assert!(
                !local.starts_with(&prefix),
                "lab address in root ns: {link}"
            );
            assert!(
                !lab.contains_endpoint(local),
                "lab address in root ns: {link}"
            );
        }
    }
}

#[test]
fn tls_server_answers_clients_and_black_hole_does_not() {
    require_root();
    let mut lab = Lab::new("tls");
    let seg = lab.bridge_segment(2);
    let (srv, cli) = (seg.host(0), seg.host(1));
    let _tls4 = TlsServer::start(srv, srv.ipv4.into(), 6443);
    let _tls6 = TlsServer::start(srv, srv.ipv6.into(), 6443);

    let ok = tls_client(cli, srv.ipv4.into(), 6443, Some("kubernetes"), secs(5.0));
    assert!(
        ok.tcp_connected && ok.handshake_done && !ok.timed_out,
        "{}",
        ok.report
    );
    assert_eq!(ok.protocol.as_deref(), Some("TLSv1.3"), "{}", ok.report);

    let https = curl_https(cli, srv.ipv6.into(), 6443, "kubernetes", secs(5.0));
    assert_eq!(https.exit_code, Some(0), "{}", https.report);
    assert_eq!(https.http_code, Some(200), "{}", https.report);
    assert!(https.tcp_connected && https.tls_done, "{}", https.report);

    // Black hole: TCP connects, the handshake never finishes.
    let hole = BlackHole::start(srv, srv.ipv4.into(), 7443);
    let stuck = tls_client(cli, srv.ipv4.into(), 7443, Some("kubernetes"), secs(1.5));
    assert!(stuck.tcp_connected, "{}", stuck.report);
    assert!(!stuck.handshake_done && stuck.timed_out, "{}", stuck.report);
    assert!(
        stuck.elapsed >= secs(1.5) && stuck.elapsed < secs(4.0),
        "{:?}",
        stuck.elapsed
    );
    assert!(
        hole.wait_accepted(1, secs(2.0)),
        "black hole saw no connection"
    );
    assert!(hole.accepted()[0].starts_with(&cli.ipv4.to_string()));

    let curl = curl_https(cli, srv.ipv4.into(), 7443, "kubernetes", secs(1.0));
    assert_eq!(curl.exit_code, Some(28), "curl times out: {}", curl.report);
    assert!(curl.tcp_connected && !curl.tls_done, "{}", curl.report);
}

/// Length of the TCP payload in a tcpdump line ("..., length 40").
fn tcp_payload_len(line: &str) -> Option<usize> {
    line.rsplit_once("length ")?.1.trim().parse().ok()
}

#[test]
fn split_client_hello_crosses_the_wire_in_two_segments_and_is_answered() {
    require_root();
    let mut lab = Lab::new("split");
    let (cli, srv) = lab.pair();
    let _tls = TlsServer::start(&srv, srv.ipv4.into(), 6443);
    let sniff = Sniffer::start(&srv, &srv.ifname, "tcp dst port 6443");
    let dst = SocketAddr::new(srv.ipv4.into(), 6443);

    let hello = client_hello(Some("split.lab"));
    let mut plan = RawPlan::split(&hello, &[40], secs(0.3));
    plan.read_at_least = 6;
    let out = raw_tcp_send(&cli, dst, &plan);
    assert!(out.connected && out.error.is_none(), "{out:?}");
    assert_eq!(out.sent, hello.len());
    assert!(
        is_server_hello(&out.received),
        "reply: {:02x?}",
        out.received
    );

    let data = sniff.wait_for(2, |l| tcp_payload_len(l).unwrap_or(0) > 0, secs(3.0));
    let lens: Vec<usize> = data.iter().filter_map(|l| tcp_payload_len(l)).collect();
    assert_eq!(
        lens,
        [40, hello.len() - 40],
        "segments on the wire: {data:#?}"
    );
    let local = out.local.expect("local address");
    assert!(
        data.iter().all(|l| l.contains(&local.replace(':', "."))),
        "{data:#?}"
    );

    // A truncated record gets no answer and no close: the server waits.
    let mut cut = RawPlan::split(&truncated_client_hello(None, 30), &[], secs(0.0));
    cut.read_for = secs(1.0);
    let out = raw_tcp_send(&cli, dst, &cut);
    assert!(
        out.connected && out.received.is_empty() && !out.closed_by_peer,
        "{out:?}"
    );

    // Garbage gets at most an alert, never a ServerHello, and a close.
    let mut junk = RawPlan::split(&random_bytes(64), &[], secs(0.0));
    junk.read_at_least = 0;
    junk.read_for = secs(2.0);
    let out = raw_tcp_send(&cli, dst, &junk);
    assert!(out.connected && !is_server_hello(&out.received), "{out:?}");
    assert!(out.closed_by_peer || out.error.is_some(), "{out:?}");
}

/// The stale-ARP incident, built from the harness: the client's entry for
/// the VIP is taken over by a second host's gratuitous ARP; TCP still
/// connects (to the wrong host) and TLS hangs; the fix restores it.
#[test]
fn gratuitous_arp_moves_the_clients_vip_entry_to_the_other_host() {
    require_root();
    let mut lab = Lab::new("garp");
    let seg = lab.bridge_segment(3);
    let (owner, impostor, client) = (seg.host(0), seg.host(1), seg.host(2));
    let vip: IpAddr = seg.vip(0).into();

    owner.add_ip(vip);
    let _api = TlsServer::start(owner, vip, 6443);
    assert!(client.ping(vip));
    let n = client
        .wait_neighbour(vip, secs(2.0), |n| n.lladdr.is_some())
        .expect("client resolved the VIP");
    assert_eq!(n.lladdr.as_deref(), Some(owner.mac.as_str()), "{n:?}");
    let ok = tls_client(client, vip, 6443, Some("kubernetes"), secs(5.0));
    assert!(ok.handshake_done, "{}", ok.report);

    impostor.add_ip(vip);
    let hole = BlackHole::start(impostor, vip, 6443);
    impostor.gratuitous_arp(seg.vip(0));
    let n = client
        .wait_neighbour(vip, secs(3.0), |n| {
            n.lladdr.as_deref() == Some(impostor.mac.as_str())
        })
        .unwrap_or_else(|| panic!("entry not moved: {:?}", client.neighbour(vip)));
    assert!(!n.has_state("FAILED"), "{n:?}");

    let bad = tls_client(client, vip, 6443, Some("kubernetes"), secs(2.0));
    assert!(
        bad.tcp_connected && !bad.handshake_done && bad.timed_out,
        "{}",
        bad.report
    );
    assert!(
        hole.wait_accepted(1, secs(2.0)),
        "the impostor took the connection"
    );

    // Fix: the impostor lets go of the VIP, the client forgets the entry.
    impostor.del_ip(vip);
    client.del_neighbour(vip);
    assert_eq!(client.neighbour(vip).and_then(|n| n.lladdr), None);
    let fixed = tls_client(client, vip, 6443, Some("kubernetes"), secs(5.0));
    assert!(fixed.handshake_done, "{}", fixed.report);
    let n = client.neighbour(vip).expect("re-resolved");
    assert_eq!(n.lladdr.as_deref(), Some(owner.mac.as_str()), "{n:?}");

    // A static poisoned entry, set directly, reads back as set.
    client.set_neighbour(vip, &impostor.mac, netprobe_tests::Nud::Permanent);
    let n = client.neighbour(vip).unwrap();
    assert_eq!(n.lladdr.as_deref(), Some(impostor.mac.as_str()));
    assert!(n.has_state("PERMANENT"), "{n:?}");
}

#[test]
fn nft_drops_silently_and_loses_randomly() {
    require_root();
    let mut lab = Lab::new("nft");
    let (a, b) = lab.pair();
    assert!(a.ping(b.ipv4.into()));

    let nft = b.nft();
    nft.drop_host(a.ipv4.into());
    assert_eq!(nft.rule_count(), 6);
    assert!(!a.ping(b.ipv4.into()), "v4 from a is dropped");
    assert!(a.ping(b.ipv6.into()), "v6 is untouched");
    nft.flush();
    assert!(a.ping(b.ipv4.into()), "flushed");

    nft.random_loss(50);
    let got = icmp::ping_many(&a, b.ipv4.into(), 60, secs(0.01), secs(0.5));
    // P(outside 10..=50 of 60 at p=0.5) is below 1e-6.
    assert!((10..=50).contains(&got), "{got}/60 answered at 50% loss");
    nft.flush();
    assert_eq!(
        icmp::ping_many(&a, b.ipv4.into(), 20, secs(0.005), secs(0.5)),
        20
    );
}

#[test]
fn echo_client_stalls_and_retransmits_while_the_server_is_dropped() {
    require_root();
    let mut lab = Lab::new("echo");
    let (cli, srv) = lab.pair();
    let dst = SocketAddr::new(srv.ipv4.into(), 8000);
    let _echo = EchoServer::start(&srv, srv.ipv4.into(), 8000);
    let mut client = LineClient::start(&cli, dst, secs(0.1));
    assert!(client.local_addr().ip() == IpAddr::from(cli.ipv4));
    assert!(client.wait_echoes(3, secs(5.0)), "echoes flow");

    let before = cli.tcp_retrans_segs();
    srv.nft().drop_tcp_port(8000);
    let stalled = client.echoes();
    let storm = poll_until(secs(5.0), secs(0.05), || {
        (cli.tcp_retrans_segs() >= before + 2).then_some(())
    });
    assert!(storm.is_some(), "no retransmissions counted");
    assert!(
        client.echoes() <= stalled + 1,
        "echoes went on through a drop"
    );
    assert!(client.is_running() && client.error().is_none());

    srv.nft().flush();
    assert!(
        client.wait_echoes(stalled + 2, secs(10.0)),
        "no recovery after the drop was lifted"
    );
}

#[test]
fn dropping_the_lab_deletes_namespaces_and_kills_what_ran_inside() {
    require_root();
    let mut lab = Lab::new("drop");
    let seg = lab.bridge_segment(2);
    let names = lab.namespace_names();
    assert_eq!(names.len(), 3);
    assert_eq!(listed(&names), names);
    assert!(names.iter().all(|n| n.starts_with("np-drop-")));

    // A process whose handle is leaked: only the lab teardown can stop it.
    let leaked = seg.host(0).spawn(["sleep", "300"]);
    let pid = leaked.pid();
    std::mem::forget(leaked);
    assert!(alive(pid));

    drop(seg);
    drop(lab);
    assert!(listed(&names).is_empty(), "left: {:?}", listed(&names));
    assert!(
        names
            .iter()
            .all(|n| !std::path::Path::new("/run/netns").join(n).exists())
    );
    assert!(!alive(pid), "process {pid} survived its namespace");
}

#[test]
fn a_panicking_test_still_leaves_no_namespace() {
    require_root();
    let mut names = Vec::new();
    let mut server_pid = 0;
    let r = catch_unwind(AssertUnwindSafe(|| {
        let mut lab = Lab::new("panic");
        let seg = lab.bridge_segment(2);
        names = lab.namespace_names();
        let h = seg.host(0);
        let hole = BlackHole::start(h, h.ipv4.into(), 9000);
        server_pid = h.pids().first().copied().unwrap_or(0) as u32;
        let _keep = hole;
        panic!("deliberate panic inside a lab");
    }));
    let err = r.expect_err("the closure panics");
    assert_eq!(
        err.downcast_ref::<&str>(),
        Some(&"deliberate panic inside a lab")
    );
    assert_eq!(names.len(), 3);
    assert!(listed(&names).is_empty(), "left: {:?}", listed(&names));
    assert!(server_pid != 0 && !alive(server_pid));
}

#[test]
fn segments_in_one_lab_and_labs_side_by_side_do_not_overlap() {
    require_root();
    let mut one = Lab::new("a");
    let mut two = Lab::new("b");
    assert_ne!(one.octet(), two.octet());
    let s0 = one.bridge_segment(1);
    let (p1, p2) = one.pair();
    let t0 = two.bridge_segment(1);
    assert_ne!(s0.ipv4_net(), t0.ipv4_net());
    assert_ne!(s0.host(0).ipv4, p1.ipv4);
    assert!(one.contains(p2.ipv6.into()) && !two.contains(p2.ipv6.into()));
    assert!(one.contains_endpoint(&format!("[{}]:443", p2.ipv6)));
    assert!(!one.contains_endpoint(&format!("{}:443", t0.host(0).ipv4)));
    assert!(p1.ping(p2.ipv6.into()));
}

/// Loads a do-nothing tracepoint program named `name` and links it to
/// tcp_retransmit_skb (a perf_event link), then sleeps holding both: a
/// stand-in for a netprobe that forgot to detach.
const BPF_HOLDER: &str = r#"
import ctypes, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
SYS_bpf, SYS_perf_event_open = 321, 298
def sysbpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, len(attr))
    r = libc.syscall(SYS_bpf, cmd, buf, len(attr))
    if r < 0:
        raise OSError(ctypes.get_errno(), 'bpf cmd %d' % cmd)
    return r
name = sys.argv[1].encode()[:15]
tp = int(open('/sys/kernel/tracing/events/tcp/tcp_retransmit_skb/id').read())
insns = ctypes.create_string_buffer(struct.pack('<BBhiBBhi', 0xb7, 0, 0, 0, 0x95, 0, 0, 0))
lic = ctypes.create_string_buffer(b'GPL')
attr = struct.pack('<IIQQIIQII16s', 5, 2, ctypes.addressof(insns), ctypes.addressof(lic),
                   0, 0, 0, 0, 0, name).ljust(128, b'\0')
prog = sysbpf(5, attr)  # BPF_PROG_LOAD, BPF_PROG_TYPE_TRACEPOINT
pattr = ctypes.create_string_buffer(struct.pack('<IIQQ', 2, 128, tp, 1).ljust(128, b'\0'), 128)
pfd = libc.syscall(SYS_perf_event_open, pattr, -1, 0, -1, 8)
if pfd < 0:
    raise OSError(ctypes.get_errno(), 'perf_event_open')
sysbpf(28, struct.pack('<IIII', prog, pfd, 41, 0).ljust(64, b'\0'))  # LINK_CREATE, BPF_PERF_EVENT
print('loaded')
time.sleep(120)
"#;

#[test]
fn cleanup_helpers_see_programs_links_and_tc_state() {
    require_root();
    let prefixes = ["np_selftest"];
    assert!(
        cleanup::bpf_programs(&prefixes).is_empty(),
        "leftover from an earlier run?"
    );

    // Root namespace on purpose: tracefs is hidden under `ip netns exec`.
    let mut py = Command::new(netprobe_tests::py::python());
    py.args(["-u", "-c", BPF_HOLDER, "np_selftest_tp"]);
    let mut holder = Background::spawn(py, "bpf holder");
    if holder
        .wait_line(Stream::Stdout, |l| l == "loaded", secs(5.0))
        .is_none()
    {
        panic!("{}", holder.report());
    }
    let progs = cleanup::bpf_programs(&prefixes);
    assert_eq!(progs.len(), 1, "{progs:?}");
    assert_eq!(progs[0]["name"], "np_selftest_tp");
    let links = cleanup::bpf_links(&prefixes);
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(links[0]["prog_id"], progs[0]["id"]);
    let caught = catch_unwind(|| cleanup::assert_nothing_left(&prefixes, &[]));
    assert!(
        caught.is_err(),
        "assert_nothing_left missed a loaded program"
    );

    holder.kill();
    let gone = poll_until(secs(5.0), secs(0.05), || {
        (cleanup::bpf_programs(&prefixes).is_empty() && cleanup::bpf_links(&prefixes).is_empty())
            .then_some(())
    });
    assert!(gone.is_some(), "program outlived its holder");

    // TC: nothing on a fresh veth; a clsact qdisc and a filter are reported.
    let mut lab = Lab::new("tc");
    let (a, _b) = lab.pair();
    assert!(cleanup::tc_leftovers(Some(&a), &a.ifname).is_empty());
    let tc = |args: &[&str]| {
        let mut c = Command::new("tc");
        c.args(["-n", a.name()]).args(args);
        netprobe_tests::cmd::run(&mut c, secs(5.0));
    };
    tc(&["qdisc", "add", "dev", &a.ifname, "clsact"]);
    tc(&[
        "filter",
        "add",
        "dev",
        &a.ifname,
        "ingress",
        "bpf",
        "bytecode",
        "1,6 0 0 0,",
    ]);
    let left = cleanup::tc_leftovers(Some(&a), &a.ifname);
    assert!(left.iter().any(|l| l.contains("qdisc clsact")), "{left:?}");
    assert!(
        left.iter().any(|l| l.starts_with("ingress filter")),
        "{left:?}"
    );
    assert!(
        !left.iter().any(|l| l.starts_with("egress filter")),
        "{left:?}"
    );
    tc(&["qdisc", "del", "dev", &a.ifname, "clsact"]);
    cleanup::assert_nothing_left(&prefixes, &[(Some(&a), &a.ifname)]);
}

fn fake_netprobe(script: &str) -> Netprobe {
    let mut c = Command::new("sh");
    c.args(["-c", script]);
    Netprobe::start_command(c)
}

#[test]
fn netprobe_runner_collects_json_and_stops_with_sigint() {
    require_root();
    let mut np = fake_netprobe(
        r#"echo starting >&2; sleep 0.2; echo 'netprobe: ready' >&2
echo '{"type":"stats","events":0,"lost":0}'
echo 'not json'
trap 'echo "{\"type\":\"stats\",\"final\":true}"; exit 0' INT
i=0; while :; do i=$((i+1)); echo "{\"type\":\"tick\",\"n\":$i}"; sleep 0.05; done"#,
    );
    np.wait_ready(secs(5.0)).expect("ready");
    let t = np
        .wait_for(|v| v["type"] == "tick" && v["n"] == 3, secs(5.0))
        .expect("third tick");
    assert_eq!(t["n"], 3);
    assert!(np.wait_for_type("nope", secs(0.2)).is_none());
    assert_eq!(np.events_of_type("stats").len(), 1);

    let stopped = np.stop();
    assert!(stopped.clean_exit(), "{stopped:?}");
    let stats = stopped.of_type("stats");
    assert_eq!(stats.len(), 2);
    assert_eq!(stats[1]["final"], true);
    assert_eq!(stopped.non_json_stdout, ["not json"]);
    assert!(stopped.stderr.contains("starting"));
}

#[test]
fn netprobe_runner_reports_early_exit_and_kills_a_stubborn_process() {
    require_root();
    let mut dead = fake_netprobe("echo 'error: no such interface eth9' >&2; exit 2");
    let err = dead.wait_ready(secs(5.0)).expect_err("never ready");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("no such interface eth9") && msg.contains("exit status: 2"),
        "{msg}"
    );
    assert!(
        dead.wait_for(|_| true, secs(5.0)).is_none(),
        "stdout closed: no wait"
    );

    let mut stubborn =
        fake_netprobe("trap '' INT; echo 'netprobe: ready' >&2; while :; do sleep 0.05; done");
    stubborn.wait_ready(secs(5.0)).unwrap();
    let pid = stubborn.pid();
    let start = Instant::now();
    let stopped = stubborn.stop_within(secs(0.5));
    assert!(stopped.killed && !stopped.clean_exit());
    assert!(start.elapsed() < secs(3.0));
    assert!(!alive(pid));
}
