//! TCP sysctls of the current network namespace, and what they mean for a
//! flow whose peer has vanished.

pub use crate::model::facts::{ConntrackStats, TCP_RTO_MAX_MS, TCP_RTO_MIN_MS, hang_estimate};

/// net.ipv4.tcp_retries2 of this thread's namespace (/proc/sys/net is per
/// namespace, resolved at open time). Also covers IPv6 TCP.
pub fn tcp_retries2() -> Option<u32> {
    read_u32("/proc/sys/net/ipv4/tcp_retries2")
}

/// Conntrack entries in use and the table's size (the count is this
/// namespace's; the maximum is shared by all). `None` without nf_conntrack.
pub fn conntrack_usage() -> Option<crate::model::facts::ConntrackUsage> {
    Some(crate::model::facts::ConntrackUsage {
        count: read_u32("/proc/sys/net/netfilter/nf_conntrack_count")?,
        max: read_u32("/proc/sys/net/netfilter/nf_conntrack_max")?,
        since_start: None,
    })
}

/// This namespace's conntrack failure counters, summed over CPUs.
pub fn conntrack_stats() -> Option<ConntrackStats> {
    let text = std::fs::read_to_string("/proc/thread-self/net/stat/nf_conntrack").ok()?;
    parse_conntrack_stats(&text)
}

/// `/proc/net/stat/nf_conntrack`: a header line of names, then one line of
/// hexadecimal values per CPU.
pub fn parse_conntrack_stats(text: &str) -> Option<ConntrackStats> {
    let mut lines = text.lines();
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let col = |name: &str| names.iter().position(|n| *n == name);
    let (drop, early, failed) = (col("drop")?, col("early_drop")?, col("insert_failed")?);
    let mut sum = ConntrackStats::default();
    for line in lines {
        let v: Vec<u64> = line
            .split_whitespace()
            .map(|f| u64::from_str_radix(f, 16))
            .collect::<Result<_, _>>()
            .ok()?;
        if v.len() != names.len() {
            return None;
        }
        sum.drop += v[drop];
        sum.early_drop += v[early];
        sum.insert_failed += v[failed];
    }
    Some(sum)
}

/// TcpExt ListenOverflows of this thread's namespace: connections a full
/// accept queue turned away (SYNs dropped without a drop reason, or the
/// final ACK).
pub fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/netstat").ok()?;
    netstat_value(&text, "TcpExt:", "ListenOverflows")
}

/// Connections waiting in the accept queue of the TCP listener on `port`
/// in this namespace (`/proc/net/tcp{,6}` rx_queue of a LISTEN socket).
pub fn accept_queue(port: u16) -> Option<u32> {
    ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|t| listener_queue(&t, port))
}

/// rx_queue of the LISTEN (0A) socket on `port` in a /proc/net/tcp table.
pub fn listener_queue(table: &str, port: u16) -> Option<u32> {
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
        if local_port != port || *f.get(3)? != "0A" {
            return None;
        }
        u32::from_str_radix(f.get(4)?.split(':').nth(1)?, 16).ok()
    })
}

/// A value from /proc/net/netstat's header/value line pairs.
pub fn netstat_value(text: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if let Some(i) = names.split_whitespace().position(|n| n == name) {
            return values.split_whitespace().nth(i)?.parse().ok();
        }
    }
    None
}

fn read_u32(path: &str) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_listeners_queue_is_read() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100000A:192B 00000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 1\n   1: 0100000A:192B 0201000A:C000 01 00000000:00000000 00:00000000 00000000     0        0 2\n";
        assert_eq!(listener_queue(t, 6443), Some(2));
        assert_eq!(listener_queue(t, 443), None);
    }

    #[test]
    fn conntrack_statistics_are_summed_over_cpus() {
        let t = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
                 00000020  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 0000000a 00000002 00000000  00000000 00000000 00000000 00000000\n\
                 00000020  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000006 00000000 00000000  00000000 00000000 00000000 00000000\n";
        let s = parse_conntrack_stats(t).unwrap();
        assert_eq!((s.drop, s.early_drop, s.insert_failed), (16, 2, 1));
        assert_eq!(parse_conntrack_stats("entries drop\n00000001\n"), None);
        assert_eq!(
            parse_conntrack_stats("entries found\n00000001 00000002\n"),
            None
        );
    }

    #[test]
    fn netstat_values_are_found_by_name() {
        let t = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 7 9\nIpExt: InNoRoutes\nIpExt: 3\n";
        assert_eq!(netstat_value(t, "TcpExt:", "ListenOverflows"), Some(7));
        assert_eq!(netstat_value(t, "IpExt:", "InNoRoutes"), Some(3));
        assert_eq!(netstat_value(t, "TcpExt:", "Nope"), None);
    }

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
