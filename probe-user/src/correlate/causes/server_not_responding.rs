//! `server_not_responding`: the server's TCP accepted the connection and
//! acknowledged the ClientHello, the address has one owner and the path to
//! it resolves, and still no ServerHello came: the server (or a proxy in
//! front of it) is wedged, not the network.

use crate::{
    correlate::{
        Cause,
        handshake_case::{HandshakeCase, OwnerEvidence, Stage},
    },
    model::event::Diagnosis,
    model::facts::{Resolution, RouteKind},
};

pub fn judge(c: &HandshakeCase, d: &mut Diagnosis) -> bool {
    if c.stage != Stage::HelloAcked || c.server_retransmits > 0 {
        return false;
    }
    let dst = c.flow.dst;
    let path = match c.route {
        // A VIP or address held by this very node: the server is local.
        Some(RouteKind::Local) => format!("{} is local to this node", dst.ip()),
        Some(RouteKind::Unicast) => {
            let Some(used) = c.egress_mac.as_deref() else {
                return false;
            };
            // One owner: nothing else claims the address, or netprobe's own
            // handshakes showed the MAC in use is the one serving (or the
            // only one holding) it.
            let owner = c.owner_evidence();
            let shown = matches!(
                owner,
                Some(OwnerEvidence::InUseServes | OwnerEvidence::InUseOnlyHolder)
            );
            let one_owner =
                shown || (!c.claimants.is_empty() && c.claimants.iter().all(|m| m == used));
            let resolved =
                c.resolution == Some(Resolution::Resolved) && c.entry_mac.as_deref() == Some(used);
            // A silent server and an MTU black hole look the same from
            // here unless full-size packets are shown to pass.
            let full_size = c.snap.path.as_ref().is_some_and(|p| p.full_size_passes());
            if !(one_owner && resolved && full_size) {
                return false;
            }
            let owner_note = match owner {
                Some(OwnerEvidence::InUseServes) => {
                    format!("; netprobe's own TLS handshake through {used} was answered")
                }
                Some(OwnerEvidence::InUseOnlyHolder) => {
                    format!("; of the MACs claiming it only {used} took netprobe's own connection")
                }
                _ => String::new(),
            };
            format!(
                "{} has one owner ({used}) and the entry for it is {}{owner_note}",
                c.next_hop,
                c.snap
                    .neighbour
                    .as_ref()
                    .map(|n| n.state.as_str())
                    .unwrap_or("resolved")
            )
        }
        _ => return false,
    };
    d.cause = Cause::ServerNotResponding.as_str().into();
    d.summary = format!(
        "{dst} accepted the TCP connection and acknowledged the ClientHello but sent no ServerHello in {:.1} s: the server is not answering TLS ({path}; the network and the neighbour table are not to blame)",
        c.waited_s()
    );
    let second = if c.owner_evidence().is_some() {
        "netprobe's own handshake through each claimant"
    } else {
        "none answered"
    };
    d.evidence.push(format!(
        "ruled out: a second owner of {} ({second}), a lost hello (no retransmit), a dead route or next hop, a path MTU black hole (full-size packets come back)",
        c.next_hop
    ));
    d.fix = Some(format!(
        "ss -tnp state all '( sport = :{} )'   # on the server {}: is the process accepting and reading? then its logs, CPU and TLS proxy",
        dst.port(),
        dst.ip()
    ));
    true
}

#[cfg(test)]
mod tests {
    use crate::correlate::tests::handshake_sample as sample;

    #[test]
    fn one_owner_acked_hello_no_answer_is_the_server() {
        let d = sample::silent_server().judge();
        assert_eq!(d.cause, "server_not_responding", "{d:#?}");
        assert_eq!(d.stage.as_deref(), Some("hello_acked"));
        assert!(d.fix.as_deref().is_some_and(|f| f.starts_with("ss ")));
    }

    #[test]
    fn a_retransmitted_hello_is_not_the_server() {
        // Control: the hello was never acknowledged; the path may be at fault.
        let d = sample::hello_not_acked().judge();
        assert_ne!(d.cause, "server_not_responding", "{d:#?}");
        assert_eq!(d.stage.as_deref(), Some("hello_sent"));
    }
}
