//! `packet_loss`: segments are retransmitted, but the peer keeps
//! acknowledging (or answered, and its answer is being retransmitted).
//! The path loses packets; nothing stale is to blame.

use crate::{
    correlate::{Cause, handshake_case::HandshakeCase, storm_case::StormCase},
    model::event::Diagnosis,
};

pub fn handshake(c: &HandshakeCase, d: &mut Diagnosis) -> bool {
    let retrans = c.client_retransmits + c.server_retransmits;
    if c.server_retransmits == 0 && !(c.client_retransmits > 0 && c.client_progressed) {
        return false;
    }
    d.cause = Cause::PacketLoss.as_str().into();
    d.summary = format!(
        "TLS handshake to {} is slow: segments are being lost ({retrans} retransmits) while the peer answers",
        c.flow.dst
    );
    true
}

pub fn storm(c: &StormCase, d: &mut Diagnosis) -> bool {
    if !c.series.progressed {
        return false;
    }
    d.cause = Cause::PacketLoss.as_str().into();
    d.summary = format!(
        "{} -> {} is losing packets: retransmits, but ACKs keep advancing",
        c.flow.src, c.flow.dst
    );
    true
}
