//! `netprobe trace --metrics-listen` against Debian's real Prometheus
//! (issue 10, part 3): netprobe runs in a lab namespace and serves on that
//! namespace's loopback, Prometheus scrapes it there every second, the test
//! makes answered and unanswered handshakes and retransmits in the lab, then
//! asks Prometheus's HTTP API for the counters and runs `promtool check
//! metrics` on the scraped text.
//!
//! Root only; run with `--test-threads=1`:
//!
//! ```text
//! NETPROBE_BIN=$PWD/target/release/netprobe \
//!     cargo test -p netprobe-tests --test metrics -- --test-threads=1
//! ```

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use netprobe_tests::background::Background;
use netprobe_tests::cleanup::{self, NETPROBE_PROGRAMS};
use netprobe_tests::cmd;
use netprobe_tests::netprobe::{binary, endpoint};
use netprobe_tests::peers::{BlackHole, EchoServer, LineClient, TlsServer, tls_client};
use netprobe_tests::tmp::TempDir;
use netprobe_tests::{Lab, Netns, Netprobe, poll_until, require_root, secs};
use serde_json::Value;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Prometheus 2.42 opens its TSDB and web UI in about a second here.
const PROMETHEUS_START: Duration = Duration::from_secs(30);
/// Scrapes run every second; a counter reaches Prometheus a second or two
/// after netprobe counted it.
const SCRAPED: Duration = Duration::from_secs(20);
/// Where netprobe serves, on the lab namespace's own loopback (a fresh
/// namespace: the port cannot be taken).
const METRICS: &str = "127.0.0.1:9464";
const PROMETHEUS: &str = "127.0.0.1:9090";

/// Debian's prometheus in `ns`, scraping `target` every second, its TSDB
/// in a temporary directory; killed and removed on drop.
struct Prometheus<'n> {
    ns: &'n Netns,
    proc: Background,
    _dir: TempDir,
}

impl<'n> Prometheus<'n> {
    fn start(ns: &'n Netns, target: &str) -> Prometheus<'n> {
        let dir = TempDir::new();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: netprobe\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("writing prometheus.yml");
        let check = cmd::run_bounded(
            Command::new("promtool")
                .args(["check", "config"])
                .arg(&config),
            secs(20.0),
        );
        assert!(check.success(), "promtool check config: {}", check.report());
        let mut proc = ns.spawn([
            "prometheus".to_string(),
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={PROMETHEUS}"),
            "--storage.tsdb.retention.time=1h".to_string(),
        ]);
        let ready = poll_until(PROMETHEUS_START, secs(0.2), || {
            let r = curl(ns, &format!("http://{PROMETHEUS}/-/ready"));
            r.is_some().then_some(())
        });
        if ready.is_none() {
            panic!(
                "prometheus not ready after {PROMETHEUS_START:?}: {}",
                proc.report()
            );
        }
        Prometheus {
            ns,
            proc,
            _dir: dir,
        }
    }

    /// An instant query; the result vector's samples as (labels, value).
    fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let url = format!("http://{PROMETHEUS}/api/v1/query");
        let done = self.ns.try_exec(
            [
                "curl",
                "-sS",
                "--max-time",
                "5",
                "-G",
                &url,
                "--data-urlencode",
                &format!("query={promql}"),
            ],
            secs(10.0),
        );
        assert!(done.success(), "query {promql}: {}", done.report());
        let v: Value = serde_json::from_str(&done.stdout())
            .unwrap_or_else(|e| panic!("query {promql}: {e}: {}", done.stdout()));
        assert_eq!(v["status"], "success", "query {promql}: {v}");
        v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let value = s["value"][1]
                    .as_str()
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(f64::NAN);
                (s["metric"].clone(), value)
            })
            .collect()
    }

    /// The single value of `promql` (None while it has no sample).
    fn value(&self, promql: &str) -> Option<f64> {
        let r = self.query(promql);
        assert!(r.len() <= 1, "{promql}: want one series, got {r:?}");
        r.first().map(|(_, v)| *v)
    }

    /// Polls until `ok(value)` holds; panics with the last value and
    /// prometheus's log otherwise.
    fn wait(&mut self, promql: &str, ok: impl Fn(f64) -> bool, what: &str) -> f64 {
        let mut last = None;
        let got = poll_until(SCRAPED, secs(0.5), || {
            last = self.value(promql);
            last.filter(|v| ok(*v))
        });
        got.unwrap_or_else(|| {
            panic!(
                "prometheus: {promql} = {last:?} after {SCRAPED:?}, want {what}\n{}",
                self.proc.report()
            )
        })
    }
}

/// GET `url` from inside `ns`: the body on HTTP 2xx, None otherwise.
fn curl(ns: &Netns, url: &str) -> Option<String> {
    let done = ns.try_exec(["curl", "-sSf", "--max-time", "3", url], secs(5.0));
    done.success().then(|| done.stdout())
}

fn is_type(v: &Value, t: &str) -> bool {
    v["type"] == t
}

/// The lab's incident, seen by Prometheus: three answered handshakes, one
/// to a server that accepts TCP and never answers (a diagnosis), a flow
/// whose segments are dropped (retransmits). Every counter netprobe serves
/// agrees with its own JSON stream, and promtool accepts the text.
#[test]
fn prometheus_scrapes_handshakes_retransmits_and_diagnoses() {
    require_root();
    let mut lab = Lab::new("metrics");
    let seg = lab.bridge_segment(2);
    let (srv, cli) = (seg.host(0), seg.host(1));
    let server_ip: IpAddr = srv.ipv4.into();
    let _tls = TlsServer::start(srv, server_ip, 6443);
    let _hole = BlackHole::start(srv, server_ip, 443);
    let echo_addr = SocketAddr::new(server_ip, 8000);
    let _echo = EchoServer::start(srv, server_ip, 8000);

    let mut np = Netprobe::start_in(
        cli,
        [
            "trace",
            "--json",
            "--port",
            "6443",
            "--port",
            "443",
            "--handshake-timeout",
            "1s",
            "--stats-interval",
            "1s",
            "--metrics-listen",
            METRICS,
        ],
    );
    np.wait_ready(READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("netprobe did not get ready: {e:#}"));
    assert!(
        np.stderr()
            .contains(&format!("netprobe: metrics at http://{METRICS}/metrics")),
        "{}",
        np.stderr()
    );
    let mut prom = Prometheus::start(cli, METRICS);
    prom.wait(r#"up{job="netprobe"}"#, |v| v == 1.0, "1 (target up)");

    for i in 0..3 {
        let hs = tls_client(cli, server_ip, 6443, Some("metrics.lab"), secs(5.0));
        assert!(hs.handshake_done, "handshake {i}: {}", hs.report);
    }
    let hole = tls_client(cli, server_ip, 443, Some("hole.lab"), secs(2.5));
    assert!(
        hole.tcp_connected && !hole.handshake_done,
        "the black hole must accept TCP and never answer: {}",
        hole.report
    );

    let client = LineClient::start(cli, echo_addr, secs(0.1));
    let local = client.local_addr();
    assert!(client.wait_echoes(3, secs(5.0)), "echoes before the drop");
    srv.nft().drop_tcp_port(8000);
    let rtx_of_flow = |v: &Value| {
        is_type(v, "retransmit")
            && endpoint(&v["src"]).ok() == Some(local)
            && endpoint(&v["dst"]).ok() == Some(echo_addr)
    };
    let rtx = poll_until(secs(10.0), secs(0.1), || {
        let n = np.events().iter().filter(|v| rtx_of_flow(v)).count();
        (n >= 3).then_some(n)
    })
    .unwrap_or_else(|| panic!("fewer than 3 retransmit events\n{}", np.stderr()));
    let diagnosis = np
        .wait_for_type("diagnosis", secs(15.0))
        .unwrap_or_else(|| panic!("no diagnosis for the black hole\n{}", np.stderr()));
    drop(client);

    // Handshakes are seen on the client's interface only: exact counts.
    prom.wait(
        r#"netprobe_tls_handshakes_total{outcome="answered"}"#,
        |v| v == 3.0,
        "3",
    );
    prom.wait(
        r#"netprobe_tls_handshakes_total{outcome="unanswered"}"#,
        |v| v == 1.0,
        "1",
    );
    prom.wait(
        "netprobe_tls_handshake_duration_seconds_count",
        |v| v == 3.0,
        "3",
    );
    let sum = prom.wait(
        "netprobe_tls_handshake_duration_seconds_sum",
        |v| v > 0.0 && v < 3.0 * 5.0,
        "between 0 and 15 s",
    );
    let hellos = np
        .events()
        .iter()
        .filter(|v| is_type(v, "tls_client_hello"))
        .count() as f64;
    assert_eq!(hellos, 4.0, "4 ClientHellos in the JSON stream");
    prom.wait(
        r#"netprobe_events_total{type="tls_client_hello"}"#,
        |v| v == hellos,
        "the JSON stream's count",
    );
    // Tracepoints see every namespace (other labs may be retransmitting
    // too): at least this lab's flow.
    let retransmits = prom.wait(
        "netprobe_tcp_retransmits_total",
        |v| v >= rtx as f64,
        "at least the lab flow's retransmit events",
    );
    let cause = diagnosis["cause"].as_str().unwrap_or("?").to_string();
    prom.wait(
        &format!(r#"netprobe_diagnoses_total{{cause="{cause}"}}"#),
        |v| v >= 1.0,
        "at least 1",
    );
    prom.wait(
        r#"sum(netprobe_events_total{type="diagnosis"})"#,
        |v| v >= 1.0,
        "at least 1",
    );
    prom.wait(
        "netprobe_neighbour_changes_total",
        |v| v >= 1.0,
        "at least 1 (the client resolved the server's MAC)",
    );
    prom.wait("sum(netprobe_events_lost_total)", |v| v == 0.0, "0");
    prom.wait("netprobe_interfaces_attached", |v| v >= 1.0, ">= 1");
    // No per-flow label anywhere: every netprobe series, by label names.
    for (labels, _) in prom.query(r#"{__name__=~"netprobe_.+"}"#) {
        for key in labels.as_object().into_iter().flatten().map(|(k, _)| k) {
            assert!(
                [
                    "__name__", "job", "instance", "outcome", "cause", "type", "le"
                ]
                .contains(&key.as_str()),
                "unexpected label {key} in {labels}"
            );
        }
    }

    // The text Prometheus read, through promtool's linter.
    let text = curl(cli, &format!("http://{METRICS}/metrics")).expect("GET /metrics");
    let dir = TempDir::new();
    let scraped = dir.join("scraped.prom");
    std::fs::write(&scraped, &text).unwrap();
    let lint = promtool_check(&scraped);
    assert!(
        lint.success() && lint.stdout().trim().is_empty(),
        "promtool check metrics: {}\n{text}",
        lint.report()
    );
    // The same check fails on a counter without `_total`: it is looking.
    let bad = dir.join("bad.prom");
    std::fs::write(
        &bad,
        "# HELP x_bytes a\n# TYPE x_bytes counter\nx_bytes 1\n",
    )
    .unwrap();
    assert!(
        !promtool_check(&bad).success(),
        "promtool accepted bad text"
    );

    let stopped = np.stop();
    assert!(stopped.clean_exit(), "{}", stopped.stderr);
    eprintln!(
        "scraped: {retransmits} retransmits (lab flow {rtx}), handshake seconds sum {sum:.4}, \
         diagnosis cause {cause}\n{}",
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// `promtool check metrics < file` (it reads stdin only; the harness gives
/// commands /dev/null as stdin, hence the shell).
fn promtool_check(file: &std::path::Path) -> cmd::Finished {
    let mut c = Command::new("sh");
    c.args(["-c", "exec promtool check metrics < \"$1\"", "sh"])
        .arg(file);
    cmd::run_bounded(&mut c, secs(20.0))
}

/// A taken metrics port, an address this host does not have, and one that
/// is not an address are refused before anything is loaded: one line on
/// stderr naming the problem, a non-zero exit, no program, link or TC state
/// left in the lab.
#[test]
fn bad_metrics_listen_is_refused_before_attaching() {
    require_root();
    let mut lab = Lab::new("metrics-busy");
    let (a, _b) = lab.pair();
    let _taken = BlackHole::start(&a, "127.0.0.1".parse().unwrap(), 9464);
    for (listen, needles) in [
        (
            "127.0.0.1:9464",
            ["--metrics-listen 127.0.0.1:9464", "in use"],
        ),
        (
            "10.99.99.99:9464",
            [
                "--metrics-listen 10.99.99.99:9464",
                "Cannot assign requested address",
            ],
        ),
        (
            "localhost:9464",
            ["--metrics-listen", "is not an address and port"],
        ),
    ] {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", a.path().display()))
            .arg("--")
            .arg(binary())
            .args(["trace", "--json", "--metrics-listen", listen]);
        let done = cmd::run_bounded(&mut c, secs(20.0));
        let what = done.report();
        assert!(!done.timed_out, "{what}");
        assert!(done.code().is_some_and(|c| c != 0), "non-zero exit: {what}");
        let stderr = done.stderr();
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {what}");
        for n in needles {
            assert!(lines[0].contains(n), "{n:?} missing: {what}");
        }
        assert!(done.stdout().trim().is_empty(), "{what}");
        let mut left = cleanup::bpf_orphans(NETPROBE_PROGRAMS);
        left.extend(cleanup::tc_leftovers(Some(&a), &a.ifname));
        let tcx = a.exec(["bpftool", "-j", "net", "show"]);
        let tcx: Value = serde_json::from_slice(&tcx.stdout).unwrap_or(Value::Null);
        if tcx.to_string().contains("tc_ingress") || tcx.to_string().contains("tc_egress") {
            left.push(format!("tcx in the lab namespace: {tcx}"));
        }
        assert!(left.is_empty(), "left behind: {left:?}\n{what}");
    }
}
