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
    // What a container must be granted (deploy/daemonset.yaml), with
    // what this process has: missing optional ones degrade a feature.
    let missing: Vec<&str> = privileges::missing_now()
        .iter()
        .map(|(n, _)| *n)
        .chain(privileges::optional_warning().map(|_| "CAP_NET_RAW"))
        .collect();
    let state: Vec<String> = privileges::node_agent()
        .iter()
        .map(|c| {
            let mark = if missing.contains(c) { "missing" } else { "ok" };
            format!("{c} {mark}")
        })
        .collect();
    checks.push(Check {
        name: "container caps",
        ok: true,
        detail: format!(
            "{} as uid 0 (another uid also needs CAP_DAC_READ_SEARCH for tracefs; CAP_SYS_ADMIN only for --netns or to mount tracefs)",
            state.join(", ")
        ),
    });
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
    let fields = tracefs::tp_fields();
    for tp in tracefs::tracepoints() {
        let path = tracefs::format_path(tp);
        let detail = match std::fs::read_to_string(&path) {
            Err(e) => format!(
                "absent ({}: {e}): the capability that needs it is off (below)",
                path.display()
            ),
            Ok(_) => {
                let cap = crate::capability::CAPABILITIES
                    .iter()
                    .find(|c| c.tracepoint == Some(tp));
                let release = probes::kernel_release();
                match cap.map(|c| crate::capability::judge_fields(c, true, &fields, &release)) {
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
    // The verifier prunes on load-time constants: verify both modes, every
    // program (both retransmit programs too).
    let path_reasons = crate::tracefs::path_reason_bitmap(&crate::tracefs::drop_reasons());
    let offsets = btf_offsets::from_vmlinux().unwrap_or_default();
    let mut capabilities: Vec<crate::capability::Status> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    for (name, capture_packets) in [("ebpf load", false), ("ebpf load (capture)", true)] {
        let load = probes::Probes::load(&probes::LoadOptions {
            ring_bytes: 64 * 1024,
            offsets,
            ports: vec![443],
            capture_packets,
            path_reasons,
            retransmit_err: crate::tracefs::retransmit_has_err(),
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
        crate::cri::check(crate::cri::socket::from_flag(None)),
    ));
    checks
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
