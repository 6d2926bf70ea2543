//! Effective capabilities, read from /proc/self/status, so a missing one is
//! named before the kernel answers a bare EPERM.

pub const CAP_DAC_OVERRIDE: u32 = 1;
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_NET_RAW: u32 = 13;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// What netprobe needs, and why.
pub const REQUIRED: &[(u32, &str, &str)] = &[
    (CAP_BPF, "CAP_BPF", "load eBPF programs and create maps"),
    (
        CAP_PERFMON,
        "CAP_PERFMON",
        "attach tracepoints and read kernel memory (socket namespace)",
    ),
    (
        CAP_NET_ADMIN,
        "CAP_NET_ADMIN",
        "attach TC programs and query neighbours/conntrack",
    ),
];

/// What `netprobe trace` needs in a container running as uid 0
/// (deploy/daemonset.yaml grants exactly these; a test compares): the
/// required ones and CAP_NET_RAW for the active ARP/NDP probe (see
/// [`optional_warning`]). Not CAP_DAC_READ_SEARCH: uid 0 owns tracefs (see
/// [`missing_now`]). Not CAP_SYS_ADMIN: it is only for `--netns` (setns)
/// and for mounting tracefs when the host has not, and the DaemonSet uses
/// neither (host network, tracefs mounted from the host).
pub fn node_agent() -> Vec<&'static str> {
    REQUIRED
        .iter()
        .map(|(_, name, _)| *name)
        .chain(["CAP_NET_RAW"])
        .collect()
}

/// Parses the `CapEff:` hex mask out of a /proc/PID/status text.
pub fn effective_from_status(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

pub fn effective() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| effective_from_status(&s))
        .unwrap_or(0)
}

/// Names of required capabilities missing from `mask`, with the reason.
/// CAP_SYS_ADMIN covers CAP_BPF and CAP_PERFMON (pre-5.8 semantics still honoured).
pub fn missing(mask: u64) -> Vec<(&'static str, &'static str)> {
    let has = |cap: u32| mask & (1u64 << cap) != 0;
    REQUIRED
        .iter()
        .filter(|(cap, _, _)| !(has(*cap) || (*cap != CAP_NET_ADMIN && has(CAP_SYS_ADMIN))))
        .map(|(_, name, why)| (*name, *why))
        .collect()
}

/// tracefs is mode 0700 root: anyone else needs CAP_DAC_READ_SEARCH (or
/// CAP_DAC_OVERRIDE) to find the tracepoints. Judged by trying, since only
/// the kernel knows who may search there.
fn tracefs_unreadable() -> bool {
    matches!(
        std::fs::read_dir(format!("{}/events", crate::kernel::tracefs::ROOT)),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied
    )
}

/// Every missing capability with what it is for: the required ones, and
/// CAP_DAC_READ_SEARCH when tracefs cannot be read without it.
pub fn missing_now() -> Vec<(&'static str, &'static str)> {
    let mask = effective();
    let mut out = missing(mask);
    let dac = mask & ((1 << CAP_DAC_READ_SEARCH) | (1 << CAP_DAC_OVERRIDE)) != 0;
    if !dac && tracefs_unreadable() {
        out.push((
            "CAP_DAC_READ_SEARCH",
            "find the tracepoints in tracefs (mode 0700 root)",
        ));
    }
    out
}

/// One line for stderr, or None when everything is there.
pub fn check() -> Option<String> {
    let missing = missing_now();
    if missing.is_empty() {
        return None;
    }
    let names: Vec<_> = missing.iter().map(|(n, _)| *n).collect();
    let why: Vec<_> = missing.iter().map(|(_, w)| *w).collect();
    Some(format!(
        "missing capabilities {} (needed to {}; run as root or grant them)",
        names.join(", "),
        why.join("; ")
    ))
}

/// Capabilities only one feature needs: a warning line, or None.
pub fn optional_warning() -> Option<String> {
    let has_raw = effective() & (1 << CAP_NET_RAW) != 0;
    (!has_raw).then(|| {
        "missing capabilities CAP_NET_RAW (the active ARP/NDP probe of handshake investigations needs a packet socket; diagnoses will rely on what is seen on the wire)".to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_capeff_and_names_missing() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        let mask = effective_from_status(status).unwrap();
        assert!(missing(mask).is_empty());
        assert_eq!(missing(0).len(), 3);
        let only_net_admin = 1u64 << CAP_NET_ADMIN;
        let names: Vec<_> = missing(only_net_admin).iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["CAP_BPF", "CAP_PERFMON"]);
        let sys_admin_and_net = (1u64 << CAP_SYS_ADMIN) | only_net_admin;
        assert!(missing(sys_admin_and_net).is_empty());
    }
}
