//! `netprobe capture`: a real bundle from a real incident, read back with
//! tshark and `netprobe replay`; and the bundle directory's refusals.
//!
//! Root only, one at a time:
//!
//! ```text
//! NETPROBE_BIN=$PWD/target/release/netprobe \
//!     cargo test -p netprobe-tests --test capture_bundle -- --test-threads=1 --nocapture
//! ```

use netprobe_tests::{require_root, secs};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use netprobe_tests::cmd::{self, Finished};
use netprobe_tests::peers::{BlackHole, EchoServer, LineClient, TlsServer, curl_https};
use netprobe_tests::tmp::TempDir;
use netprobe_tests::{
    Host, Lab, Netprobe, ServiceLab, Stopped, cleanup, netprobe::binary, poll_until,
};
use serde_json::Value;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The SNI curl sends (`--resolve` maps it to the VIP).
const API_NAME: &str = "api.lab.test";
const API_PORT: u16 = 6443;
const SVC_PORT: u16 = 8000;
const FILES: [&str; 5] = [
    "packets.pcapng",
    "events.jsonl",
    "neighbours.json",
    "conntrack.json",
    "report.md",
];

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// A capture run to its own end (not signalled), bounded by `limit`.
fn wait_finished(np: &mut Netprobe, limit: Duration) -> Stopped {
    let start = Instant::now();
    while np.is_running() && start.elapsed() < limit {
        std::thread::sleep(secs(0.1));
    }
    let ran = start.elapsed();
    let s = np.stop();
    assert!(
        s.clean_exit() && ran < limit,
        "capture did not end by itself with exit 0 within {limit:?} (status {:?}, killed {})\nstdout:\n{}\nstderr:\n{}",
        s.status,
        s.killed,
        s.non_json_stdout.join("\n"),
        s.stderr
    );
    s
}

/// tshark on a bundle file: exit 0 and no complaint on stderr (its warning
/// about running as root aside).
fn tshark(file: &Path, args: &[&str]) -> String {
    let mut c = Command::new("tshark");
    c.arg("-r").arg(file).args(args);
    let done = cmd::run_bounded(&mut c, secs(60.0));
    let complaints: Vec<&str> = done
        .output
        .stderr
        .split(|b| *b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok())
        .filter(|l| !l.trim().is_empty() && !l.contains("Running as user"))
        .collect();
    assert!(
        done.success() && complaints.is_empty(),
        "tshark did not read {} cleanly: {}",
        file.display(),
        done.report()
    );
    done.stdout()
}

/// The parts every bundle must have: the listing on stdout, five files of
/// mode 0600 in a 0700 directory, JSON that parses.
fn check_bundle(dir: &Path, s: &Stopped) -> Vec<Value> {
    let stdout = s.non_json_stdout.join("\n");
    eprintln!("--- capture's listing ---\n{stdout}");
    assert!(stdout.contains("capture stopped: "), "{stdout}");
    assert!(
        stdout.contains(&format!("bundle {}", dir.display())),
        "{stdout}"
    );
    assert_eq!(mode(dir), 0o700, "bundle directory mode");
    for f in FILES {
        let p = dir.join(f);
        assert_eq!(mode(&p), 0o600, "{f} mode");
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(f)),
            "{f} not listed: {stdout}"
        );
    }
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        FILES.len(),
        "exactly the bundle's files: {names:?}"
    );

    let events: Vec<Value> = std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("events.jsonl: {e}: {l}")))
        .collect();
    assert!(
        events
            .iter()
            .all(|e| e["type"].is_string() && e["time"].is_string()),
        "events.jsonl holds events"
    );
    for f in ["neighbours.json", "conntrack.json"] {
        let v: Value = serde_json::from_slice(&std::fs::read(dir.join(f)).unwrap())
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        let reads = v.as_array().unwrap_or_else(|| panic!("{f} is an array"));
        assert!(!reads.is_empty(), "{f}: no table read");
        assert_eq!(reads[0]["reason"], "start", "{f}");
        assert!(
            reads
                .iter()
                .all(|r| r["time"].is_string() && r["entries"].is_array()),
            "{f}"
        );
    }
    events
}

/// `netprobe replay FILE --json`: the diagnoses it prints.
fn replay(events: &Path) -> Vec<Value> {
    let done: Finished = Netprobe::run(
        [
            "replay".as_ref(),
            events.as_os_str(),
            "--json".as_ref(),
            "--handshake-timeout".as_ref(),
            "3s".as_ref(),
        ],
        secs(60.0),
    );
    assert!(done.success(), "replay failed: {}", done.report());
    done.stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("replay output {e}: {l}")))
        .collect()
}

/// Gratuitous ARP from `impostor` until `client`'s entry for `vip` says its MAC.
fn poison(client: &Host, impostor: &Host, vip: std::net::Ipv4Addr) {
    let moved = poll_until(secs(10.0), secs(0.1), || {
        impostor.gratuitous_arp(vip);
        client.wait_neighbour(vip.into(), secs(0.5), |n| {
            n.lladdr.as_deref() == Some(impostor.mac.as_str())
        })
    });
    assert!(
        moved.is_some(),
        "client's entry for {vip} never moved to {}: {:?}",
        impostor.mac,
        client.neighbour(vip.into())
    );
}

/// Incident 1 (stale ARP entry for an HA VIP) under
/// `capture --until-diagnosis`: the bundle holds the ClientHello with its
/// SNI, report.md names stale_neighbour with its fix, and replaying
/// events.jsonl gives the same diagnosis.
#[test]
fn incident1_until_diagnosis_bundle_shows_the_client_hello_and_replays_to_stale_neighbour() {
    require_root();
    let mut lab = Lab::new("cap-inc1");
    let seg = lab.bridge_segment(3);
    let (client, owner, impostor) = (seg.host(0), seg.host(1), seg.host(2));
    let vip = seg.vip(0);
    let api = SocketAddr::new(vip.into(), API_PORT);

    owner.add_ip(vip.into());
    let _server = TlsServer::start(owner, vip.into(), API_PORT);
    assert!(client.ping(vip.into()), "client reaches the VIP");

    let tmp = TempDir::new();
    let dir = tmp.join("b");
    let mut np = Netprobe::start([
        "capture".as_ref(),
        "--out".as_ref(),
        dir.as_os_str(),
        "--until-diagnosis".as_ref(),
        "--max-wait".as_ref(),
        "60s".as_ref(),
        "--netns".as_ref(),
        client.name().as_ref(),
        "--handshake-timeout".as_ref(),
        "3s".as_ref(),
    ]);
    np.wait_ready(READY_TIMEOUT).expect("capture ready");
    // Before the incident, while capturing: a handshake answered through
    // the owner, the evidence that later tells the owner from the impostor.
    let ok = curl_https(client, vip.into(), API_PORT, API_NAME, secs(5.0));
    assert_eq!(
        ok.http_code,
        Some(200),
        "before the incident: {}",
        ok.report
    );
    impostor.add_ip(vip.into());
    let _hole = BlackHole::start(impostor, vip.into(), API_PORT);
    // Poisoned while capturing: the gratuitous ARP is in the pcapng too.
    poison(client, impostor, vip);
    let bad = curl_https(client, vip.into(), API_PORT, API_NAME, secs(10.0));
    assert!(
        bad.tcp_connected && !bad.tls_done,
        "want a TLS handshake timeout: {}",
        bad.report
    );
    let s = wait_finished(&mut np, secs(40.0));
    let stdout = s.non_json_stdout.join("\n");
    keep(&dir, &stdout);
    assert!(
        stdout.contains("capture stopped: first diagnosis (--until-diagnosis): stale_neighbour"),
        "{stdout}\n{}",
        s.stderr
    );

    let events = check_bundle(&dir, &s);
    let d = events
        .iter()
        .find(|e| e["type"] == "diagnosis" && e["flow"]["dst"] == api.to_string())
        .unwrap_or_else(|| panic!("no diagnosis for {api} in events.jsonl"));
    assert_eq!(d["cause"], "stale_neighbour", "{d}");
    // Pasted on the node it acts in the client's namespace (--netns).
    let fix = format!("ip -n {} neigh del {vip} dev eth0", client.name());
    assert_eq!(d["fix"], fix.as_str(), "{d}");
    assert_eq!(d["netns"], client.name(), "{d}");
    assert!(d["node"].as_str().is_some_and(|n| !n.is_empty()), "{d}");

    // packets.pcapng: tshark reads it, shows the ClientHello with the SNI,
    // the interface name, and the impostor's gratuitous ARP.
    let pcap = dir.join("packets.pcapng");
    tshark(&pcap, &[]);
    let hello = tshark(
        &pcap,
        &[
            "-Y",
            "tls.handshake.type==1",
            "-T",
            "fields",
            "-e",
            "tls.handshake.extensions_server_name",
            "-e",
            "frame.interface_name",
            "-e",
            "ip.dst",
        ],
    );
    eprintln!("--- ClientHellos in packets.pcapng ---\n{hello}");
    assert!(
        hello
            .lines()
            .any(|l| l.split('\t').collect::<Vec<_>>() == [API_NAME, "eth0", &vip.to_string()]),
        "no ClientHello with SNI {API_NAME} to {vip} on eth0: {hello:?}"
    );
    let arps = tshark(
        &pcap,
        &[
            "-Y",
            &format!(
                "arp.src.proto_ipv4=={vip} && arp.src.hw_mac=={}",
                impostor.mac
            ),
        ],
    );
    assert!(
        !arps.trim().is_empty(),
        "the impostor's ARP is not in the pcapng"
    );
    // Payload beyond the handshake is never kept: no HTTP in the file.
    let http = tshark(&pcap, &["-Y", "http"]);
    assert!(http.trim().is_empty(), "HTTP payload captured: {http}");

    // report.md names the cause, with the fix and a timeline.
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("`stale_neighbour`"), "{report}");
    assert!(report.contains(&format!("```sh\n{fix}\n```")), "{report}");
    assert!(
        report.contains("## Timeline (UTC)") && report.contains("TLS CH"),
        "{report}"
    );
    assert!(report.contains(&format!("sni={API_NAME}")), "{report}");

    // The tables read at the diagnosis show the poisoned entry.
    let neigh: Value =
        serde_json::from_slice(&std::fs::read(dir.join("neighbours.json")).unwrap()).unwrap();
    let at_diag = neigh
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["reason"]
                .as_str()
                .is_some_and(|s| s.starts_with("diagnosis 1: stale_neighbour"))
        })
        .unwrap_or_else(|| panic!("no table read for the diagnosis: {neigh}"));
    assert!(
        at_diag["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["ip"] == vip.to_string() && e["mac"] == impostor.mac.as_str()),
        "{at_diag}"
    );

    // Replay: the same cause for the same flow, without the kernel.
    let replayed = replay(&dir.join("events.jsonl"));
    assert!(
        replayed.iter().any(|r| r["type"] == "diagnosis"
            && r["cause"] == "stale_neighbour"
            && r["flow"] == d["flow"]),
        "replay gave {replayed:?}, the capture {d}"
    );
}

/// For the README and for a look by hand: with `NETPROBE_KEEP_BUNDLE=DIR`
/// (a new directory) the bundle is copied there, its listing as
/// `listing.txt` beside it.
fn keep(dir: &Path, listing: &str) {
    let Some(to) = std::env::var_os("NETPROBE_KEEP_BUNDLE") else {
        return;
    };
    let to = PathBuf::from(to);
    std::fs::create_dir(&to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    for f in FILES {
        std::fs::copy(dir.join(f), to.join(f)).expect("copying the bundle");
    }
    std::fs::write(to.join("listing.txt"), format!("{listing}\n")).expect("saving the listing");
}

/// Silent drops on an established flow to 8000: the pcapng holds the
/// segments, and tshark marks the retransmissions.
#[test]
fn retransmissions_on_a_watched_port_are_marked_by_tshark() {
    require_root();
    let mut lab = Lab::new("cap-retx");
    let (client, server) = lab.pair();
    let dst = SocketAddr::new(server.ipv4.into(), SVC_PORT);
    let _echo = EchoServer::start(&server, dst.ip(), SVC_PORT);

    let tmp = TempDir::new();
    let dir = tmp.join("b");
    let mut np = Netprobe::start([
        "capture".as_ref(),
        "--out".as_ref(),
        dir.as_os_str(),
        "--port".as_ref(),
        "8000".as_ref(),
        "--duration".as_ref(),
        "8s".as_ref(),
        "--netns".as_ref(),
        client.name().as_ref(),
    ]);
    np.wait_ready(READY_TIMEOUT).expect("capture ready");
    let lines = LineClient::start(&client, dst, secs(0.2));
    assert!(lines.wait_echoes(3, secs(5.0)), "echoes before the drop");
    let local = lines.local_addr();
    server.nft().drop_tcp_port(SVC_PORT);
    let s = wait_finished(&mut np, secs(30.0));
    let stdout = s.non_json_stdout.join("\n");
    assert!(
        stdout.contains("capture stopped: --duration 8s elapsed"),
        "{stdout}"
    );

    let events = check_bundle(&dir, &s);
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "retransmit" && e["src"] == local.to_string()),
        "no retransmit event for {local}"
    );
    let pcap = dir.join("packets.pcapng");
    let retx = tshark(
        &pcap,
        &[
            "-Y",
            &format!(
                "tcp.analysis.retransmission && tcp.srcport=={}",
                local.port()
            ),
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
            "-e",
            "tcp.seq_raw",
        ],
    );
    eprintln!("--- retransmissions tshark marks ---\n{retx}");
    assert!(
        retx.lines().count() >= 2,
        "tshark should mark the retransmissions of {local}: {retx:?}"
    );
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("## Retransmits by flow"), "{report}");
    assert!(report.contains(&format!("{local} -> {dst}")), "{report}");
}

/// Incident 2 (stale conntrack DNAT after a force-deleted server pod)
/// under `capture --until-diagnosis --port 8000` on the client's node: the
/// pcapng holds the stuck flow's retransmissions (tshark marks them),
/// conntrack.json the stale entry, report.md and replay the cause.
#[test]
fn incident2_until_diagnosis_bundle_marks_retransmissions_and_replays_to_stale_conntrack_nat() {
    require_root();
    // cpod -- node1 (DNAT SVC -> pod1) -- node2 -- spod1 / spod2
    let sl = ServiceLab::build("cap-inc2", SVC_PORT);
    let (node1, cpod_h) = (&sl.node1, &sl.client);
    let (svc, pod1, pod2) = (sl.svc, sl.pod1, sl.pod2);
    let _server1 = EchoServer::start(&sl.spod1, pod1.ip(), SVC_PORT);
    let stuck = LineClient::start(cpod_h, svc, secs(1.0));
    assert!(
        stuck.wait_echoes(2, secs(5.0)),
        "echoes through the Service"
    );
    let local = stuck.local_addr();

    let tmp = TempDir::new();
    let dir = tmp.join("b");
    let mut np = Netprobe::start([
        "capture".as_ref(),
        "--out".as_ref(),
        dir.as_os_str(),
        "--until-diagnosis".as_ref(),
        "--max-wait".as_ref(),
        "60s".as_ref(),
        "--port".as_ref(),
        "8000".as_ref(),
        "--netns".as_ref(),
        node1.name().as_ref(),
    ]);
    np.wait_ready(READY_TIMEOUT).expect("capture ready");
    assert!(stuck.wait_echoes(3, secs(5.0)), "echoes while capturing");

    // kubectl delete pod --force: the pod's veth goes, the Service moves.
    let _server2 = EchoServer::start(&sl.spod2, pod2.ip(), SVC_PORT);
    sl.delete_pod1();
    sl.repoint_to_pod2();
    // New connections to the Service now reach the new pod.
    let fresh = LineClient::start(cpod_h, svc, secs(1.0));
    assert!(
        fresh.wait_echoes(1, secs(5.0)),
        "a new connection lands on {pod2}"
    );

    let s = wait_finished(&mut np, secs(60.0));
    let stdout = s.non_json_stdout.join("\n");
    keep(&dir, &stdout);
    assert!(
        stdout
            .contains("capture stopped: first diagnosis (--until-diagnosis): stale_conntrack_nat"),
        "{stdout}\n{}",
        s.stderr
    );
    let events = check_bundle(&dir, &s);
    let d = events
        .iter()
        .find(|e| e["type"] == "diagnosis" && e["flow"]["src"] == local.to_string())
        .unwrap_or_else(|| panic!("no diagnosis for {local} in events.jsonl"));
    assert_eq!(d["cause"], "stale_conntrack_nat", "{d}");
    let fix = d["fix"].as_str().unwrap_or_default().to_string();
    assert!(
        fix.starts_with(&format!(
            "nsenter --net=/run/netns/{} conntrack -D",
            node1.name()
        )),
        "{d}"
    );

    let pcap = dir.join("packets.pcapng");
    let retx = tshark(
        &pcap,
        &[
            "-Y",
            &format!(
                "tcp.analysis.retransmission && tcp.srcport=={}",
                local.port()
            ),
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
            "-e",
            "ip.dst",
        ],
    );
    eprintln!("--- retransmissions tshark marks ---\n{retx}");
    assert!(
        !retx.trim().is_empty(),
        "tshark marks no retransmission of {local}"
    );

    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("`stale_conntrack_nat`"), "{report}");
    assert!(report.contains(&format!("```sh\n{fix}\n```")), "{report}");

    // The table read at the diagnosis holds the stale entry.
    let ct: Value =
        serde_json::from_slice(&std::fs::read(dir.join("conntrack.json")).unwrap()).unwrap();
    let at_diag = ct
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["reason"]
                .as_str()
                .is_some_and(|s| s.starts_with("diagnosis 1: stale_conntrack_nat"))
        })
        .unwrap_or_else(|| panic!("no conntrack read for the diagnosis: {ct}"));
    assert!(
        at_diag["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["orig_src"] == local.to_string()
                && e["orig_dst"] == svc.to_string()
                && e["reply_src"] == pod1.to_string()),
        "{at_diag}"
    );

    let replayed = replay(&dir.join("events.jsonl"));
    assert!(
        replayed.iter().any(|r| r["type"] == "diagnosis"
            && r["cause"] == "stale_conntrack_nat"
            && r["flow"] == d["flow"]),
        "replay gave {replayed:?}, the capture {d}"
    );
}

/// Runs a capture that must be refused: exit 1 by itself, one line on
/// stderr containing `needle`, nothing on stdout, nothing attached.
fn refused(host: &Host, out: &Path, extra: &[&str], needle: &str) {
    let mut c = Command::new(binary());
    c.arg("capture")
        .arg("--out")
        .arg(out)
        .args(["--duration", "5s", "--netns", host.name()])
        .args(extra);
    let done = cmd::run_bounded(&mut c, secs(60.0));
    let what = done.report();
    assert_eq!(done.code(), Some(1), "{what}");
    let stderr = done.stderr();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {what}");
    assert!(lines[0].contains(needle), "want {needle:?}: {what}");
    assert!(done.stdout().trim().is_empty(), "{what}");
    let left = cleanup::tc_leftovers(Some(&*host.ns), &host.ifname);
    assert!(left.is_empty(), "attached after a refusal: {left:?}");
}

#[test]
fn existing_paths_symlinks_and_bad_parents_are_refused_leaving_nothing() {
    require_root();
    let mut lab = Lab::new("cap-refuse");
    let (a, _b) = lab.pair();
    let tmp = TempDir::new();

    let existing = tmp.join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::write(existing.join("keep"), b"old").unwrap();
    refused(&a, &existing, &[], "already exists");
    assert_eq!(std::fs::read(existing.join("keep")).unwrap(), b"old");
    assert_eq!(std::fs::read_dir(&existing).unwrap().count(), 1);

    let target = tmp.join("target");
    std::fs::create_dir(&target).unwrap();
    let link = tmp.join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    refused(&a, &link, &[], "symbolic link");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    let dangling = tmp.join("dangling");
    std::os::unix::fs::symlink(tmp.join("nowhere"), &dangling).unwrap();
    refused(&a, &dangling, &[], "symbolic link");
    assert!(!tmp.join("nowhere").exists());

    refused(
        &a,
        &tmp.join("no/such/dir"),
        &[],
        "parent directory does not exist",
    );
    assert!(!tmp.join("no").exists());

    // The session cannot start (no such interface): the new directory goes again.
    let fresh: PathBuf = tmp.join("fresh");
    refused(&a, &fresh, &["--iface", "nope0"], "unknown interface nope0");
    assert!(!fresh.exists(), "half-created bundle left behind");
}
