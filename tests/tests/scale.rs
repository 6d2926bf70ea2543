//! Hundreds of pods without slowing the node (issues 10 and 16): netprobe in
//! a node's namespace with 150 pod veth pairs gets ready without a hook on
//! any of them, sees their sockets' handshakes through its two socket hooks
//! on the root cgroup, and lets pod veths come and go at 50 a second
//! without a single tcx link (each costs the kernel an RCU grace period
//! under RTNL). Root only.
//!
//! These tests assert correctness and print the times; the bench
//! (`cargo xtask bench --only interfaces`) measures them side by side.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use netprobe_tests::netns::Netns;
use netprobe_tests::peers::{TlsServer, tls_client};
use netprobe_tests::scale_lab::{ip_batch, ready_count};
use netprobe_tests::{Netprobe, poll_until, procfs, require_root, secs, tcx};
use serde_json::Value;

/// Hang guards on a shared machine, not targets (the bench reports them).
const READY_300: Duration = Duration::from_secs(20);
const STOP_300: Duration = Duration::from_secs(20);
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A handshake on `pods`' loopback, and whether netprobe reported its
/// ClientHello from that namespace's socket.
fn handshake_seen_in(np: &Netprobe, pods: &Netns, port: u16, sni: &str) -> Option<Value> {
    let _srv = TlsServer::start(pods, LOOPBACK, port);
    let hs = tls_client(pods, LOOPBACK, port, Some(sni), secs(5.0));
    assert!(hs.handshake_done, "{}", hs.report);
    np.wait_for(
        |v| v["type"] == "tls_client_hello" && v["sni"] == sni && v["netns"] == pods.inode(),
        secs(5.0),
    )
}

#[test]
fn three_hundred_pod_interfaces_get_no_hook_and_their_sockets_are_seen() {
    require_root();
    let host = Netns::new("scale300");
    let pods = Netns::new("scale300p");
    pods.ip(["link", "set", "lo", "up"]);
    let mut lines = Vec::new();
    let mut names = Vec::new();
    for i in 0..150 {
        lines.push(format!(
            "link add va{i} up type veth peer name vb{i} netns {}",
            pods.name()
        ));
        names.push(format!("va{i}"));
    }
    ip_batch(&host, &lines);

    let started = Instant::now();
    let mut np = Netprobe::start_in(&host, ["trace", "--json", "--port", "6443"]);
    np.wait_ready(READY_300)
        .unwrap_or_else(|e| panic!("netprobe did not get ready: {e:#}"));
    let ready = started.elapsed();
    let pid = np.pid();
    let links = procfs::bpf_link_fds(pid);
    let rss = procfs::status_kib(pid, "VmHWM").unwrap_or(0);
    eprintln!(
        "150 pod veths (300 interfaces with their peers): exec -> ready {:.2} s, {links} BPF links, peak RSS {:.1} MiB",
        ready.as_secs_f64(),
        rss as f64 / 1024.0
    );
    let stderr = np.stderr();
    // No uplink in this namespace: no tc hook at all.
    assert_eq!(ready_count(&stderr), Some(0), "stderr:\n{stderr}");
    assert!(
        stderr.contains("every socket of 2 namespace(s)"),
        "the node's and its pods' namespaces: {stderr}"
    );
    let counts = tcx::hook_counts(&host, &names);
    assert!(
        counts.iter().all(|c| *c == Some((0, 0))),
        "a pod veth got a tcx hook: {counts:?}"
    );
    let ch = handshake_seen_in(&np, &pods, 6443, "pods.scale.lab");
    assert!(
        ch.is_some(),
        "no ClientHello from the pods' socket: {:?}\n{stderr}",
        np.events()
    );

    let stop_started = Instant::now();
    let stopped = np.stop_within(STOP_300);
    eprintln!(
        "exit with 150 pod veths: {:.2} s",
        stop_started.elapsed().as_secs_f64()
    );
    assert!(stopped.clean_exit(), "stderr:\n{}", stopped.stderr);
}

/// A "pod": a veth whose host end is in the traced namespace and whose
/// other end is in the pods' namespace, as a CNI makes them.
struct Churn {
    host: Netns,
    pods: Netns,
    next: u32,
}

impl Churn {
    /// Adds `n` pod veths, up, in interface group `group` (so that one
    /// request deletes them, as the kernel does when a pod's namespace
    /// goes); returns their host-side names.
    fn add(&mut self, n: u32, group: u32) -> Vec<String> {
        let mut names = Vec::new();
        let mut lines = Vec::new();
        for _ in 0..n {
            let (h, p) = (format!("h{}", self.next), format!("p{}", self.next));
            self.next += 1;
            // One request a veth: RTNL is what netprobe's links wait on too.
            lines.push(format!(
                "link add {h} up group {group} type veth peer name {p} netns {}",
                self.pods.name()
            ));
            names.push(h);
        }
        ip_batch(&self.host, &lines);
        names
    }

    /// Deletes a group at once (one `ip link del` a veth takes ~20 ms of
    /// RTNL time here: 50 a second would not keep up).
    fn delete(&self, group: u32) {
        ip_batch(&self.host, &[format!("link del group {group}")]);
    }
}

/// What one churn run did.
struct ChurnRun {
    created: usize,
    /// Achieved creation rate, veths a second.
    rate: f64,
    /// Veths with a program on either tcx hook when they were deleted.
    linked_at_delete: usize,
    /// Peak VmRSS of `pid` during the run, KiB.
    peak_rss: u64,
    took: Duration,
}

/// Creates 5 pod veths every 100 ms for `ticks` ticks (50 a second) and
/// deletes each group 1 s after it came; just before, reads their hooks.
fn churn_for(churn: &mut Churn, ticks: usize, pid: Option<u32>) -> ChurnRun {
    const TICK: Duration = Duration::from_millis(100);
    const PER_TICK: u32 = 5;
    const LIFE_TICKS: usize = 10;
    let group0 = 100 + churn.next;
    let mut alive: std::collections::VecDeque<(usize, Vec<String>)> = Default::default();
    let (mut created, mut linked_at_delete) = (0usize, 0usize);
    let mut creation_time = Duration::ZERO;
    let mut peak_rss = 0;
    let started = Instant::now();
    for tick in 0..ticks + LIFE_TICKS {
        let due = started + TICK * tick as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if tick < ticks {
            let names = churn.add(PER_TICK, group0 + tick as u32);
            created += names.len();
            alive.push_back((tick, names));
            if tick + 1 == ticks {
                creation_time = started.elapsed();
            }
        }
        while alive
            .front()
            .is_some_and(|(born, _)| born + LIFE_TICKS <= tick)
        {
            let (born, names) = alive.pop_front().expect("front exists");
            let counts = tcx::hook_counts(&churn.host, &names);
            linked_at_delete += counts
                .iter()
                .filter(|c| c.is_some_and(|(i, e)| i + e > 0))
                .count();
            churn.delete(group0 + born as u32);
        }
        if let Some(pid) = pid {
            peak_rss = peak_rss.max(procfs::status_kib(pid, "VmRSS").unwrap_or(0));
        }
    }
    // Created over ticks - 1 intervals, at best.
    let paced = TICK * (ticks as u32 - 1);
    ChurnRun {
        created,
        rate: created as f64 / creation_time.max(paced).as_secs_f64(),
        linked_at_delete,
        peak_rss,
        took: started.elapsed(),
    }
}

#[test]
fn fifty_new_pod_veths_a_second_get_no_hook_and_new_pods_are_followed() {
    require_root();
    let mut churn = Churn {
        host: Netns::new("scalehost"),
        pods: Netns::new("scalepods"),
        next: 0,
    };
    // The lab alone first: it makes 50 a second.
    let control = churn_for(&mut churn, 20, None);
    eprintln!(
        "churn without netprobe: {} veths at {:.0}/s, all deleted after {:.2} s",
        control.created,
        control.rate,
        control.took.as_secs_f64()
    );
    assert!(
        control.rate >= 45.0,
        "the lab alone made only {:.0} veths a second",
        control.rate
    );

    // A few long-lived pods, there from the start.
    let steady = churn.add(4, 1);
    let mut np = Netprobe::start_in(
        &churn.host,
        [
            "trace",
            "--json",
            "--port",
            "6443",
            "--stats-interval",
            "1s",
        ],
    );
    np.wait_ready(secs(30.0))
        .unwrap_or_else(|e| panic!("netprobe did not get ready: {e:#}"));
    let pid = np.pid();
    let baseline_links = procfs::bpf_link_fds(pid);
    let baseline_rss = procfs::status_kib(pid, "VmRSS").unwrap_or(0);
    assert_eq!(ready_count(&np.stderr()), Some(0), "{}", np.stderr());

    let run = churn_for(&mut churn, 40, Some(pid));
    assert!(np.is_running(), "netprobe died:\n{}", np.stderr());
    // A pod that came after start, in a namespace of its own: found from
    // its veth, its sockets reported.
    let late = Netns::new("scalelate");
    late.ip(["link", "set", "lo", "up"]);
    ip_batch(
        &churn.host,
        &[format!(
            "link add late0 up type veth peer name eth0 netns {}",
            late.name()
        )],
    );
    let seen = poll_until(secs(5.0), secs(0.2), || {
        handshake_seen_in(&np, &late, 6443, "late.scale.lab")
    });
    let links_now = procfs::bpf_link_fds(pid);
    let hwm = procfs::status_kib(pid, "VmHWM").unwrap_or(0);
    eprintln!(
        "churn with netprobe: {} veths at {:.0}/s (alone {:.0}/s), all deleted after {:.2} s; \
         {} of {} had a tcx hook when deleted; BPF links {baseline_links} before, {links_now} after; \
         RSS {:.1} MiB before, {:.1} MiB peak during, VmHWM {:.1} MiB",
        run.created,
        run.rate,
        control.rate,
        run.took.as_secs_f64(),
        run.linked_at_delete,
        run.created,
        baseline_rss as f64 / 1024.0,
        run.peak_rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    assert!(
        seen.is_some(),
        "no ClientHello from the late pod's socket: {:?}\n{}",
        np.events(),
        np.stderr()
    );
    assert_eq!(run.linked_at_delete, 0, "pod veths were hooked");
    assert_eq!(
        links_now, baseline_links,
        "BPF links changed with the churn"
    );
    // A floor that shows the churn was real, not a target (the bench
    // measures the ratio).
    assert!(
        run.rate >= 30.0,
        "the lab made only {:.0} veths a second with netprobe",
        run.rate
    );
    // Bounded memory: the churn leaves no per-interface state behind.
    assert!(
        run.peak_rss <= baseline_rss + 16 * 1024,
        "RSS grew from {baseline_rss} KiB to {} KiB during the churn",
        run.peak_rss
    );
    let counts = tcx::hook_counts(&churn.host, &steady);
    assert!(
        counts.iter().all(|c| *c == Some((0, 0))),
        "steady pods got hooks: {counts:?}"
    );
    let stopped = np.stop();
    assert!(stopped.clean_exit(), "stderr:\n{}", stopped.stderr);
}
