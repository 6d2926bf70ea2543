//! What /proc says about a process under test: memory, and the eBPF links
//! it holds (leak checks).

/// A `VmRSS`/`VmHWM`-style field of /proc/PID/status, in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_kib(&text, field)
}

fn parse_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Open descriptors of `pid` that are BPF links (tcx, perf): one per
/// attached hook.
pub fn bpf_link_fds(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.as_os_str() == "anon_inode:bpf_link")
        .count()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_fields() {
        let s = "Name:\tx\nVmPeak:\t  100 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(super::parse_kib(s, "VmHWM"), Some(2048));
        assert_eq!(super::parse_kib(s, "VmRSS"), Some(1000));
        assert_eq!(super::parse_kib(s, "Vm"), None);
    }

    #[test]
    fn own_status() {
        let pid = std::process::id();
        assert!(super::status_kib(pid, "VmRSS").unwrap() > 0);
        assert_eq!(super::status_kib(pid, "NoSuchField"), None);
        assert_eq!(super::bpf_link_fds(pid), 0);
    }
}
