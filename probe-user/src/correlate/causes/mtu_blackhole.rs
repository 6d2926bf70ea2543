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
    },
    event::Diagnosis,
};

pub fn judge(c: &HandshakeCase, d: &mut Diagnosis) -> bool {
    if c.stage != Stage::HelloAcked {
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
        "TLS handshake to {} stalls on the path MTU: the ClientHello got through, but packets above {mtu} bytes toward {} vanish (the route says {}){}; the server's full-size ServerHello/Certificate segments never arrive",
        c.flow.dst,
        p.dst,
        p.route_mtu,
        if p.frag_needed.is_none() {
            ", and no \"fragmentation needed\" comes back"
        } else {
            ""
        }
    );
    d.evidence.push(format!(
        "fixes: the interface/overlay MTU to {mtu} on the way (ip link set dev IFACE mtu {mtu}), an MSS clamp on this node (below), or net.ipv4.tcp_mtu_probing=1 on the server"
    ));
    d.fix = Some(format!(
        "iptables -t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss {mss}   # or lower the MTU to {mtu}"
    ));
    true
}

#[cfg(test)]
mod tests {
    use crate::{
        correlate::tests::handshake_sample as sample,
        facts::{PathCheck, SizeResult},
    };

    fn path(answered_up_to: u16) -> PathCheck {
        PathCheck {
            dst: "10.0.0.100".parse().unwrap(),
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
}
