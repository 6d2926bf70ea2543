//! Lab harness for netprobe's privileged integration tests.
//!
//! Tests build small networks out of network namespaces (never touching the
//! root namespace's addresses or routes), run real peers in them (openssl,
//! curl, python3 sockets, tcpdump) and the real netprobe binary next to them.
//! Everything is bounded in time and removed on drop, also when a test
//! panics. Must run as root; run lab tests with `--test-threads=1` when
//! netprobe is involved (its tracepoints see every namespace).
//!
//! Modules, one job each:
//! - [`cmd`]: run a command to completion, bounded, failing loudly.
//! - [`background`]: a long-running child, output collected, killed on drop.
//! - [`netns`]: one namespace ([`Netns`]).
//! - [`subnet`]: a per-lab address block, unique across live labs.
//! - [`lab`]: topologies ([`Lab`], bridge segments, veth pairs).
//! - [`l2`]: VIPs, neighbour entries, gratuitous ARP, ping ([`Host`] methods).
//! - [`nft`]: silent drops and random loss.
//! - [`peers`]: TLS server/clients, black hole, raw sender, echo pair.
//! - [`tls_bytes`]: a real ClientHello and broken variants.
//! - [`capture`]: tcpdump as ground truth.
//! - [`netprobe`]: the binary under test.
//! - [`verdicts`]: reading a run's JSON stream; netprobe on one lab.
//! - [`cleanup`]: nothing-left-behind checks.
//! - [`containerd`]: a private containerd with CRI and CNI; pods over CRI.
//! - [`pause_image`]: the pod image, built here (static binary, docker archive).
//! - [`tcx`]: a foreign program at the head of a tcx hook (a CNI's place).
//! - [`procfs`]: memory and BPF links of a process under test.
//! - [`scale_lab`]: hundreds of veths at once.

pub mod background;
pub mod capture;
pub mod cleanup;
pub mod cmd;
pub mod containerd;
pub mod icmp;
pub mod kube_cgroup;
pub mod l2;
pub mod lab;
pub mod netns;
pub mod netprobe;
pub mod nft;
pub mod pause_image;
pub mod peers;
pub mod pod_lab;
pub mod procfs;
pub mod py;
pub mod scale_lab;
pub mod service_lab;
pub mod subnet;
pub mod tcx;
pub mod tls_bytes;
pub mod tmp;
pub mod verdicts;
pub mod wait;

pub use background::{Background, Stream};
pub use capture::Sniffer;
pub use l2::{Neighbour, Nud};
pub use lab::{Host, Lab, Segment};
pub use netns::Netns;
pub use netprobe::{Netprobe, Stopped};
pub use pod_lab::PodLab;
pub use service_lab::ServiceLab;
pub use wait::poll_until;

/// True when running as root (lab tests need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Privileged tests fail, rather than skip, when not run as root.
pub fn require_root() {
    assert!(
        is_root(),
        "these tests need root (namespaces, eBPF, nft, setpriv, raw sockets)"
    );
}

/// Seconds as a `Duration`, for readable waits.
pub fn secs(s: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(s)
}
