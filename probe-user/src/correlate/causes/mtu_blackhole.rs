//! `mtu_blackhole`: the ClientHello (small) was acknowledged, yet nothing of
//! the server's flight (full-size segments) arrives, and DF echo requests
//! show why: small ones come back, full-size ones vanish. Without a
//! "fragmentation needed" the server never learns to send smaller. The
//! commonest "TLS handshake timeout" on overlay networks (VXLAN 1450 under
//! a 1500 pod MTU).

use crate::{
    correlate::{
        Cause,
        handshake_case::{HandshakeCase, Stage},
        storm_case::StormCase,
    },
    model::event::Diagnosis,
    model::facts::PathCheck,
};

pub fn judge(c: &HandshakeCase, d: &mut Diagnosis) -> bool {
    if !matches!(c.stage, Stage::HelloAcked | Stage::ServerHello) {
        return false;
    }
    let Some(p) = c.snap.path.as_ref().filter(|p| p.black_hole()) else {
        return false;
    };
    let Some(mtu) = p.largest_answered() else {
        return false;
    };
    let mss = mtu.saturating_sub(40);
    d.cause = Cause::MtuBlackhole.as_str().into();
    d.path_mtu = Some(mtu);
    d.summary = format!(
        "TLS handshake to {} stalls on the path MTU: the ClientHello got through, but {}; the server's full-size ServerHello/Certificate segments never arrive",
        c.flow.dst,
        vanishing(p, mtu)
    );
    d.evidence.push(format!(
        "fixes: the interface/overlay MTU to {mtu} on the way (ip link set dev IFACE mtu {mtu}), an MSS clamp on this node (below), or net.ipv4.tcp_mtu_probing=1 on the server"
    ));
    d.fix = Some(format!(
        "iptables -t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss {mss}   # or lower the MTU to {mtu}"
    ));
    true
}

/// The same black hole seen from the sending side (the server's node): this
/// node's own socket retransmits without progress (its full-size segments
/// vanish; small ones may be acknowledged selectively), and the path check
/// toward the peer finds the staircase. A SYN or SYN-ACK is small, so a
/// storm in a handshake state is not this.
pub fn storm(c: &StormCase, d: &mut Diagnosis) -> bool {
    let s = c.series;
    if s.progressed || s.state.starts_with("SYN_") {
        return false;
    }
    let Some(p) = c
        .snap
        .path
        .as_ref()
        .filter(|p| p.black_hole() && p.dst == c.flow.dst.ip())
    else {
        return false;
    };
    let Some(mtu) = p.largest_answered() else {
        return false;
    };
    d.cause = Cause::MtuBlackhole.as_str().into();
    d.path_mtu = Some(mtu);
    d.summary = format!(
        "{} keeps retransmitting to {}: {}, so its full-size segments never arrive",
        c.flow.src,
        c.flow.dst,
        vanishing(p, mtu)
    );
    d.evidence.push(format!(
        "DF echo requests toward {}: {}",
        p.dst,
        p.sizes
            .iter()
            .filter(|s| s.sent)
            .map(|s| format!("{} {}", s.size, if s.answered { "back" } else { "lost" }))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    d.fix = Some(format!(
        "sysctl -w net.ipv4.tcp_mtu_probing=1   # on this node; or lower the route's MTU: ip route change {} ... mtu {mtu}, or clamp the MSS on the way",
        p.dst
    ));
    true
}

/// What the path check showed, as a clause.
fn vanishing(p: &PathCheck, mtu: u16) -> String {
    format!(
        "packets above {mtu} bytes toward {} vanish (the route says {}){}",
        p.dst,
        p.route_mtu,
        if p.frag_needed.is_none() {
            " and no \"fragmentation needed\" comes back"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use crate::{
        correlate::tests::{handshake_sample as sample, storm_sample},
        model::facts::{PathCheck, SizeResult},
    };

    fn path(answered_up_to: u16) -> PathCheck {
        path_to("10.0.0.100".parse().unwrap(), answered_up_to)
    }

    fn path_to(dst: IpAddr, answered_up_to: u16) -> PathCheck {
        PathCheck {
            dst,
            route_mtu: 1500,
            sizes: [1500, 1480, 1450, 1400, 1280, 576]
                .into_iter()
                .map(|size| SizeResult {
                    size,
                    sent: true,
                    answered: size <= answered_up_to,
                })
                .collect(),
            frag_needed: None,
        }
    }

    #[test]
    fn small_packets_pass_and_full_size_vanish_is_a_black_hole() {
        let mut s = sample::silent_server();
        s.snap.path = Some(path(1450));
        let d = s.judge();
        assert_eq!(d.cause, "mtu_blackhole", "{d:#?}");
        assert_eq!(d.path_mtu, Some(1450));
        assert!(
            d.fix
                .as_deref()
                .is_some_and(|f| f.contains("--set-mss 1410"))
        );
    }

    #[test]
    fn full_size_passing_is_the_server() {
        let mut s = sample::silent_server();
        s.snap.path = Some(path(1500));
        assert_eq!(s.judge().cause, "server_not_responding");
    }

    #[test]
    fn no_echo_at_all_proves_nothing() {
        let mut s = sample::silent_server();
        s.snap.path = Some(path(0));
        let d = s.judge();
        assert_eq!(d.cause, "unknown", "{d:#?}");
        s.snap.path = None;
        assert_eq!(s.judge().cause, "unknown");
    }

    /// This node's own socket (no NAT) retransmitting toward its peer, with
    /// the path check toward that peer answered up to `answered_up_to`.
    fn own_socket_storm(answered_up_to: u16) -> storm_sample::Sample {
        let mut s = storm_sample::nat_storm(true, None);
        s.snap.conntrack = None;
        s.snap.translation = None;
        s.snap.path = Some(path_to(s.flow.dst.ip(), answered_up_to));
        s
    }

    #[test]
    fn the_senders_view_names_the_black_hole_from_its_own_storm() {
        let d = own_socket_storm(1400).judge();
        assert_eq!(d.cause, "mtu_blackhole", "{d:#?}");
        assert_eq!(d.path_mtu, Some(1400));
        assert!(
            d.evidence
                .iter()
                .any(|e| e.contains("1450 lost, 1400 back")),
            "{d:#?}"
        );
        assert!(
            d.fix
                .as_deref()
                .is_some_and(|f| f.contains("tcp_mtu_probing"))
        );
    }

    #[test]
    fn the_senders_view_needs_the_staircase_toward_its_peer_and_no_progress() {
        assert_ne!(own_socket_storm(1500).judge().cause, "mtu_blackhole");
        assert_ne!(own_socket_storm(0).judge().cause, "mtu_blackhole");
        let mut elsewhere = own_socket_storm(1400);
        elsewhere.snap.path = Some(path(1400));
        assert_ne!(elsewhere.judge().cause, "mtu_blackhole");
        let mut syn = own_socket_storm(1400);
        syn.series.state = "SYN_SENT".into();
        assert_ne!(syn.judge().cause, "mtu_blackhole");
        let mut moving = own_socket_storm(1400);
        moving.series.progressed = true;
        assert_ne!(moving.judge().cause, "mtu_blackhole");
    }
}
