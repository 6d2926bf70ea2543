//! Pod names from a real container runtime (issue 10): a private containerd
//! with its CRI plugin runs in a namespace standing for the node, pods are
//! made over CRI with names and namespaces (their network from Debian's CNI
//! bridge plugin, their image built here), they make traffic toward silent
//! servers on the node, and netprobe, running in the node's namespace as
//! an operator would run it there, names them.
//!
//! ```text
//! NETPROBE_BIN=$PWD/target/release/netprobe \
//!     cargo test -p netprobe-tests --test cri -- --test-threads=1 --nocapture
//! ```

use std::{
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use netprobe_tests::{
    Background, Netns, Netprobe, containerd::Containerd, containerd::Pod, peers::BlackHole,
    require_root, secs,
};
use serde_json::Value;

const TLS_PORT: u16 = 443;
/// Dropped on the node: SYNs to it are retransmitted.
const DROPPED_PORT: u16 = 8443;

fn src_ip(v: &Value, key: &str) -> Option<IpAddr> {
    v[key].as_str()?.parse::<SocketAddr>().ok().map(|a| a.ip())
}

fn names_pod(v: &Value, pod: &Pod) -> bool {
    v["pod"]["namespace"] == pod.namespace.as_str()
        && v["pod"]["name"] == pod.name.as_str()
        && v["pod"]["uid"] == pod.uid.as_str()
}

/// netprobe's resident and peak memory, from /proc.
fn memory(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `curl` run in the pod's network namespace, bounded.
fn curl_from(pod: &Pod, url: &str) -> Background {
    Background::spawn(
        pod.command(["curl", "-sk", "-o", "/dev/null", "--max-time", "8", url]),
        &format!("curl {url} from pod {}/{}", pod.namespace, pod.name),
    )
}

#[test]
fn netprobe_names_pods_and_containers_from_the_runtime() {
    require_root();
    let started = Instant::now();
    let cd = Containerd::start("cri-node");
    let early = cd.run_pod("shop", "cart-0");
    eprintln!(
        "containerd up, pod shop/cart-0 at {} after {:.1}s",
        early.ip,
        started.elapsed().as_secs_f64()
    );
    let gw = cd.gateway();
    let _hole = BlackHole::start(&cd.node, gw.into(), TLS_PORT);
    cd.node.nft().drop_tcp_port(DROPPED_PORT);

    let socket = cd.socket().display().to_string();
    let mut np = Netprobe::start_in(
        &cd.node,
        [
            "trace",
            "--json",
            "--port",
            "443",
            "--handshake-timeout",
            "2s",
            "--cri-socket",
            socket.as_str(),
        ],
    );
    let t = Instant::now();
    np.wait_ready(secs(20.0)).expect("netprobe ready");
    eprintln!("ready after {:?} with a live CRI socket", t.elapsed());
    // Made after netprobe's first listing: named after a refresh asked for
    // by its first unknown namespace.
    let late = cd.run_pod("billing", "invoice-1");
    let web = cd.run_container(&late, "web", &["connect", &gw.to_string(), "8443"]);

    let traffic_at = Instant::now();
    let _tls = curl_from(&early, &format!("https://{gw}:{TLS_PORT}/"));
    let _syn = curl_from(&early, &format!("http://{gw}:{DROPPED_PORT}/"));

    // The early pod's SYNs: the socket's namespace is the sandbox's.
    let retransmit = np.wait_for(
        |v| {
            v["type"] == "retransmit"
                && src_ip(v, "src") == Some(early.ip.into())
                && names_pod(v, &early)
        },
        secs(20.0),
    );
    let retransmit = retransmit.unwrap_or_else(|| {
        panic!(
            "no retransmit naming shop/cart-0; events: {:#?}\nstderr: {}",
            np.events_of_type("retransmit"),
            np.stderr()
        )
    });
    eprintln!(
        "retransmit named after {:.1}s: {retransmit}",
        traffic_at.elapsed().as_secs_f64()
    );

    // The early pod's unanswered ClientHello: a diagnosis about its flow,
    // the client named by the pod's IP.
    let diagnosis = np
        .wait_for(
            |v| {
                v["type"] == "diagnosis"
                    && v["flow"]["dst"] == format!("{gw}:{TLS_PORT}")
                    && names_pod(v, &early)
            },
            secs(20.0),
        )
        .unwrap_or_else(|| {
            panic!(
                "no diagnosis naming shop/cart-0; diagnoses: {:#?}",
                np.events_of_type("diagnosis")
            )
        });
    eprintln!("diagnosis: {diagnosis}");

    // The late pod's container connects itself: its process's cgroup is the
    // container's, its name comes from the runtime.
    let from_container = np
        .wait_for(
            |v| {
                v["type"] == "retransmit"
                    && src_ip(v, "src") == Some(late.ip.into())
                    && names_pod(v, &late)
                    && v["container"]["id"] == web.as_str()
                    && v["container"]["name"] == "web"
            },
            secs(25.0),
        )
        .unwrap_or_else(|| {
            panic!(
                "no retransmit naming billing/invoice-1 container web ({web}); retransmits: {:#?}\nstderr: {}",
                np.events_of_type("retransmit"),
                np.stderr()
            )
        });
    eprintln!("container's retransmit: {from_container}");
    assert!(
        from_container["process"]["pid"].as_u64().is_some(),
        "{from_container}"
    );

    // Its storm's diagnosis names the pod and the container too.
    let storm = np
        .wait_for(
            |v| {
                v["type"] == "diagnosis"
                    && v["symptom"] == "retransmit_storm"
                    && src_ip(&v["flow"], "src") == Some(late.ip.into())
                    && names_pod(v, &late)
                    && v["container"]["name"] == "web"
            },
            secs(30.0),
        )
        .unwrap_or_else(|| {
            panic!(
                "no storm diagnosis naming billing/invoice-1 container web; diagnoses: {:#?}",
                np.events_of_type("diagnosis")
            )
        });
    eprintln!(
        "storm diagnosis after {:.1}s: {} {}",
        traffic_at.elapsed().as_secs_f64(),
        storm["cause"],
        storm["evidence"]
    );
    // doctor says the runtime answers, and what it knows.
    let doctor = netprobe_tests::cmd::run_bounded(
        std::process::Command::new(netprobe_tests::netprobe::binary())
            .arg("doctor")
            .env("NETPROBE_CRI_SOCKET", &socket),
        secs(60.0),
    );
    let line = doctor
        .stdout()
        .lines()
        .find(|l| l.contains("pod identity"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("doctor has no pod identity line: {}", doctor.report()));
    assert!(
        line.starts_with("ok") && line.contains("answers: 2 pod sandboxes, 1 containers"),
        "{line}"
    );
    eprintln!("doctor: {line}");
    eprintln!("netprobe memory with 2 pods known: {}", memory(np.pid()));
    let stopped = np.stop();
    assert!(stopped.clean_exit(), "netprobe: {}", stopped.stderr);
    eprintln!("whole test {:.1}s", started.elapsed().as_secs_f64());
}

#[test]
fn without_a_runtime_socket_netprobe_starts_as_before_and_says_nothing() {
    require_root();
    let node = Netns::new("cri-none");
    let mut np = Netprobe::start_in(
        &node,
        [
            "trace",
            "--json",
            "--cri-socket",
            "/run/netprobe-lab/no-such.sock",
        ],
    );
    let t = Instant::now();
    np.wait_ready(secs(20.0)).expect("netprobe ready");
    let ready = t.elapsed();
    std::thread::sleep(secs(0.5));
    eprintln!("netprobe memory without a runtime: {}", memory(np.pid()));
    let stopped = np.stop();
    assert!(stopped.clean_exit(), "{}", stopped.stderr);
    assert!(
        !stopped.stderr.contains("runtime") && !stopped.stderr.contains("CRI"),
        "an absent socket is not worth a word: {}",
        stopped.stderr
    );
    eprintln!("ready after {ready:?} with an absent CRI socket");
}
