//! Time to diagnosis, incident 1 (stale ARP entry for a VIP): a bridge
//! segment with the client, the VIP owner (`openssl s_server -www` on
//! VIP:6443) and an impostor holding the same VIP with a black-hole
//! listener. The impostor's `arping -U` poisons the client's entry, then
//! netprobe starts (`--netns` client) and curl runs as kubectl would: from
//! curl's start to netprobe's `diagnosis` line.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use netprobe_tests::peers::{BlackHole, TlsServer};
use netprobe_tests::{Background, Host, Lab, poll_until};

use crate::record::{Row, repeat};
use crate::{Config, np};

const PORT: u16 = 6443;
/// kubectl's TLS handshake timeout, and curl's --max-time here.
const KUBECTL: Duration = Duration::from_secs(10);
const SECTION: &str = "time to diagnosis";

struct Run {
    after_curl: Duration,
    detected_ms: Option<f64>,
    cause: String,
}

pub fn bench(cfg: &Config) -> Vec<Row> {
    let runs = repeat("incident 1", cfg, |_| one());
    let mut causes: Vec<String> = runs.each(|r| r.cause.clone());
    causes.sort();
    causes.dedup();
    runs.finish(vec![
        Row::new(
            SECTION,
            "incident 1 (stale ARP): curl start → diagnosis",
            "s",
        )
        .samples(runs.each(|r| r.after_curl.as_secs_f64()))
        .reference("kubectl gives up at 10 s")
        .note(format!("cause: {}", causes.join(", "))),
        Row::new(SECTION, "incident 1: detected_after_ms", "ms")
            .samples(runs.ok.iter().filter_map(|r| r.detected_ms))
            .reference("handshake timeout 3 s + ≤ 1 s"),
    ])
}

fn one() -> Run {
    let mut lab = Lab::new("bench-inc1");
    let seg = lab.bridge_segment(3);
    let (client, owner, impostor) = (seg.host(0), seg.host(1), seg.host(2));
    let vip = IpAddr::V4(seg.vip(0));
    let api = SocketAddr::new(vip, PORT);

    owner.add_ip(vip);
    let _server = TlsServer::start(owner, vip, PORT);
    assert!(client.ping(vip), "client does not reach the VIP");
    impostor.add_ip(vip);
    let _hole = BlackHole::start(impostor, vip, PORT);
    poison(client, impostor, vip);

    let mut trace = np::trace(client.name(), &["--handshake-timeout", "3s"]).np;
    let url = format!("https://{api}/");
    let curl = client.command(["curl", "-sk", "-o", "/dev/null", "--max-time", "10", &url]);
    let t0 = Instant::now();
    let mut curl = Background::spawn(curl, "curl");
    let want = api.to_string();
    let d = trace.wait_for(
        |v| np::is(v, "diagnosis") && v["flow"]["dst"] == want.as_str(),
        KUBECTL + Duration::from_secs(5),
    );
    let after_curl = t0.elapsed();
    curl.kill();
    trace.stop();
    let d = d.unwrap_or_else(|| panic!("no diagnosis for {api} within 15 s of curl's start"));
    Run {
        after_curl,
        detected_ms: d["detected_after_ms"].as_f64(),
        cause: d["cause"].as_str().unwrap_or("?").to_string(),
    }
}

/// `arping -U` from the impostor until the client's entry names its MAC
/// (the kernel ignores overrides within locktime, so it may take two).
fn poison(client: &Host, impostor: &Host, vip: IpAddr) {
    let IpAddr::V4(v4) = vip else {
        unreachable!("IPv4 lab")
    };
    let moved = poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
        impostor.gratuitous_arp(v4);
        client.wait_neighbour(vip, Duration::from_millis(500), |n| {
            n.lladdr.as_deref() == Some(impostor.mac.as_str())
        })
    });
    assert!(moved.is_some(), "the client's entry for {vip} never moved");
}
