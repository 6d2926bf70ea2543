//! What netprobe can see on the running kernel, capability by capability.
//!
//! Each capability is one or more eBPF programs on one hook. It is judged
//! on the kernel's features, never its version: the tracepoint must exist,
//! its record must have the fields the program cannot do without (found by
//! name, [`crate::kernel::tracefs::tp_fields`]), and the verifier must accept the
//! program. One that fails is off, with one line saying why and what is
//! lost; the others run.

use probe_common::{TpFields, tp};

pub struct Capability {
    /// Short name, as `doctor` and `trace` print it.
    pub name: &'static str,
    /// The programs it needs, all of them (the retransmit capability's are
    /// alternatives: see [`crate::kernel::probes`]).
    pub programs: &'static [&'static str],
    /// "category/name", for the tracepoint ones.
    pub tracepoint: Option<&'static str>,
    /// Field slots the program cannot do without: one of these sets must
    /// be present whole (records of different kernels carry the same thing
    /// differently).
    pub required: &'static [&'static [usize]],
    /// What is not seen while it is off.
    pub lost: &'static str,
}

const RT: &[usize] = &[
    tp::RT_SKADDR,
    tp::RT_STATE,
    tp::RT_SPORT,
    tp::RT_DPORT,
    tp::RT_SADDR,
    tp::RT_DADDR,
    tp::RT_SADDR6,
    tp::RT_DADDR6,
];
const SA: &[usize] = &[
    tp::SA_SKADDR,
    tp::SA_SPORT,
    tp::SA_DPORT,
    tp::SA_SADDR,
    tp::SA_DADDR,
    tp::SA_SADDR6,
    tp::SA_DADDR6,
];
const RR: &[usize] = &[
    tp::RR_SKADDR,
    tp::RR_SPORT,
    tp::RR_DPORT,
    tp::RR_SADDR,
    tp::RR_DADDR,
    tp::RR_SADDR6,
    tp::RR_DADDR6,
];
const SR_SOCKADDR: &[usize] = &[tp::SR_SOCKADDR_S, tp::SR_SOCKADDR_D];
const SR_FIELDS: &[usize] = &[
    tp::SR_SPORT,
    tp::SR_DPORT,
    tp::SR_SADDR,
    tp::SR_DADDR,
    tp::SR_SADDR6,
    tp::SR_DADDR6,
];
const NU: &[usize] = &[
    tp::NU_FAMILY,
    tp::NU_DEV,
    tp::NU_LLADDR,
    tp::NU_LLADDR_LEN,
    tp::NU_FLAGS,
    tp::NU_NUD_STATE,
    tp::NU_DEAD,
    tp::NU_KEY4,
    tp::NU_KEY6,
    tp::NU_NEW_LLADDR,
    tp::NU_NEW_STATE,
    tp::NU_UPDATE_FLAGS,
    tp::NU_PID,
];

/// The retransmit capability's programs: the raw tracepoint where BTF
/// gave the socket's layout, else the formatted one.
pub const RETRANSMIT_RAW: &str = "tcp_retransmit";
pub const RETRANSMIT_TP: &str = "tcp_retransmit_tp";

pub const CAPABILITIES: &[Capability] = &[
    Capability {
        name: "retransmits",
        programs: &[RETRANSMIT_RAW, RETRANSMIT_TP],
        tracepoint: Some("tcp/tcp_retransmit_skb"),
        required: &[RT],
        lost: "TCP retransmits and retransmit storms are not seen",
    },
    Capability {
        name: "neighbours",
        programs: &["neigh_update"],
        tracepoint: Some("neigh/neigh_update"),
        required: &[NU],
        lost: "ARP/NDP entry changes are not seen (stale neighbours are judged from probes only)",
    },
    Capability {
        name: "socket owners",
        programs: &["sock_state"],
        tracepoint: Some("sock/inet_sock_set_state"),
        required: &[&[tp::SS_SKADDR, tp::SS_NEWSTATE, tp::SS_PROTOCOL]],
        lost: "retransmits carry no process (pid, comm)",
    },
    Capability {
        name: "resets received",
        programs: &["tcp_receive_reset"],
        tracepoint: Some("tcp/tcp_receive_reset"),
        required: &[RR],
        lost: "RSTs from peers are not seen: a refused connection reads as unanswered",
    },
    Capability {
        name: "resets sent",
        programs: &["tcp_send_reset"],
        tracepoint: Some("tcp/tcp_send_reset"),
        required: &[SR_SOCKADDR, SR_FIELDS],
        lost: "RSTs this node sends are not seen",
    },
    Capability {
        name: "synack retransmits",
        programs: &["synack_retrans"],
        tracepoint: Some("tcp/tcp_retransmit_synack"),
        required: &[SA],
        lost: "SYN-ACK retransmits of listeners on this node are not seen",
    },
    Capability {
        name: "kernel drops",
        programs: &["skb_kfree"],
        tracepoint: Some("skb/kfree_skb"),
        required: &[&[tp::KF_SKBADDR, tp::KF_PROTOCOL]],
        lost: "packets this node's kernel drops are not seen",
    },
    Capability {
        name: "icmp_send",
        programs: &["icmp_send"],
        tracepoint: Some("icmp/icmp_send"),
        required: &[&[tp::IC_SKBADDR, tp::IC_TYPE, tp::IC_CODE, tp::IC_ULEN]],
        lost: "ICMP errors this node sends are not seen",
    },
    Capability {
        name: "tc classifier",
        programs: &["tc_ingress", "tc_egress"],
        tracepoint: None,
        required: &[],
        lost: "ARP/NDP claims, the MAC a hello leaves with and forwarded traffic on the uplinks are not seen (handshakes still are, at the sockets), nor are owner handshakes pinned to a MAC",
    },
    Capability {
        name: "socket hooks",
        programs: &["sock_ingress", "sock_egress"],
        tracepoint: None,
        required: &[],
        lost: "TLS handshakes at the node's and its pods' sockets are not seen: only what crosses the uplinks",
    },
];

/// Whether a capability runs, and why (or why not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub name: &'static str,
    pub on: bool,
    /// On: what is degraded, if anything ("" otherwise). Off: why.
    pub why: String,
    pub lost: &'static str,
}

impl Status {
    pub fn on(cap: &Capability, note: String) -> Self {
        Self {
            name: cap.name,
            on: true,
            why: note,
            lost: cap.lost,
        }
    }

    pub fn off(cap: &Capability, why: String) -> Self {
        Self {
            name: cap.name,
            on: false,
            why,
            lost: cap.lost,
        }
    }

    /// One line: `icmp_send: off (no tracepoint icmp/icmp_send on 5.10.0-32-amd64): ICMP errors this node sends are not seen`.
    pub fn line(&self) -> String {
        match (self.on, self.why.is_empty()) {
            (true, true) => format!("{}: on", self.name),
            (true, false) => format!("{}: on ({})", self.name, self.why),
            (false, _) => format!("{}: off ({}): {}", self.name, self.why, self.lost),
        }
    }
}

/// Names of the fields of a tracepoint's slots, in slot order.
fn field_name(slot: usize) -> &'static str {
    tp::FIELDS
        .iter()
        .find(|(s, ..)| *s == slot)
        .map_or("?", |(_, _, name, _)| name)
}

/// Does the tracefs side allow `cap`? `exists`: the tracepoint's format
/// could be read. Ok(note on fields this kernel lacks) or Err(why not).
pub fn judge_fields(
    cap: &Capability,
    exists: bool,
    fields: &TpFields,
    release: &str,
) -> Result<String, String> {
    let Some(tp_name) = cap.tracepoint else {
        return Ok(String::new());
    };
    if !exists {
        return Err(format!("no tracepoint {tp_name} on {release}"));
    }
    if !cap.required.is_empty()
        && !cap
            .required
            .iter()
            .any(|set| set.iter().all(|s| fields.has(*s)))
    {
        // Name what the closest set lacks.
        let missing: Vec<&str> = cap
            .required
            .iter()
            .map(|set| set.iter().filter(|s| !fields.has(**s)).collect::<Vec<_>>())
            .min_by_key(Vec::len)
            .unwrap_or_default()
            .into_iter()
            .map(|s| field_name(*s))
            .collect();
        return Err(format!(
            "tracepoint {tp_name} on {release} has no field {}",
            missing.join(", ")
        ));
    }
    // Fields of this tracepoint the programs read when there, absent here.
    let mut absent: Vec<&str> = tp::FIELDS
        .iter()
        .filter(|(slot, tp, ..)| *tp == tp_name && !fields.has(*slot))
        .filter(|(slot, ..)| {
            // A field of an alternative set that is not the one in use.
            !cap.required
                .iter()
                .any(|set| set.contains(slot) && !set.iter().all(|s| fields.has(*s)))
        })
        // The sockaddr layout has the family inside.
        .filter(|(slot, ..)| {
            !(*slot == tp::SR_FAMILY && SR_SOCKADDR.iter().all(|s| fields.has(*s)))
        })
        .map(|(_, _, name, _)| *name)
        .collect();
    absent.dedup();
    let mut out = if absent.is_empty() {
        String::new()
    } else {
        format!(
            "{tp_name} has no {} here: {}",
            absent.join(", "),
            note(tp_name)
        )
    };
    // The older record is the socket's (the `tcp_event_sk_skb` class): the
    // kernel fires it only when a socket sends the RST, never for segments
    // to closed ports (seen on 5.10: a refused connect gave no event).
    if tp_name == "tcp/tcp_send_reset" && !SR_SOCKADDR.iter().all(|s| fields.has(*s)) {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str("socket-only record: RSTs for closed ports are not traced by this kernel");
    }
    Ok(out)
}

/// What a kernel without the optional fields of `tp_name` gets instead.
fn note(tp_name: &str) -> &'static str {
    match tp_name {
        "skb/kfree_skb" => "every drop of a watched flow is counted, reason unknown",
        "tcp/tcp_send_reset" => "reset reasons not named",
        "tcp/tcp_retransmit_skb" => {
            "family read from the socket or its addresses; attempts that sent nothing are not told apart"
        }
        _ => "family read from the socket or its addresses",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(name: &str) -> &'static Capability {
        CAPABILITIES.iter().find(|c| c.name == name).unwrap()
    }

    fn all_but(absent: &[usize]) -> TpFields {
        let mut f = TpFields::ABSENT;
        for (slot, ..) in tp::FIELDS {
            if !absent.contains(slot) {
                f.off[*slot] = 8;
            }
        }
        f
    }

    #[test]
    fn every_slot_is_named_once_and_in_range() {
        for (i, (slot, ..)) in tp::FIELDS.iter().enumerate() {
            assert!(*slot < tp::COUNT);
            assert!(
                tp::FIELDS[..i].iter().all(|(s, ..)| s != slot),
                "slot {slot} twice"
            );
        }
    }

    #[test]
    fn missing_tracepoint_turns_the_capability_off() {
        let s =
            judge_fields(cap("icmp_send"), false, &all_but(&[]), "5.10.0-32-amd64").unwrap_err();
        assert_eq!(s, "no tracepoint icmp/icmp_send on 5.10.0-32-amd64");
        let st = Status::off(cap("icmp_send"), s);
        assert_eq!(
            st.line(),
            "icmp_send: off (no tracepoint icmp/icmp_send on 5.10.0-32-amd64): ICMP errors this node sends are not seen"
        );
    }

    #[test]
    fn optional_fields_are_noted_not_fatal() {
        // 5.10: no family, no err on tcp_retransmit_skb.
        let f = all_but(&[tp::RT_FAMILY, tp::RT_ERR]);
        let note = judge_fields(cap("retransmits"), true, &f, "5.10").unwrap();
        assert!(note.contains("no family, err here"), "{note}");
        // No reason on kfree_skb.
        let note = judge_fields(
            cap("kernel drops"),
            true,
            &all_but(&[tp::KF_REASON]),
            "5.10",
        )
        .unwrap();
        assert!(note.contains("no reason"), "{note}");
        assert_eq!(
            judge_fields(cap("retransmits"), true, &all_but(&[]), "6.18").unwrap(),
            ""
        );
    }

    #[test]
    fn a_required_field_missing_names_it() {
        let f = all_but(&[tp::SS_PROTOCOL]);
        let why = judge_fields(cap("socket owners"), true, &f, "x").unwrap_err();
        assert_eq!(
            why,
            "tracepoint sock/inet_sock_set_state on x has no field protocol"
        );
    }

    #[test]
    fn send_reset_takes_either_layout() {
        // Old layout: no sockaddrs, no reason.
        let old = all_but(&[tp::SR_SOCKADDR_S, tp::SR_SOCKADDR_D, tp::SR_REASON]);
        let note = judge_fields(cap("resets sent"), true, &old, "6.1").unwrap();
        assert!(
            note.contains("no reason") && !note.contains("saddr"),
            "{note}"
        );
        // New layout: sockaddrs (the same names, 28 bytes), no ports.
        let new = all_but(&[
            tp::SR_SPORT,
            tp::SR_DPORT,
            tp::SR_FAMILY,
            tp::SR_SADDR,
            tp::SR_DADDR,
            tp::SR_SADDR6,
            tp::SR_DADDR6,
        ]);
        assert_eq!(
            judge_fields(cap("resets sent"), true, &new, "6.18").unwrap(),
            ""
        );
        let neither = all_but(&[tp::SR_SOCKADDR_S, tp::SR_SPORT]);
        let why = judge_fields(cap("resets sent"), true, &neither, "x").unwrap_err();
        assert!(why.contains("no field"), "{why}");
    }
}
