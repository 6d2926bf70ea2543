//! deploy/ checked offline (issue 10, part 4): kubectl renders the
//! manifests (no API server exists here, so `kubectl kustomize`, which
//! parses and builds every resource without one), then the DaemonSet is
//! held to what netprobe itself says: the capabilities of
//! `privileges::node_agent()`, arguments its own parser accepts, the
//! metrics port everywhere the same. The Grafana dashboard may only query
//! metrics netprobe serves. Only the last test needs root: it runs netprobe
//! with exactly the DaemonSet's capabilities and arguments.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser as _;
use netprobe_tests::cmd;
use netprobe_tests::netns::with_caps;
use netprobe_tests::netprobe::binary;
use netprobe_tests::peers::{TlsServer, tls_client};
use netprobe_tests::tmp::TempDir;
use netprobe_tests::{Lab, Netprobe, poll_until, require_root, secs};
use probe_user::cli::{Cli, Command as NpCommand};
use serde::Deserialize as _;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// `kubectl kustomize DIR`: the rendered resources, or kubectl's error.
fn kustomize(dir: &Path) -> Result<Vec<Value>, String> {
    let done = cmd::run_bounded(
        Command::new("kubectl").arg("kustomize").arg(dir),
        secs(30.0),
    );
    if !done.success() {
        return Err(done.report());
    }
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&done.stdout()) {
        let v = Value::deserialize(doc).map_err(|e| format!("kubectl's output: {e}"))?;
        docs.push(v);
    }
    Ok(docs)
}

fn daemonset(docs: &[Value]) -> &Value {
    let ds: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "DaemonSet").collect();
    assert_eq!(ds.len(), 1, "one DaemonSet in {docs:?}");
    ds[0]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_string()
        })
        .collect()
}

#[test]
fn kubectl_renders_the_manifests_offline_and_rejects_a_broken_one() {
    let docs = kustomize(&deploy_dir()).unwrap_or_else(|e| panic!("kubectl kustomize: {e}"));
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["DaemonSet", "Namespace", "ServiceAccount"]),
        "{docs:?}"
    );
    for d in &docs {
        assert!(
            d["apiVersion"].is_string() && d["metadata"]["name"].is_string(),
            "{d}"
        );
    }
    // kubectl is really parsing: a damaged copy is refused.
    let tmp = TempDir::new();
    let text = std::fs::read_to_string(deploy_dir().join("daemonset.yaml")).unwrap();
    std::fs::write(
        tmp.join("daemonset.yaml"),
        text.replacen("spec:", "spec: [", 1),
    )
    .unwrap();
    std::fs::copy(
        deploy_dir().join("kustomization.yaml"),
        tmp.join("kustomization.yaml"),
    )
    .unwrap();
    let err = kustomize(tmp.path()).expect_err("kubectl accepted broken YAML");
    assert!(err.contains("daemonset.yaml"), "{err}");
}

#[test]
fn daemonset_grants_what_netprobe_needs_and_nothing_more() {
    let docs = kustomize(&deploy_dir()).unwrap_or_else(|e| panic!("kubectl kustomize: {e}"));
    let ds = daemonset(&docs);
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true, "{pod}");
    assert_eq!(pod["hostPID"], true, "{pod}");
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"],
        ds["spec"]["template"]["metadata"]["labels"]
    );
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false, "{sc}");
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{sc}");
    let granted: BTreeSet<String> = strings(&sc["capabilities"]["add"])
        .into_iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
    let needed: BTreeSet<String> = probe_user::kernel::privileges::node_agent()
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(
        granted, needed,
        "DaemonSet capabilities vs privileges::node_agent()"
    );

    // The arguments are netprobe's own: its parser takes them.
    let mut args = vec!["netprobe".to_string()];
    args.extend(strings(&c["args"]));
    let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let NpCommand::Trace(trace) = cli.command else {
        panic!("{args:?} is not `trace`")
    };
    assert!(trace.json, "JSON lines on stdout: {args:?}");
    assert!(
        trace.common.netns.is_none(),
        "--netns would need CAP_SYS_ADMIN"
    );
    let listen = trace.metrics_listen.expect("--metrics-listen");
    assert!(
        listen.ip().is_unspecified(),
        "scraped from outside: {listen}"
    );
    let ports = c["ports"].as_array().expect("ports");
    let metrics = ports
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a port named metrics");
    assert_eq!(metrics["containerPort"], listen.port(), "{metrics}");
    let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(
        annotations["prometheus.io/port"],
        listen.port().to_string(),
        "{annotations}"
    );

    for kind in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][res].is_string(),
                "resources.{kind}.{res} missing: {}",
                c["resources"]
            );
        }
    }
    // Every mount has its volume; tracefs, BTF and the cgroup hierarchy
    // (the socket hooks' root) come from the host.
    let volumes: BTreeSet<&str> = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let mut mounted = BTreeSet::new();
    for m in c["volumeMounts"].as_array().expect("volumeMounts") {
        let name = m["name"].as_str().unwrap();
        assert!(volumes.contains(name), "mount {m} has no volume");
        mounted.insert(m["mountPath"].as_str().unwrap());
    }
    for path in ["/sys/kernel/tracing", "/sys/kernel/btf", "/sys/fs/cgroup"] {
        assert!(mounted.contains(path), "{path} not mounted: {mounted:?}");
    }

    // The image runs the same command by default.
    let containerfile = std::fs::read_to_string(deploy_dir().join("Containerfile")).unwrap();
    assert!(containerfile.contains("\nFROM scratch\n"));
    assert!(containerfile.contains("\nCOPY target/dist/netprobe /usr/local/bin/netprobe\n"));
    let cmd_line = containerfile
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("CMD");
    let image_args: Vec<String> = serde_json::from_str(cmd_line).expect("CMD in exec form");
    assert_eq!(image_args, args[1..], "Containerfile CMD vs DaemonSet args");
}

/// Metric names a PromQL expression uses (`netprobe_...` identifiers).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("netprobe_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn dashboard_queries_only_metrics_netprobe_serves() {
    let text = std::fs::read_to_string(deploy_dir().join("grafana-dashboard.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("dashboard JSON parses");
    // What netprobe serves, from its own encoder: sample names of the text.
    let served: BTreeSet<String> = probe_user::sinks::metrics::Metrics::new()
        .encode()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(String::from)
        .collect();
    let mut used = BTreeSet::new();
    let panels = dash["panels"].as_array().expect("panels");
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel without a query: {p}");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "query uses no netprobe metric: {expr}");
            used.extend(names);
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = v["definition"].as_str() {
            used.extend(metric_names(q));
        }
    }
    let unknown: Vec<&String> = used.difference(&served).collect();
    assert!(
        unknown.is_empty(),
        "dashboard queries {unknown:?}; served: {served:?}"
    );
    // Every metric of the contract has a panel.
    for base in [
        "netprobe_tcp_retransmits_total",
        "netprobe_tls_handshakes_total",
        "netprobe_tls_handshake_duration_seconds_bucket",
        "netprobe_diagnoses_total",
        "netprobe_events_total",
        "netprobe_events_lost_total",
        "netprobe_neighbour_changes_total",
    ] {
        assert!(used.contains(base), "no panel for {base}");
    }
    // Grafana needs unique panel ids.
    let ids: BTreeSet<u64> = panels.iter().filter_map(|p| p["id"].as_u64()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids not unique");
}

/// The pod as the DaemonSet makes it, in a lab namespace: uid 0 with only
/// the manifest's capabilities (bounding set too, so nothing can be
/// regained), the manifest's arguments (the listen address moved to the
/// lab's loopback). netprobe must start without a capability warning, see
/// a handshake and count it on /metrics; and name each capability when
/// run without it.
#[test]
fn daemonset_capabilities_and_args_are_enough_to_trace_and_serve() {
    require_root();
    let docs = kustomize(&deploy_dir()).unwrap_or_else(|e| panic!("kubectl kustomize: {e}"));
    let c = &daemonset(&docs)["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["securityContext"]["runAsUser"], 0, "{c}");
    let caps: Vec<String> = strings(&c["securityContext"]["capabilities"]["add"])
        .iter()
        .map(|c| c.to_lowercase())
        .collect();
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    let listen = "127.0.0.1:9464";
    let mut args: Vec<String> = strings(&c["args"]);
    let at = args
        .iter()
        .position(|a| a == "--metrics-listen")
        .expect("--metrics-listen");
    args[at + 1] = listen.to_string();

    let mut lab = Lab::new("dscaps");
    let seg = lab.bridge_segment(2);
    let (srv, cli) = (seg.host(0), seg.host(1));
    let _tls = TlsServer::start(srv, srv.ipv4.into(), 6443);
    let bin = binary();
    let mut cmd: Vec<&str> = vec![bin.to_str().unwrap()];
    cmd.extend(args.iter().map(String::as_str));
    let mut np = Netprobe::start_command(with_caps(cli, 0, &caps, &cmd));
    np.wait_ready(secs(30.0))
        .unwrap_or_else(|e| panic!("not ready with {caps:?}: {e:#}"));
    assert!(
        !np.stderr().contains("missing capabilities"),
        "with {caps:?}:\n{}",
        np.stderr()
    );
    let hs = tls_client(cli, srv.ipv4.into(), 6443, Some("ds.lab"), secs(5.0));
    assert!(hs.handshake_done, "{}", hs.report);
    let url = format!("http://{listen}/metrics");
    let answered = poll_until(secs(10.0), secs(0.2), || {
        let done = cli.try_exec(["curl", "-sSf", "--max-time", "3", &url], secs(5.0));
        done.stdout()
            .contains("netprobe_tls_handshakes_total{outcome=\"answered\"} 1\n")
            .then_some(())
    });
    let stopped = np.stop();
    assert!(
        answered.is_some(),
        "handshake not counted on {url}\n{}",
        stopped.stderr
    );
    assert!(stopped.clean_exit(), "{}", stopped.stderr);

    // Nothing more: without any one of them netprobe names it, refusing to
    // start or (CAP_NET_RAW) warning that a feature is off.
    for drop in &caps {
        let fewer: Vec<&str> = caps.iter().copied().filter(|c| c != drop).collect();
        let done = cmd::run_bounded(&mut with_caps(cli, 0, &fewer, &cmd), secs(6.0));
        let name = format!("CAP_{}", drop.to_uppercase());
        assert!(
            done.stderr()
                .lines()
                .any(|l| l.contains("missing capabilities") && l.contains(&name)),
            "without {name}: {}",
            done.report()
        );
    }
}
