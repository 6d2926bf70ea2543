//! Does anything answer at an address right now? One TCP connection
//! attempt from netprobe's namespace (where the NAT happens), closed at
//! once. It tells "answers" from "does not", not "removed" from "paused":
//! the correlator weighs it with the NAT rules.
//!
//! Attempts are coalesced: a storm over many flows to one target makes one
//! attempt per [`REUSE`], and at most [`MAX_TARGETS`] targets are
//! remembered.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::model::facts::{Liveness, LivenessOutcome};

/// How long one attempt may wait for a SYN-ACK.
pub const WINDOW: Duration = Duration::from_millis(700);
/// A result is reused this long for the same target.
const REUSE: Duration = Duration::from_secs(2);
const MAX_TARGETS: usize = 1024;

static RECENT: Mutex<Option<HashMap<SocketAddr, (Instant, Liveness)>>> = Mutex::new(None);

pub async fn check(addr: SocketAddr) -> Liveness {
    if let Some(hit) = recent(addr) {
        return hit;
    }
    let start = Instant::now();
    let outcome = match tokio::time::timeout(WINDOW, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => LivenessOutcome::NoAnswer,
        Ok(Ok(_stream)) => LivenessOutcome::Accepted, // closed when dropped
        Ok(Err(e)) => classify(&e),
    };
    let result = Liveness {
        addr,
        outcome,
        after_ms: start.elapsed().as_millis() as u64,
    };
    remember(addr, &result);
    result
}

fn classify(e: &std::io::Error) -> LivenessOutcome {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => LivenessOutcome::Refused,
        Some(libc::ETIMEDOUT) => LivenessOutcome::NoAnswer,
        _ => LivenessOutcome::Unreachable,
    }
}

fn recent(addr: SocketAddr) -> Option<Liveness> {
    let guard = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    let (at, l) = guard.as_ref()?.get(&addr)?;
    (at.elapsed() < REUSE).then(|| l.clone())
}

fn remember(addr: SocketAddr, l: &Liveness) {
    let mut guard = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    if map.len() >= MAX_TARGETS {
        map.retain(|_, (at, _)| at.elapsed() < REUSE);
        if map.len() >= MAX_TARGETS {
            map.clear();
        }
    }
    map.insert(addr, (Instant::now(), l.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_outcomes() {
        let e = |n| std::io::Error::from_raw_os_error(n);
        assert_eq!(classify(&e(libc::ECONNREFUSED)), LivenessOutcome::Refused);
        assert_eq!(
            classify(&e(libc::EHOSTUNREACH)),
            LivenessOutcome::Unreachable
        );
        assert_eq!(classify(&e(libc::ETIMEDOUT)), LivenessOutcome::NoAnswer);
    }

    #[tokio::test]
    async fn a_listener_on_loopback_accepts_and_a_closed_port_refuses() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = l.local_addr().unwrap();
        assert_eq!(check(open).await.outcome, LivenessOutcome::Accepted);
        drop(l);
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert_eq!(check(closed).await.outcome, LivenessOutcome::Refused);
    }
}
