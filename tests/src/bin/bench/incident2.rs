//! Time to diagnosis, incident 2 (stale conntrack DNAT): cpod — node1 —
//! node2 — spod1/spod2, node1 DNATs ServiceIP:8000 to spod1:8000, a client
//! in cpod sends a line every second. spod1's veth is deleted on node2 (a
//! force-deleted pod; `ip netns del` would not remove a namespace with a
//! process in it), the DNAT re-pointed to spod2, one new connection made.
//! netprobe runs with `--netns node1 --port 8000`; measured: from the first
//! `retransmit` event of the stuck flow to its `diagnosis` (event times).

use std::time::Duration;

use netprobe_tests::ServiceLab;
use netprobe_tests::peers::{EchoServer, LineClient};
use serde_json::Value;

use crate::record::{Row, repeat};
use crate::{Config, np};

const PORT: u16 = 8000;
const SECTION: &str = "time to diagnosis";

struct Run {
    after_retx: f64,
    detected_ms: Option<f64>,
    cause: String,
}

pub fn bench(cfg: &Config) -> Vec<Row> {
    let runs = repeat("incident 2", cfg, |_| one());
    let mut causes: Vec<String> = runs.each(|r| r.cause.clone());
    causes.sort();
    causes.dedup();
    runs.finish(vec![
        Row::new(
            SECTION,
            "incident 2 (stale DNAT): first retransmit → diagnosis",
            "s",
        )
        .samples(runs.each(|r| r.after_retx))
        .reference("client hangs ~15 min (924.6 s, tcp_retries2=15)")
        .note(format!("cause: {}", causes.join(", "))),
        Row::new(SECTION, "incident 2: detected_after_ms", "ms")
            .samples(runs.ok.iter().filter_map(|r| r.detected_ms))
            .reference("bar: 5 s after the first retransmit"),
    ])
}

fn one() -> Run {
    let sl = ServiceLab::build("bench-inc2", PORT);
    let (node1, cpod_h) = (&sl.node1, &sl.client);
    let (svc, pod1, pod2) = (sl.svc, sl.pod1, sl.pod2);

    let _server1 = EchoServer::start(&sl.spod1, pod1.ip(), PORT);
    let stuck = LineClient::start(cpod_h, svc, Duration::from_secs(1));
    assert!(
        stuck.wait_echoes(2, Duration::from_secs(5)),
        "no echo via {svc}"
    );
    let local = stuck.local_addr().to_string();

    let mut trace = np::trace(node1.name(), &["--port", "8000"]).np;
    let _server2 = EchoServer::start(&sl.spod2, pod2.ip(), PORT);
    sl.cut_pod1_network();
    sl.repoint_to_pod2();
    let fresh = LineClient::start(cpod_h, svc, Duration::from_secs(1));
    assert!(
        fresh.wait_echoes(1, Duration::from_secs(5)),
        "a new connection should reach {pod2}"
    );

    let of_stuck = |v: &Value, key: &str| v[key].as_str() == Some(local.as_str());
    let d = trace.wait_for(
        |v| np::is(v, "diagnosis") && of_stuck(&v["flow"], "src"),
        Duration::from_secs(20),
    );
    let stopped = trace.stop();
    let d = d.unwrap_or_else(|| panic!("no diagnosis for {local} within 20 s"));
    let first = stopped
        .events
        .iter()
        .find(|v| np::is(v, "retransmit") && of_stuck(v, "src"))
        .unwrap_or_else(|| panic!("no retransmit event for {local}"));
    let (Some(t_d), Some(t_r)) = (np::event_secs(&d), np::event_secs(first)) else {
        panic!("events without a parsable time: {first} {d}");
    };
    Run {
        after_retx: t_d - t_r,
        detected_ms: d["detected_after_ms"].as_f64(),
        cause: d["cause"].as_str().unwrap_or("?").to_string(),
    }
}
