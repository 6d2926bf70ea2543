//! The causes netprobe names, and the symptoms it names them for.

use std::fmt;

/// What a diagnosis blames. Serialised by name in the JSON contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    StaleNeighbour,
    StaleConntrackNat,
    EndpointUnreachable,
    ServerNotResponding,
    PacketLoss,
    KernelDrop,
    MtuBlackhole,
    ConntrackTableFull,
    ListenOverflow,
    Unknown,
}

impl Cause {
    pub const ALL: [Cause; 10] = [
        Cause::StaleNeighbour,
        Cause::StaleConntrackNat,
        Cause::EndpointUnreachable,
        Cause::ServerNotResponding,
        Cause::PacketLoss,
        Cause::KernelDrop,
        Cause::MtuBlackhole,
        Cause::ConntrackTableFull,
        Cause::ListenOverflow,
        Cause::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::StaleNeighbour => "stale_neighbour",
            Cause::StaleConntrackNat => "stale_conntrack_nat",
            Cause::EndpointUnreachable => "endpoint_unreachable",
            Cause::ServerNotResponding => "server_not_responding",
            Cause::PacketLoss => "packet_loss",
            Cause::KernelDrop => "kernel_drop",
            Cause::MtuBlackhole => "mtu_blackhole",
            Cause::ConntrackTableFull => "conntrack_table_full",
            Cause::ListenOverflow => "listen_overflow",
            Cause::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Cause> {
        Cause::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Final once named: the evidence for it was decisive. The others are
    /// looked at again while the symptom lasts and may be replaced.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            Cause::StaleNeighbour
                | Cause::StaleConntrackNat
                | Cause::ServerNotResponding
                | Cause::KernelDrop
                | Cause::MtuBlackhole
                | Cause::ConntrackTableFull
                | Cause::ListenOverflow
        )
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong, as seen from this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Symptom {
    /// A ClientHello got no ServerHello in time.
    HandshakeUnanswered,
    /// The ServerHello came, then nothing: the client never sent its next
    /// flight (the server's flight did not arrive whole).
    HandshakeStalled,
    /// A flow retransmits without forward progress.
    RetransmitStorm,
}

impl Symptom {
    pub fn as_str(self) -> &'static str {
        match self {
            Symptom::HandshakeUnanswered => "tls_handshake_unanswered",
            Symptom::HandshakeStalled => "tls_handshake_stalled",
            Symptom::RetransmitStorm => "retransmit_storm",
        }
    }

    pub fn parse(s: &str) -> Option<Symptom> {
        [
            Symptom::HandshakeUnanswered,
            Symptom::HandshakeStalled,
            Symptom::RetransmitStorm,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Cause::ALL {
            assert_eq!(Cause::parse(c.as_str()), Some(c));
        }
        assert_eq!(Cause::parse("nope"), None);
        assert_eq!(
            Symptom::parse("retransmit_storm"),
            Some(Symptom::RetransmitStorm)
        );
    }
}
