//! `listen_overflow`: the server on this node is not accepting connections
//! fast enough. Its accept queue holds connections the process has not
//! accepted, and the namespace's ListenOverflows counter rose since netprobe
//! started: new SYNs are dropped (without an skb drop reason on this
//! kernel) and queued connections wait. Only for a destination local to
//! this node, where its listener can be read.

use crate::{
    correlate::Cause,
    model::event::{Diagnosis, FlowRef, Snapshot},
};

pub fn judge(snap: &Snapshot, flow: FlowRef, d: &mut Diagnosis) -> bool {
    let local = snap.route.as_ref().is_some_and(|r| r.kind == "local");
    let (Some(queued), Some(overflows)) = (snap.accept_queue, snap.listen_overflows) else {
        return false;
    };
    if !local || queued == 0 || overflows == 0 {
        return false;
    }
    let port = flow.dst.port();
    d.cause = Cause::ListenOverflow.as_str().into();
    d.drop_reason = Some("TCP_LISTEN_OVERFLOW".into());
    d.summary = format!(
        "{} does not accept connections fast enough: {queued} connection(s) wait in its accept queue and {overflows} were turned away since netprobe started",
        flow.dst
    );
    d.evidence.push(format!(
        "the listener on port {port} of this node has {queued} connection(s) not yet accepted; TcpExt ListenOverflows rose by {overflows} in this namespace"
    ));
    d.fix = Some(format!(
        "ss -ltnp 'sport = :{port}'   # Recv-Q at Send-Q: the process is not calling accept(); raise its backlog and net.core.somaxconn, or fix what blocks it"
    ));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::facts::RouteInfo;

    fn snap(kind: &str, queued: u32, overflows: u64) -> Snapshot {
        Snapshot {
            route: Some(RouteInfo {
                dst: "10.0.0.1".parse().unwrap(),
                dev: Some("lo".into()),
                gateway: None,
                kind: kind.into(),
            }),
            accept_queue: Some(queued),
            listen_overflows: Some(overflows),
            ..Default::default()
        }
    }

    #[test]
    fn a_full_queue_on_a_local_listener_is_named() {
        let flow = FlowRef {
            src: "10.1.0.5:40000".parse().unwrap(),
            dst: "10.0.0.1:6443".parse().unwrap(),
        };
        let mut d = Diagnosis::new("tls_handshake_unanswered", "unknown", flow, "");
        assert!(judge(&snap("local", 2, 3), flow, &mut d));
        assert_eq!(d.cause, "listen_overflow");
        for (kind, q, o) in [("unicast", 2, 3), ("local", 0, 3), ("local", 2, 0)] {
            let mut d = Diagnosis::new("tls_handshake_unanswered", "unknown", flow, "");
            assert!(!judge(&snap(kind, q, o), flow, &mut d), "{kind} {q} {o}");
        }
    }
}
