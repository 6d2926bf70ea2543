//! What `cargo xtask dist` ships (issue 18): the static binary runs on a
//! machine with nothing else on it. It is copied alone into an empty root
//! (only /proc and /sys mounted, in a private mount namespace that goes
//! with it), where `--version` names the commit, `doctor` passes and
//! `trace` attaches and reports a lab ARP, its stream opening with the
//! `start` record.
//!
//! The image `cargo xtask dist` writes is imported into the lab's real
//! containerd (by digest) and run there with the DaemonSet's security
//! context: uid 0, read-only root, no capability but the four it adds,
//! host network, tracefs and BTF mounted read-only; `doctor` passes inside.
//!
//! ```text
//! cargo xtask dist
//! NETPROBE_BIN=$PWD/target/release/netprobe NETPROBE_DIST=$PWD/target/dist \
//!     cargo test -p netprobe-tests --test dist -- --test-threads=1
//! ```
//! (`cargo xtask test` builds both and sets both.)

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use netprobe_tests::cmd;
use netprobe_tests::containerd::Containerd;
use netprobe_tests::lab::Lab;
use netprobe_tests::netns::Netns;
use netprobe_tests::netprobe::Netprobe;
use netprobe_tests::tmp::TempDir;
use netprobe_tests::{require_root, secs};
use serde_json::Value;

const DIST_ENV: &str = "NETPROBE_DIST";

/// target/dist, from `NETPROBE_DIST`.
fn dist_dir() -> PathBuf {
    let dir = std::env::var_os(DIST_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("{DIST_ENV} is not set: run `cargo xtask dist` and point it at target/dist")
        });
    assert!(
        dir.join("netprobe").is_file(),
        "{DIST_ENV}={}: no netprobe in it",
        dir.display()
    );
    dir
}

/// An empty root holding only the static binary (as /netprobe) and the
/// mount points for /proc and /sys.
fn empty_root() -> TempDir {
    let root = TempDir::new();
    for d in ["proc", "sys"] {
        std::fs::create_dir(root.join(d)).expect("mount point");
    }
    std::fs::copy(dist_dir().join("netprobe"), root.join("netprobe")).expect("copying netprobe");
    root
}

/// `netprobe ARGS` chrooted into `root`, with /proc and /sys mounted in a
/// private mount namespace (gone when netprobe exits), in network
/// namespace `ns` when given.
fn chrooted(root: &Path, ns: Option<&Netns>, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    if let Some(ns) = ns {
        c.arg(format!("--net={}", ns.path().display()));
    }
    c.args(["--", "unshare", "--mount", "--propagation", "private", "--"])
        .args([
            "sh",
            "-c",
            r#"mount -t proc proc "$0/proc" && mount --rbind /sys "$0/sys" && exec chroot "$0" /netprobe "$@""#,
        ])
        .arg(root)
        .args(args);
    c
}

#[test]
fn the_static_binary_needs_no_loader_and_names_its_commit() {
    let bin = dist_dir().join("netprobe");
    let file = cmd::run(Command::new("file").arg(&bin), secs(10.0));
    let file = String::from_utf8_lossy(&file.stdout).to_string();
    assert!(
        file.contains("statically linked") || file.contains("static-pie linked"),
        "{file}"
    );
    assert!(!file.contains("interpreter"), "{file}");
    let version = cmd::run(Command::new(&bin).arg("--version"), secs(10.0));
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let (_, commit) = version
        .split_once(" (commit ")
        .unwrap_or_else(|| panic!("no commit in {version:?}"));
    let commit = commit.trim_end_matches(')');
    assert!(
        commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit()),
        "{version}"
    );
}

#[test]
fn doctor_passes_in_an_empty_root() {
    require_root();
    let root = empty_root();
    let done = cmd::run_bounded(&mut chrooted(root.path(), None, &["doctor"]), secs(60.0));
    let what = done.report();
    assert!(done.success(), "doctor failed in an empty root: {what}");
    let out = done.stdout();
    for check in [
        "privileges",
        "tracefs",
        "btf",
        "ebpf load",
        "conntrack netlink",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("ok ") && l.contains(check)),
            "{check} not ok: {what}"
        );
    }
    let version = cmd::run_bounded(&mut chrooted(root.path(), None, &["--version"]), secs(10.0));
    assert!(
        version.stdout().starts_with("netprobe 0.") && version.stdout().contains("(commit "),
        "{}",
        version.report()
    );
}

#[test]
fn trace_runs_in_an_empty_root_and_starts_with_the_start_record() {
    require_root();
    let root = empty_root();
    let mut lab = Lab::new("dist");
    let (a, b) = lab.pair();
    let mut np = Netprobe::start_command(chrooted(
        root.path(),
        Some(&a.ns),
        &["trace", "--json", "--iface", "eth0"],
    ));
    if let Err(e) = np.wait_ready(secs(60.0)) {
        panic!("the static netprobe did not get ready in an empty root: {e:#}");
    }
    let ip: Ipv4Addr = b.ipv4;
    let arp = |v: &Value| {
        v["type"] == "arp" && v["iface"] == "eth0" && v["sender_ip"] == ip.to_string().as_str()
    };
    let seen = netprobe_tests::poll_until(secs(20.0), Duration::from_millis(500), || {
        b.gratuitous_arp(ip);
        np.wait_for(arp, secs(1.0))
    });
    let stopped = np.stop();
    let first = stopped.events.first().cloned().unwrap_or(Value::Null);
    assert!(seen.is_some(), "no ARP event: stderr {}", stopped.stderr);
    assert_eq!(first["type"], "start", "first line {first}");
    assert_eq!(first["schema"], 1, "{first}");
    assert!(
        first["netprobe"]
            .as_str()
            .is_some_and(|v| v.contains("(commit ")),
        "{first}"
    );
    assert!(
        first["node"].as_str().is_some_and(|n| !n.is_empty()),
        "{first}"
    );
    assert!(
        first["kernel"].as_str().is_some_and(|k| !k.is_empty()),
        "{first}"
    );
    assert!(first["capabilities"]["tcx"].is_boolean(), "{first}");
    assert!(stopped.clean_exit(), "stderr {}", stopped.stderr);
}

/// ctr's default capabilities (containerd's default spec), all dropped but
/// NET_RAW, which the DaemonSet adds back.
const CTR_DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The DaemonSet container's securityContext and mounts, from the manifest.
fn daemonset_context() -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/daemonset.yaml"),
    )
    .expect("deploy/daemonset.yaml");
    let mut caps = Vec::new();
    let mut mounts = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("YAML");
        if v["kind"] != "DaemonSet" {
            continue;
        }
        let c = &v["spec"]["template"]["spec"]["containers"][0];
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsUser"], 0, "{sc}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{sc}");
        assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{sc}");
        caps = sc["capabilities"]["add"]
            .as_array()
            .expect("capabilities.add")
            .iter()
            .map(|c| format!("CAP_{}", c.as_str().unwrap()))
            .collect();
        mounts = c["volumeMounts"]
            .as_array()
            .expect("volumeMounts")
            .iter()
            .filter_map(|m| m["mountPath"].as_str())
            .filter(|p| p.starts_with("/sys/"))
            .map(str::to_string)
            .collect();
    }
    assert!(!caps.is_empty(), "no DaemonSet in deploy/daemonset.yaml");
    (caps, mounts)
}

#[test]
fn the_image_runs_doctor_under_containerd_with_the_daemonsets_security_context() {
    require_root();
    let dist = dist_dir();
    let reference = std::fs::read_to_string(dist.join("image.txt")).expect("image.txt");
    let reference = reference.trim();
    let (_, digest) = reference.split_once('@').expect("a digest in image.txt");
    let by_digest = format!("docker.io/library/netprobe@{digest}");
    let (caps, mounts) = daemonset_context();

    let cd = Containerd::start("dist-ctr");
    let ctr = || {
        let mut c = Command::new("ctr");
        c.arg("-a").arg(cd.socket()).args(["-n", "k8s.io"]);
        c
    };
    let import = cmd::run_bounded(
        ctr()
            .args(["images", "import", "--snapshotter", "native"])
            .arg(dist.join("netprobe-oci.tar")),
        secs(60.0),
    );
    assert!(import.success(), "ctr import: {}", import.report());
    let listed = cmd::run_bounded(ctr().args(["images", "ls", "-q"]), secs(20.0));
    // By tag, and by digest as the pinned DaemonSet names it.
    let tagged = reference.split('@').next().unwrap();
    for name in [tagged, by_digest.as_str()] {
        assert!(
            listed.stdout().lines().any(|l| l == name),
            "{name} not among the images: {}",
            listed.report()
        );
    }

    let mut run = ctr();
    run.args([
        "run",
        "--rm",
        "--snapshotter",
        "native",
        "--net-host",
        "--read-only",
    ]);
    for cap in CTR_DEFAULT_CAPS {
        run.args(["--cap-drop", cap]);
    }
    for cap in &caps {
        run.args(["--cap-add", cap]);
    }
    for m in &mounts {
        run.arg("--mount")
            .arg(format!("type=bind,src={m},dst={m},options=rbind:ro"));
    }
    run.arg(&by_digest)
        .arg(format!("netprobe-doctor-{}", std::process::id()))
        .args(["/usr/local/bin/netprobe", "doctor"]);
    let done = cmd::run_bounded(&mut run, secs(90.0));
    let what = format!("{}\n{}", done.report(), cd.log());
    assert!(done.success(), "doctor in the image failed: {what}");
    let out = done.stdout();
    eprintln!("doctor in {by_digest}:\n{out}");
    let line = out
        .lines()
        .find(|l| l.contains("capabilities"))
        .unwrap_or_else(|| panic!("no capabilities line: {what}"));
    assert!(
        line.starts_with("ok ") && line.contains("as uid 0"),
        "{line}"
    );
    for cap in &caps {
        assert!(line.contains(&format!("{cap} ok")), "{cap}: {line}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("ok ") && l.contains("ebpf load")),
        "{what}"
    );
}
