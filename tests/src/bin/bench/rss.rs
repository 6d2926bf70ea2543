//! Peak resident memory of a running process, from /proc/PID/status.

/// VmHWM (peak RSS since exec) of `pid`, in MiB; None once it is gone.
pub fn peak_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_kib(&status, "VmHWM:").map(|k| k as f64 / 1024.0)
}

fn parse_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vmhwm() {
        let s = "Name:\tx\nVmPeak:\t  100 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_kib(s, "VmHWM:"), Some(2048));
        assert!(peak_mib(std::process::id()).is_some_and(|m| m > 0.0));
    }
}
