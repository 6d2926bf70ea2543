//! Kernel constants to the names operators know (`ip neigh`, `ss`).

/// TCP states as `ss` prints them, from include/net/tcp_states.h.
pub fn tcp_state(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

const NUD: [(u8, &str); 8] = [
    (0x01, "INCOMPLETE"),
    (0x02, "REACHABLE"),
    (0x04, "STALE"),
    (0x08, "DELAY"),
    (0x10, "PROBE"),
    (0x20, "FAILED"),
    (0x40, "NOARP"),
    (0x80, "PERMANENT"),
];

/// NUD_* state bits as `ip neigh` names them (`NONE` for 0).
pub fn nud_state(state: u8) -> String {
    if state == 0 {
        return "NONE".to_string();
    }
    NUD.iter()
        .filter(|(bit, _)| state & bit != 0)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join("|")
}

/// Parses what [`nud_state`] wrote (for replayed streams and tests).
pub fn nud_bits(name: &str) -> u8 {
    name.split('|')
        .filter_map(|part| NUD.iter().find(|(_, n)| *n == part).map(|(b, _)| *b))
        .fold(0, |acc, b| acc | b)
}

// Linux >= 5.16 numbers these BIT(0)..BIT(7); older kernels kept ISROUTER
// and ADMIN in the top bits, which nothing else uses, so both are read.
const UPDATE_FLAGS: [(u32, &str); 10] = [
    (0x0000_0001, "OVERRIDE"),
    (0x0000_0002, "WEAK_OVERRIDE"),
    (0x0000_0004, "OVERRIDE_ISROUTER"),
    (0x0000_0008, "USE"),
    (0x0000_0010, "MANAGED"),
    (0x0000_0020, "EXT_LEARNED"),
    (0x0000_0040, "ISROUTER"),
    (0x0000_0080, "ADMIN"),
    (0x4000_0000, "ISROUTER"),
    (0x8000_0000, "ADMIN"),
];

/// NEIGH_UPDATE_F_* bits (include/net/neighbour.h).
pub fn update_flags(flags: u32) -> Vec<String> {
    UPDATE_FLAGS
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| name.to_string())
        .collect()
}

/// Names of the errnos a failed retransmit reports (Linux values, the same
/// on every architecture netprobe builds for); others as `errno N`.
pub fn errno(e: u8) -> std::borrow::Cow<'static, str> {
    let name = match e {
        1 => "EPERM",
        11 => "EAGAIN",
        12 => "ENOMEM",
        22 => "EINVAL",
        90 => "EMSGSIZE",
        101 => "ENETUNREACH",
        105 => "ENOBUFS",
        110 => "ETIMEDOUT",
        113 => "EHOSTUNREACH",
        _ => return format!("errno {e}").into(),
    };
    name.into()
}

/// Names of the kernel's record kinds, by `probe_common::kind` value.
pub const KIND_NAMES: [&str; probe_common::kind::COUNT as usize] = [
    "none",
    "retransmit",
    "neighbour",
    "tls",
    "arp",
    "reset",
    "packet",
    "drop",
    "icmp_sent",
    "reset_sent",
    "synack_retransmit",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(tcp_state(1), "ESTABLISHED");
        assert_eq!(tcp_state(2), "SYN_SENT");
        assert_eq!(tcp_state(200), "UNKNOWN");
        assert_eq!(nud_state(0), "NONE");
        assert_eq!(nud_state(0x04), "STALE");
        assert_eq!(nud_state(0x22), "REACHABLE|FAILED");
        assert_eq!(nud_bits("REACHABLE|FAILED"), 0x22);
        assert_eq!(
            update_flags(0x0000_0085),
            vec!["OVERRIDE", "OVERRIDE_ISROUTER", "ADMIN"]
        );
        assert_eq!(update_flags(0x8000_0001), vec!["OVERRIDE", "ADMIN"]);
    }

    #[test]
    fn errno_names() {
        assert_eq!(super::errno(113), "EHOSTUNREACH");
        assert_eq!(super::errno(105), "ENOBUFS");
        assert_eq!(super::errno(200), "errno 200");
        assert_eq!(super::errno(libc::EHOSTUNREACH as u8), "EHOSTUNREACH");
    }
}
