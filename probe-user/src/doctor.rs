//! `netprobe doctor`: every prerequisite, one line each, with a remedy.

use std::path::Path;

use crate::{kernel::btf_offsets, kernel::privileges, kernel::probes, kernel::tracefs};

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
    // What a container must be granted (deploy/daemonset.yaml), with
    // what this process has: missing optional ones degrade a feature.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    checks.push(capabilities_check(
        uid,
        &privileges::missing_now()
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>(),
        privileges::optional_warning().is_some(),
    ));
    checks.push(check("tracefs", tracefs_state(uid)));
    let fields = tracefs::tp_fields();
    for tp in tracefs::tracepoints() {
        let path = tracefs::format_path(tp);
        let detail = match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => format!(
                "{}: not readable as uid {uid}: run as root or grant CAP_DAC_READ_SEARCH",
                path.display()
            ),
            Err(e) => format!(
                "absent ({}: {e}): the capability that needs it is off (below)",
                path.display()
            ),
            Ok(_) => {
                let cap = crate::kernel::capability::CAPABILITIES
                    .iter()
                    .find(|c| c.tracepoint == Some(tp));
                let release = probes::kernel_release();
                match cap
                    .map(|c| crate::kernel::capability::judge_fields(c, true, &fields, &release))
                {
                    Some(Ok(note)) if !note.is_empty() => {
                        format!("present, fields found by name; {note}")
                    }
                    Some(Err(why)) => format!("present, but {why}"),
                    _ => "present, every field netprobe reads found by name".to_string(),
                }
            }
        };
        checks.push(Check {
            name: tp,
            ok: true,
            detail,
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
        Ok(if probes::tcx_supported() {
            "tcx: links vanish with the process".into()
        } else {
            "no tcx on this kernel (a tcx hook query fails): clsact + netlink filters, removed at exit; leftovers of a killed netprobe are removed at start".into()
        }),
    ));
    if probes::tcx_supported() {
        checks.push(check("tcx hooks", Ok(tcx_neighbours())));
    }
    // Without a cgroup v2 root the socket hooks are off (a capability
    // off, not a failure: handshakes are still seen on the uplinks).
    let cgroup = crate::kernel::sockets::cgroup2_root().ok().flatten();
    checks.push(Check {
        name: "cgroup v2",
        ok: true,
        detail: match cgroup {
            Some(root) => format!(
                "at {}: the socket hooks see every local socket (pods' too) from its root, one link per direction",
                root.display()
            ),
            None => "off: no cgroup v2 hierarchy mounted (mount the host's /sys/fs/cgroup, or mount -t cgroup2 none DIR): handshakes are seen on the uplinks only".to_string(),
        },
    });
    // The verifier prunes on load-time constants: verify both modes, every
    // program (both retransmit programs too).
    let path_reasons =
        crate::kernel::tracefs::path_reason_bitmap(&crate::kernel::tracefs::drop_reasons());
    let offsets = btf_offsets::from_vmlinux().unwrap_or_default();
    let mut capabilities: Vec<crate::kernel::capability::Status> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    let privileged = privileges::check().is_none();
    for (name, capture_packets) in [("ebpf load", false), ("ebpf load (capture)", true)] {
        if !privileged {
            checks.push(check(
                name,
                Err("not tried: the kernel refuses it without the capabilities above".into()),
            ));
            continue;
        }
        let load = probes::Probes::load(&probes::LoadOptions {
            ring_bytes: 64 * 1024,
            offsets,
            ports: vec![443],
            capture_packets,
            path_reasons,
            netns_filter: false,
            retransmit_err: crate::kernel::tracefs::retransmit_has_err(),
            tp_fields: fields,
            verify_all: true,
        });
        match load {
            Ok(p) => {
                let mode = if capture_packets { " (capture)" } else { "" };
                for (prog, why) in p.refused() {
                    refused.push(format!("{prog}{mode}: {why}"));
                }
                let on = p.capabilities().iter().filter(|c| c.on).count();
                checks.push(Check {
                    name,
                    ok: true,
                    detail: format!(
                        "object loaded, ring buffer created; {on} of {} capabilities on, {} program(s) refused by the verifier",
                        p.capabilities().len(),
                        p.refused().len()
                    ),
                });
                // A capability is on when it is on in both modes.
                if capabilities.is_empty() {
                    capabilities = p.capabilities().to_vec();
                } else {
                    for (c, new) in capabilities.iter_mut().zip(p.capabilities()) {
                        if c.on && !new.on {
                            *c = new.clone();
                            c.why = format!("in capture mode: {}", c.why);
                        }
                    }
                }
                drop(p);
            }
            Err(e) => checks.push(Check {
                name,
                ok: false,
                detail: format!("{e:#}"),
            }),
        }
    }
    checks.push(Check {
        name: "verifier",
        ok: true,
        detail: if refused.is_empty() {
            "every program accepted".to_string()
        } else {
            format!("refused: {}", refused.join("; "))
        },
    });
    for c in &capabilities {
        checks.push(Check {
            name: c.name,
            ok: true,
            detail: c
                .line()
                .split_once(": ")
                .map_or(String::new(), |(_, d)| d.to_string()),
        });
    }
    checks.push(check("conntrack netlink", conntrack_netlink()));
    checks.push(check(
        "pod identity",
        crate::state::cri::check(crate::state::cri::socket::from_flag(None)),
    ));
    checks
}

/// What this process has of what `trace` needs, as whom: `ok` only when
/// nothing required is missing (CAP_NET_RAW is optional: without it the
/// active ARP/NDP probe is off).
fn capabilities_check(uid: u32, missing: &[&str], no_net_raw: bool) -> Check {
    let mut wanted = privileges::node_agent();
    if uid != 0 {
        // tracefs is 0700 root: any other uid needs to search it.
        wanted.push("CAP_DAC_READ_SEARCH");
    }
    let state: Vec<String> = wanted
        .iter()
        .map(|c| {
            let absent = missing.contains(c) || (*c == "CAP_NET_RAW" && no_net_raw);
            format!("{c} {}", if absent { "missing" } else { "ok" })
        })
        .collect();
    let ok = missing.is_empty();
    let remedy = if ok && !no_net_raw {
        String::new()
    } else if ok {
        "; without CAP_NET_RAW the active ARP/NDP probe is off".into()
    } else if uid == 0 {
        "; run as root with full capabilities (sudo), or grant the missing ones".into()
    } else {
        "; run as root (sudo), or grant the missing ones to this uid (e.g. setpriv --ambient-caps, or the DaemonSet's securityContext)".into()
    };
    Check {
        name: "capabilities",
        ok,
        detail: format!(
            "as uid {uid}: {}{remedy} (CAP_SYS_ADMIN only for --netns or to mount tracefs)",
            state.join(", ")
        ),
    }
}

/// Mounted, or not mounted, or mounted but closed to this uid.
fn tracefs_state(uid: u32) -> Result<String, String> {
    let events = Path::new(tracefs::ROOT).join("events");
    match std::fs::metadata(&events) {
        Ok(m) if m.is_dir() => Ok(format!("mounted at {}", tracefs::ROOT)),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(format!(
            "{} is mounted but not readable as uid {uid} ({e}): tracefs is mode 0700 root; run as root or grant CAP_DAC_READ_SEARCH",
            tracefs::ROOT
        )),
        _ => Err(format!(
            "not mounted: netprobe mounts it privately; or `mount -t tracefs tracefs {}`",
            tracefs::ROOT
        )),
    }
}

/// Interface names of this namespace (if_nameindex(3): unlike /sys/class/net,
/// it follows --netns).
fn interface_names() -> Vec<String> {
    let mut out = Vec::new();
    // SAFETY: the array ends with a zeroed entry and is freed once, below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            out.push(
                std::ffi::CStr::from_ptr((*p).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

/// Other programs already on the tcx hooks netprobe attaches to: it goes
/// ahead of them, so a redirecting CNI program cannot hide packets from it.
fn tcx_neighbours() -> String {
    let names = interface_names();
    let mut shared = Vec::new();
    for name in &names {
        for (_, attach_type) in probes::CLASSIFIERS {
            let Ok(chain) = probes::tcx_chain(name, *attach_type) else {
                continue;
            };
            if !chain.is_empty() {
                let progs: Vec<String> = chain
                    .iter()
                    .map(|p| format!("{} id {}", p.name, p.id))
                    .collect();
                shared.push(format!(
                    "{name} {}: {}",
                    probes::direction(*attach_type),
                    progs.join(", ")
                ));
            }
        }
    }
    if shared.is_empty() {
        return format!(
            "no other programs on the hooks of the {} interfaces; netprobe attaches first in the chain",
            names.len()
        );
    }
    format!("netprobe attaches ahead of: {}", shared.join("; "))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_say_as_whom_and_never_ok_with_one_missing() {
        let c = capabilities_check(65534, &["CAP_BPF", "CAP_DAC_READ_SEARCH"], true);
        assert!(!c.ok);
        assert!(c.detail.starts_with("as uid 65534: "), "{}", c.detail);
        assert!(c.detail.contains("CAP_BPF missing"), "{}", c.detail);
        assert!(
            c.detail.contains("CAP_DAC_READ_SEARCH missing"),
            "{}",
            c.detail
        );
        assert!(c.detail.contains("CAP_NET_RAW missing"), "{}", c.detail);
        assert!(c.detail.contains("run as root (sudo)"), "{}", c.detail);
        assert!(!c.detail.contains("uid 0"), "{}", c.detail);

        let root = capabilities_check(0, &[], false);
        assert!(root.ok, "{}", root.detail);
        assert!(
            root.detail.starts_with("as uid 0: CAP_BPF ok"),
            "{}",
            root.detail
        );
        assert!(!root.detail.contains("missing"), "{}", root.detail);
        assert!(
            !root.detail.contains("CAP_DAC_READ_SEARCH"),
            "{}",
            root.detail
        );

        let no_raw = capabilities_check(0, &[], true);
        assert!(no_raw.ok);
        assert!(
            no_raw.detail.contains("CAP_NET_RAW missing"),
            "{}",
            no_raw.detail
        );
        assert!(no_raw.detail.contains("probe is off"), "{}", no_raw.detail);
    }
}
