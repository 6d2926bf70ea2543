//! "Nothing left behind" checks: BPF programs and links still loaded, TC
//! filters and clsact qdiscs still on an interface.

use std::collections::HashSet;
use std::process::Command;

use serde_json::Value;

use crate::cmd::{self, DEFAULT_TIMEOUT};
use crate::netns::{Netns, parse_json};

fn json_of(c: &mut Command) -> Value {
    let what = cmd::describe(c);
    parse_json(&cmd::run(c, DEFAULT_TIMEOUT).stdout, &what)
}

/// netprobe's program names (probe-ebpf's entry points) as of writing; pass
/// them to the functions below, or a subset.
pub const NETPROBE_PROGRAMS: &[&str] = &[
    "tcp_retransmit",
    "tcp_receive_reset",
    "neigh_update",
    "tc_ingress",
    "tc_egress",
];

/// Kernel object names are cut to 15 chars (BPF_OBJ_NAME_LEN - 1).
const OBJ_NAME_MAX: usize = 15;

fn name_matches(name: &str, prefixes: &[&str]) -> bool {
    prefixes
        .iter()
        .any(|p| name.starts_with(p) || (name.len() == OBJ_NAME_MAX && p.starts_with(name)))
}

/// Loaded BPF programs (`bpftool -j prog show` entries) whose name starts
/// with one of `prefixes` (e.g. netprobe's "tcp_retransmit", "neigh_update",
/// "tc_ingress", "tc_egress"). BPF objects are global: this sees all
/// namespaces.
pub fn bpf_programs(prefixes: &[&str]) -> Vec<Value> {
    let all = json_of(Command::new("bpftool").args(["-j", "prog", "show"]));
    all.as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| name_matches(n, prefixes))
        })
        .cloned()
        .collect()
}

/// BPF links (`bpftool -j link show`: tracepoint/perf_event, tcx, netlink...)
/// whose program matches `prefixes`. Links carry no name, so they are
/// joined to programs by prog_id.
pub fn bpf_links(prefixes: &[&str]) -> Vec<Value> {
    let ids: HashSet<u64> = bpf_programs(prefixes)
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect();
    let links = json_of(Command::new("bpftool").args(["-j", "link", "show"]));
    links
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["prog_id"].as_u64().is_some_and(|id| ids.contains(&id)))
        .cloned()
        .collect()
}

/// TC state left on `dev` (in `ns`, or the root namespace if None): clsact
/// or ingress qdiscs and any ingress/egress filters, one string each.
pub fn tc_leftovers(ns: Option<&Netns>, dev: &str) -> Vec<String> {
    let tc = |args: &[&str]| {
        let mut c = Command::new("tc");
        if let Some(ns) = ns {
            c.args(["-n", ns.name()]);
        }
        c.arg("-j").args(args);
        json_of(&mut c)
    };
    let mut left = Vec::new();
    for q in tc(&["qdisc", "show", "dev", dev])
        .as_array()
        .into_iter()
        .flatten()
    {
        if matches!(q["kind"].as_str(), Some("clsact" | "ingress")) {
            left.push(format!(
                "qdisc {} on {dev}",
                q["kind"].as_str().unwrap_or("?")
            ));
        }
    }
    // Query filters regardless of qdiscs (an empty list if there is no
    // hook), so a half-removed state is reported too.
    for hook in ["ingress", "egress"] {
        for f in tc(&["filter", "show", "dev", dev, hook])
            .as_array()
            .into_iter()
            .flatten()
        {
            // tc lists a filter once per chain head and once with its
            // options; duplicates in a failure message are harmless.
            left.push(format!("{hook} filter on {dev}: {f}"));
        }
    }
    left
}

/// Panics listing whatever is left: matching programs and links anywhere,
/// TC state on each (namespace, device).
pub fn assert_nothing_left(prefixes: &[&str], devs: &[(Option<&Netns>, &str)]) {
    let mut problems = Vec::new();
    for p in bpf_programs(prefixes) {
        problems.push(format!("bpf prog still loaded: {p}"));
    }
    for l in bpf_links(prefixes) {
        problems.push(format!("bpf link still present: {l}"));
    }
    for (ns, dev) in devs {
        problems.extend(tc_leftovers(*ns, dev));
    }
    assert!(problems.is_empty(), "left behind:\n{}", problems.join("\n"));
}

/// BPF program and link ids some process holds open, read from
/// `/proc/PID/fdinfo` (a link's fd holds its program too). bpftool here
/// cannot say which process owns an object, and netprobe may be running
/// for someone else at the same time: this tells a run's own objects, and
/// leaked ones, apart from theirs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeldBpf {
    pub progs: HashSet<u64>,
    pub links: HashSet<u64>,
}

/// What `pid` holds, or every live process when None. Processes that exit
/// while being read are skipped.
pub fn bpf_held(pid: Option<u32>) -> HeldBpf {
    let pids: Vec<String> = match pid {
        Some(p) => vec![p.to_string()],
        None => std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let mut held = HeldBpf::default();
    for p in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{p}/fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(info) = std::fs::read_to_string(fd.path()) else {
                continue;
            };
            held.absorb_fdinfo(&info);
        }
    }
    held
}

impl HeldBpf {
    fn absorb_fdinfo(&mut self, info: &str) {
        for line in info.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let Ok(id) = value.trim().parse::<u64>() else {
                continue;
            };
            match key {
                "prog_id" => {
                    self.progs.insert(id);
                }
                "link_id" => {
                    self.links.insert(id);
                }
                _ => {}
            }
        }
    }
}

/// Programs matching `prefixes`, and links to them, that no live process
/// holds: left attached by a process that is gone (a netlink TC filter, a
/// pinned object), one string each. Unlike [`assert_nothing_left`] this
/// ignores another netprobe that is running right now.
pub fn bpf_orphans(prefixes: &[&str]) -> Vec<String> {
    // List first, then look for holders: an object created after the
    // listing cannot show up as an orphan.
    let progs = bpf_programs(prefixes);
    let links = bpf_links(prefixes);
    let held = bpf_held(None);
    let mut left = Vec::new();
    for p in progs {
        if !p["id"].as_u64().is_some_and(|id| held.progs.contains(&id)) {
            left.push(format!("bpf prog held by no process: {p}"));
        }
    }
    for l in links {
        if !l["id"].as_u64().is_some_and(|id| held.links.contains(&id)) {
            left.push(format!("bpf link held by no process: {l}"));
        }
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_kernel_names_match() {
        let p = ["tcp_retransmit_skb", "tc_egress"];
        assert!(name_matches("tcp_retransmit_", &p)); // 15-char cut
        assert!(name_matches("tc_egress", &p));
        assert!(name_matches("tc_egress_v2", &p));
        assert!(!name_matches("tcp_retrans", &p)); // short, not a cut
        assert!(!name_matches("neigh_update", &p));
    }

    #[test]
    fn fdinfo_ids() {
        let mut h = HeldBpf::default();
        h.absorb_fdinfo("pos:\t0\nflags:\t02000002\nprog_type:\t5\nprog_id:\t501\n");
        h.absorb_fdinfo("link_type:\tperf\nlink_id:\t361\nprog_id:\t502\n");
        h.absorb_fdinfo("map_type:\t27\nmap_id:\t396\n");
        assert_eq!(h.progs, HashSet::from([501, 502]));
        assert_eq!(h.links, HashSet::from([361]));
    }
}
