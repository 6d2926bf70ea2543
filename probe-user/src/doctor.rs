//! `netprobe doctor`: every prerequisite, one line each, with a remedy.

use std::path::Path;

use crate::{btf_offsets, privileges, probes, tracefs};

pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

fn check(name: &'static str, result: Result<String, String>) -> Check {
    match result {
        Ok(detail) => Check {
            name,
            ok: true,
            detail,
        },
        Err(detail) => Check {
            name,
            ok: false,
            detail,
        },
    }
}

/// Runs every check; loading the programs is the real test of the verifier,
/// ring buffer and tracepoints, and is undone before returning.
pub fn run() -> Vec<Check> {
    let mut checks = vec![check(
        "privileges",
        match privileges::check() {
            None => Ok("CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN present".into()),
            Some(msg) => Err(msg),
        },
    )];
    checks.push(check(
        "tracefs",
        if tracefs::mounted() {
            Ok(format!("mounted at {}", tracefs::ROOT))
        } else {
            Err(format!(
                "not mounted: netprobe mounts it privately; or `mount -t tracefs tracefs {}`",
                tracefs::ROOT
            ))
        },
    ));
    for (tp, fields) in tracefs::EXPECTED {
        let path = Path::new(tracefs::ROOT)
            .join("events")
            .join(tp)
            .join("format");
        let result = std::fs::read_to_string(&path)
            .map_err(|e| {
                format!(
                    "{}: {e} (kernel built without it, or tracefs missing)",
                    path.display()
                )
            })
            .and_then(|text| tracefs::check_layout(tp, &text, fields).map_err(|e| e.to_string()))
            .map(|()| "present, record layout as expected".to_string());
        checks.push(Check {
            name: tp,
            ok: result.is_ok(),
            detail: result.unwrap_or_else(|e| e),
        });
    }
    checks.push(check(
        "btf",
        btf_offsets::from_vmlinux()
            .map(|o| format!("/sys/kernel/btf/vmlinux: sock.skc_net at {}, net.ns.inum at {}, tcp_sock.snd_una at {}", o.sock_net, o.net_inum, o.tcp_snd_una))
            .map_err(|e| format!("{e}: events keep working without socket namespace and sequence numbers")),
    ));
    checks.push(check(
        "tc attach",
        if probes::tcx_supported() {
            Ok("tcx (kernel >= 6.6): links vanish with the process".into())
        } else {
            Err(
                "no tcx (kernel < 6.6): falls back to clsact + netlink filters, removed at exit"
                    .into(),
            )
        },
    ));
    // The verifier prunes on load-time constants: verify both modes.
    for (name, capture_packets) in [("ebpf load", false), ("ebpf load (capture)", true)] {
        let load = probes::Probes::load(&probes::LoadOptions {
            ring_bytes: 64 * 1024,
            offsets: Default::default(),
            ports: vec![443],
            capture_packets,
        });
        checks.push(check(
            name,
            load.map(|p| {
                drop(p);
                "programs verified, ring buffer created, tracepoints attached and detached".into()
            })
            .map_err(|e| format!("{e:#}")),
        ));
    }
    checks.push(check("conntrack netlink", conntrack_netlink()));
    checks
}

fn conntrack_netlink() -> Result<String, String> {
    if !Path::new("/proc/sys/net/netfilter/nf_conntrack_max").exists() {
        return Err("nf_conntrack not loaded here: stale-NAT diagnosis unavailable (`modprobe nf_conntrack`)".into());
    }
    // SAFETY: plain socket(2) call; the fd is closed right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(format!(
            "NETLINK_NETFILTER socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    Ok("nf_conntrack loaded, ctnetlink socket opens".into())
}
