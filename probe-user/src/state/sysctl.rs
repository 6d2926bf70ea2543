//! TCP sysctls of the current network namespace, and what they mean for a
//! flow whose peer has vanished.

pub use crate::facts::{TCP_RTO_MAX_MS, TCP_RTO_MIN_MS, hang_estimate};

/// net.ipv4.tcp_retries2 of this thread's namespace (/proc/sys/net is per
/// namespace, resolved at open time). Also covers IPv6 TCP.
pub fn tcp_retries2() -> Option<u32> {
    read_u32("/proc/sys/net/ipv4/tcp_retries2")
}

/// Conntrack entries in use and the table's size (the count is this
/// namespace's; the maximum is shared by all). `None` without nf_conntrack.
pub fn conntrack_usage() -> Option<crate::facts::ConntrackUsage> {
    Some(crate::facts::ConntrackUsage {
        count: read_u32("/proc/sys/net/netfilter/nf_conntrack_count")?,
        max: read_u32("/proc/sys/net/netfilter/nf_conntrack_max")?,
    })
}

fn read_u32(path: &str) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn default_retries2_hangs_for_924_6_seconds() {
        // 9 doublings from 200 ms (1023 * 200 ms = 204.6 s), then 6 more
        // retries at 120 s.
        assert_eq!(
            hang_estimate(15, TCP_RTO_MIN_MS),
            Duration::from_millis(924_600)
        );
    }

    #[test]
    fn short_retry_counts_stay_in_the_doubling_phase() {
        assert_eq!(hang_estimate(0, 200), Duration::from_millis(200));
        assert_eq!(hang_estimate(3, 200), Duration::from_millis(3_000));
        assert_eq!(hang_estimate(9, 200), Duration::from_millis(204_600));
        assert_eq!(hang_estimate(10, 200), Duration::from_millis(324_600));
        // A SYN-style base of 1 s: ilog2(120) = 6 doublings.
        assert_eq!(hang_estimate(6, 1_000), Duration::from_millis(127_000));
        assert_eq!(hang_estimate(8, 1_000), Duration::from_millis(367_000));
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        assert_eq!(hang_estimate(0, 0), Duration::from_millis(1));
        assert_eq!(
            hang_estimate(2, 500_000),
            Duration::from_millis(3 * 120_000)
        );
        let _ = hang_estimate(u32::MAX, 200);
    }

    #[test]
    fn reads_this_namespace() {
        // Present on every Linux with IPv4; 15 unless someone tuned it.
        if std::path::Path::new("/proc/sys/net/ipv4/tcp_retries2").exists() {
            assert!(tcp_retries2().is_some());
        }
    }
}
