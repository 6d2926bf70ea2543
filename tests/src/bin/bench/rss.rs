//! Peak resident memory of a running process, from /proc/PID/status.

/// VmHWM (peak RSS since exec) of `pid`, in MiB; None once it is gone.
pub fn peak_mib(pid: u32) -> Option<f64> {
    netprobe_tests::procfs::status_kib(pid, "VmHWM").map(|k| k as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vmhwm() {
        assert!(peak_mib(std::process::id()).is_some_and(|m| m > 0.0));
    }
}
