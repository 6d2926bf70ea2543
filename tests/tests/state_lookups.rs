//! netprobe's kernel-state layer (probe_user::state) against a real kernel:
//! neighbour and route lookups, the claimant probe, conntrack. Root only.
//! Run: cargo test -p netprobe-tests --test state_lookups -- --test-threads=1
//!
//! The lookups run in-process, in a thread that has entered the client's
//! namespace (as netprobe does with --netns), so they see that namespace's
//! tables and nothing else.

use netprobe_tests::require_root;
use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use netprobe_tests::peers::{EchoServer, LineClient};
use netprobe_tests::{Host, Lab, Netns, Nud};
use probe_user::state::{self, conntrack, neighbours, probe, routes};

/// Runs `fut` on a current-thread runtime in a thread that has setns'd into
/// `ns`; every socket it opens belongs to that namespace.
fn in_netns<T: Send>(ns: &Netns, fut: impl Future<Output = T> + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(ns.path())
                .unwrap_or_else(|e| panic!("open {}: {e}", ns.path().display()));
            // SAFETY: plain syscall on an fd we own; only this thread moves.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "setns into {}: {}",
                ns.name(),
                std::io::Error::last_os_error()
            );
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(fut)
        })
        .join()
        .expect("namespace thread panicked")
    })
}

/// Blocking lookups (conntrack) get the same treatment.
fn in_netns_blocking<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    in_netns(ns, async move { f() })
}

/// (MAC, state) as `ip -n NS neigh show` reports the entry.
fn ip_neigh(host: &Host, ip: IpAddr) -> (Option<String>, Vec<String>) {
    let n = host
        .neighbour(ip)
        .unwrap_or_else(|| panic!("no neighbour entry for {ip} in {}", host.name()));
    (n.lladdr, n.state)
}

/// Two hosts hold `vip`; the client's entry for it says host B. The
/// lookups must report B, the probe must name A and B, and the client's
/// entry must not move.
fn stale_vip_case(v6: bool) {
    require_root();
    let mut lab = Lab::new(if v6 { "state-vip6" } else { "state-vip4" });
    let seg = lab.bridge_segment(3);
    let (client, a, b) = (seg.host(0), seg.host(1), seg.host(2));
    let vip: IpAddr = if v6 {
        seg.vip6(0).into()
    } else {
        seg.vip(0).into()
    };
    a.add_ip(vip);
    b.add_ip(vip);
    client.set_neighbour(vip, &b.mac, Nud::Stale);
    // The kernel ignores a second override within locktime (1 s) of the
    // last one; wait it out so a leaking probe would show.
    std::thread::sleep(Duration::from_millis(1100));
    let before = ip_neigh(client, vip);
    assert_eq!(before.0.as_deref(), Some(b.mac.as_str()));

    let window = Duration::from_millis(300);
    let (entry, route, result, probe_time, entry_after) = in_netns(client, async move {
        let entry = neighbours::lookup(vip, Some("eth0"))
            .await
            .expect("neighbour lookup");
        let route = routes::route_to(vip).await.expect("route lookup");
        let t = Instant::now();
        let result = probe::claimants("eth0", vip, window)
            .await
            .expect("claimant probe");
        let probe_time = t.elapsed();
        let entry_after = neighbours::lookup(vip, None)
            .await
            .expect("neighbour lookup after");
        let all = neighbours::all().await.expect("neighbour dump");
        // Ages tick in 10 ms steps between two reads: compare the rest.
        let key = |e: &state::NeighbourEntry| (e.ip, e.dev.clone(), e.mac.clone(), e.state.clone());
        assert!(
            all.iter()
                .any(|e| Some(key(e)) == entry_after.as_ref().map(key)),
            "dump has the VIP entry: {all:?}"
        );
        (entry, route, result, probe_time, entry_after)
    });
    let after = ip_neigh(client, vip);
    eprintln!(
        "entry {entry:?}\nroute {route:?}\nprobe {result:?} in {probe_time:?}\nip neigh before {before:?} after {after:?}"
    );

    let entry = entry.expect("an entry for the VIP");
    assert_eq!(entry.ip, vip);
    assert_eq!(entry.dev, "eth0");
    assert_eq!(
        entry.mac.as_deref(),
        Some(b.mac.as_str()),
        "entry points at B"
    );
    assert_eq!(entry.state, "STALE");
    assert!(
        entry.updated_ago_ms.is_some_and(|ms| ms >= 1000),
        "{entry:?}"
    );

    let route = route.expect("a route to the VIP");
    assert_eq!(route.dev.as_deref(), Some("eth0"));
    assert_eq!(route.kind, "unicast");
    assert_eq!(route.gateway, None);

    let macs = result.distinct_macs();
    assert!(
        macs.contains(&a.mac) && macs.contains(&b.mac),
        "both holders answer: {result:?}"
    );
    assert_eq!(macs.len(), 2, "{result:?}");
    assert_ne!(result.probe_mac, client.mac);
    assert!(result.probe_mac.starts_with("02:"));
    assert!(
        probe_time < window + Duration::from_millis(500),
        "{probe_time:?}"
    );

    assert_eq!(after, before, "the probe left the client's entry alone");
    let entry_after = entry_after.expect("entry still there");
    assert_eq!(
        (entry_after.mac.as_deref(), entry_after.state.as_str()),
        (Some(b.mac.as_str()), "STALE")
    );
    // `updated` was not reset by anything.
    assert!(
        entry_after.updated_ago_ms >= entry.updated_ago_ms,
        "{entry:?} -> {entry_after:?}"
    );

    // The assertion has teeth: an ordinary request from the client's own
    // address does get answers into its table.
    let vip_s = vip.to_string();
    let ordinary = if v6 {
        client.try_exec(
            [
                "ndisc6",
                "-m",
                "-r",
                "1",
                "-w",
                "300",
                &vip_s,
                &client.ifname,
            ],
            Duration::from_secs(5),
        )
    } else {
        client.try_exec(
            ["arping", "-c", "1", "-w", "1", "-I", &client.ifname, &vip_s],
            Duration::from_secs(5),
        )
    };
    assert!(!ordinary.timed_out, "{}", ordinary.report());
    assert_ne!(
        ip_neigh(client, vip),
        before,
        "an ordinary request changes the entry: {}",
        ordinary.report()
    );
}

#[test]
fn ipv4_vip_lookups_and_probe_see_both_holders_without_touching_the_entry() {
    stale_vip_case(false);
}

#[test]
fn ipv6_vip_lookups_and_probe_see_both_holders_without_touching_the_entry() {
    stale_vip_case(true);
}

#[test]
fn routes_report_reject_kinds_and_local_addresses() {
    require_root();
    let mut lab = Lab::new("state-routes");
    let (h, _peer) = lab.pair();
    h.ip(["route", "add", "blackhole", "192.0.2.0/25"]);
    h.ip(["route", "add", "prohibit", "192.0.2.128/25"]);
    h.ip(["route", "add", "unreachable", "198.51.100.0/24"]);
    h.ip(["-6", "route", "add", "blackhole", "2001:db8:1::/48"]);
    let own_v4 = IpAddr::V4(h.ipv4);
    let own_v6 = IpAddr::V6(h.ipv6);
    let lookups = in_netns(&h, async move {
        let mut out = Vec::new();
        for ip in [
            "192.0.2.1",
            "192.0.2.200",
            "198.51.100.1",
            "203.0.113.1",
            "2001:db8:1::1",
            "2001:db8:2::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            out.push((ip, routes::route_to(ip).await.expect("route lookup")));
        }
        out.push((own_v4, routes::route_to(own_v4).await.unwrap()));
        out.push((own_v6, routes::route_to(own_v6).await.unwrap()));
        out
    });
    let kinds: Vec<(String, Option<String>, Option<String>)> = lookups
        .iter()
        .map(|(ip, r)| {
            let r = r.as_ref().unwrap_or_else(|| panic!("no answer for {ip}"));
            assert_eq!(r.dst, *ip);
            (ip.to_string(), Some(r.kind.clone()), r.dev.clone())
        })
        .collect();
    eprintln!("{kinds:#?}");
    let kind_of = |i: usize| kinds[i].1.as_deref().unwrap();
    assert_eq!(kind_of(0), "blackhole");
    assert_eq!(kind_of(1), "prohibit");
    assert_eq!(kind_of(2), "unreachable");
    assert_eq!(
        kind_of(3),
        "unreachable",
        "no route at all (no default route in a lab namespace)"
    );
    assert_eq!(kind_of(4), "blackhole");
    assert_eq!(kind_of(5), "unreachable");
    assert_eq!((kind_of(6), kinds[6].2.as_deref()), ("local", Some("lo")));
    assert_eq!((kind_of(7), kinds[7].2.as_deref()), ("local", Some("lo")));
    assert!(!lookups[0].1.as_ref().unwrap().is_deliverable());
}

/// Same last byte / group, host number 200: an address on the segment that
/// nobody holds (the "Service IP").
fn service_ip(server: &Host, v6: bool) -> IpAddr {
    if v6 {
        let mut s = server.ipv6.segments();
        s[7] = 0x200;
        IpAddr::V6(Ipv6Addr::from(s))
    } else {
        let o = server.ipv4.octets();
        IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], 200))
    }
}

/// A client reaches a "Service" IP that nft DNATs to the server (what
/// kube-proxy does); the lookup finds the NATed entry, and its own
/// delete command removes exactly that entry.
fn dnat_case(v6: bool) {
    require_root();
    let mut lab = Lab::new(if v6 { "state-ct6" } else { "state-ct4" });
    let (client, server) = lab.pair();
    let svc = SocketAddr::new(service_ip(&server, v6), 8000);
    let backend = SocketAddr::new(server.addr(v6), 8080);
    let (fam, addr_kw) = if v6 { ("ip6", "ip6") } else { ("ip", "ip") };
    let target = if v6 {
        format!("[{}]:8080", backend.ip())
    } else {
        backend.to_string()
    };
    client.exec(["nft", &format!("add table {fam} npnat")]);
    client.exec([
        "nft",
        &format!("add chain {fam} npnat out {{ type nat hook output priority -100; }}"),
    ]);
    client.exec([
        "nft",
        &format!(
            "add rule {fam} npnat out {addr_kw} daddr {} tcp dport 8000 dnat to {target}",
            svc.ip()
        ),
    ]);

    let _server = EchoServer::start(&server, backend.ip(), backend.port());
    // One line, then 60 s of silence: no packet may recreate the entry
    // after it is deleted.
    let line = LineClient::start(&client, svc, Duration::from_secs(60));
    assert!(
        line.wait_echoes(1, Duration::from_secs(5)),
        "echo through the DNAT"
    );
    let local = line.local_addr();
    // Let the delayed ACK of the echo go out, so the state is settled.
    std::thread::sleep(Duration::from_millis(300));

    let (entry, listed, dumped, t_lookup) = in_netns_blocking(&client, move || {
        let t = Instant::now();
        let entry = conntrack::lookup(local, svc).expect("conntrack lookup");
        let t_lookup = t.elapsed();
        let listed = conntrack::by_orig_dst(svc).expect("conntrack by original destination");
        let dumped = conntrack::dump(conntrack::Family::Any).expect("conntrack dump");
        (entry, listed, dumped, t_lookup)
    });
    eprintln!("lookup {t_lookup:?}: {entry:?}");
    let entry = entry.expect("a conntrack entry for the flow");
    assert_eq!(entry.proto, 6);
    assert_eq!((entry.orig_src, entry.orig_dst), (local, svc));
    assert!(entry.is_dnat());
    assert_eq!(
        entry.reply_src, backend,
        "replies come from the DNAT target"
    );
    assert_eq!(entry.reply_dst, local);
    assert_eq!(entry.tcp_state.as_deref(), Some("ESTABLISHED"));
    for s in ["SEEN_REPLY", "ASSURED", "CONFIRMED", "DST_NAT"] {
        assert!(
            entry.status.iter().any(|x| x == s),
            "{s} in {:?}",
            entry.status
        );
    }
    assert!(entry.timeout_s.is_some_and(|t| t > 3600), "{entry:?}");
    assert!(entry.id.is_some());
    assert_eq!(listed.len(), 1, "one flow to the Service: {listed:?}");
    assert_eq!(strip_timeout(&listed[0]), strip_timeout(&entry));
    assert!(
        dumped
            .iter()
            .any(|e| strip_timeout(e) == strip_timeout(&entry)),
        "dump has the flow"
    );

    let cmd = entry.delete_command();
    eprintln!("{cmd}");
    let done = client.try_exec(cmd.split_whitespace(), Duration::from_secs(10));
    assert!(done.success(), "{}", done.report());
    assert!(
        done.stderr().contains("1 flow entries have been deleted"),
        "{}",
        done.report()
    );
    let gone = in_netns_blocking(&client, move || {
        conntrack::lookup(local, svc).expect("conntrack lookup after delete")
    });
    assert_eq!(gone, None, "the entry is gone");
}

/// Timeouts tick down between two reads of the same entry.
fn strip_timeout(e: &state::ConntrackEntry) -> state::ConntrackEntry {
    state::ConntrackEntry {
        timeout_s: None,
        ..e.clone()
    }
}

#[test]
fn ipv4_dnat_entry_is_found_and_its_delete_command_removes_it() {
    dnat_case(false);
}

#[test]
fn ipv6_dnat_entry_is_found_and_its_delete_command_removes_it() {
    dnat_case(true);
}

#[test]
fn lookups_fail_cleanly_on_unknown_interfaces() {
    require_root();
    let mut lab = Lab::new("state-errors");
    let (h, _peer) = lab.pair();
    let (neigh, probed) = in_netns(&h, async {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        (
            neighbours::lookup(ip, Some("nope0")).await.map(|_| ()),
            probe::claimants("nope0", ip, Duration::from_millis(50))
                .await
                .map(|_| ()),
        )
    });
    let (neigh, probed) = (
        neigh.unwrap_err().to_string(),
        probed.unwrap_err().to_string(),
    );
    assert!(neigh.contains("no interface named \"nope0\""), "{neigh}");
    assert!(probed.contains("no interface named \"nope0\""), "{probed}");
    let lo = in_netns(&h, async {
        probe::claimants(
            "lo",
            "127.0.0.2".parse().unwrap(),
            Duration::from_millis(50),
        )
        .await
    });
    assert!(lo.unwrap_err().to_string().contains("not Ethernet"));
}
