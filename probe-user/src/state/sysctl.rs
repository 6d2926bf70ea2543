//! TCP sysctls of the current network namespace, and what they mean for a
//! flow whose peer has vanished.

use std::time::Duration;

/// TCP_RTO_MIN: the base the kernel models the retransmission timeout on
/// for established connections.
pub const TCP_RTO_MIN_MS: u64 = 200;
/// TCP_RTO_MAX: the cap on one backed-off RTO.
pub const TCP_RTO_MAX_MS: u64 = 120_000;

/// net.ipv4.tcp_retries2 of this thread's namespace (/proc/sys/net is per
/// namespace, resolved at open time). Also covers IPv6 TCP.
pub fn tcp_retries2() -> Option<u32> {
    read_u32("/proc/sys/net/ipv4/tcp_retries2")
}

fn read_u32(path: &str) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// How long after its first unanswered retransmission a connection is
/// killed with ETIMEDOUT: the kernel's tcp_model_timeout(), as used by
/// retransmits_timed_out() with `boundary = retries2` and `rto_base =
/// rto_ms`. The RTO doubles from `rto_base` until it would pass
/// TCP_RTO_MAX (that is ilog2(TCP_RTO_MAX / rto_base) doublings), then
/// stays at TCP_RTO_MAX for the remaining retries. The kernel uses
/// TCP_RTO_MIN (200 ms) here for established connections, whatever their
/// measured RTO; pass [`TCP_RTO_MIN_MS`]. The default retries2 of 15 gives
/// 924.6 s, the "about 15 minutes" of a client stuck on a dead peer.
pub fn hang_estimate(retries2: u32, rto_ms: u64) -> Duration {
    let rto_base = rto_ms.clamp(1, TCP_RTO_MAX_MS);
    let linear_backoff_thresh = (TCP_RTO_MAX_MS / rto_base).ilog2();
    let boundary = retries2;
    let ms = if boundary <= linear_backoff_thresh {
        ((2u64 << boundary) - 1) * rto_base
    } else {
        ((2u64 << linear_backoff_thresh) - 1) * rto_base
            + u64::from(boundary - linear_backoff_thresh) * TCP_RTO_MAX_MS
    };
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
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
