//! Real peers for lab hosts: TLS servers and clients, a black hole, a raw
//! byte sender, an echo pair. Every one is bounded in time and killed when
//! its handle drops.

mod blackhole;
mod echo;
mod raw;
mod slow;
mod tls;

pub use blackhole::BlackHole;
pub use echo::{EchoServer, LineClient};
pub use raw::{RawOutcome, RawPlan, raw_tcp_send};
pub use slow::SlowRelay;
pub use tls::{HttpsOutcome, TlsOutcome, TlsServer, curl_https, tls_client};

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::background::Background;
use crate::netns::Netns;
use crate::wait::poll_until;

/// How long a server gets to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);

/// Polls `ss` in `ns` until a TCP listener is bound to exactly `addr`
/// (several servers may share a port on different addresses); panics with
/// the server's output if it exits or the deadline passes.
pub fn wait_listening(ns: &Netns, addr: SocketAddr, server: &mut Background) {
    let filter = format!("sport = :{}", addr.port());
    let up = poll_until(START_TIMEOUT, Duration::from_millis(20), || {
        if !server.is_running() {
            return Some(false);
        }
        let ss = ns.try_exec(["ss", "-Hltn", &filter], Duration::from_secs(5));
        let bound = ss.stdout().lines().any(|l| {
            l.split_whitespace()
                .nth(3)
                .is_some_and(|local| listener_matches(local, addr))
        });
        bound.then_some(true)
    });
    if up != Some(true) {
        panic!(
            "nothing listening on {addr} in {} within {START_TIMEOUT:?}: {}",
            ns.name(),
            server.report()
        );
    }
}

/// `local` is ss's Local Address:Port column: "10.0.0.1:443",
/// "[fd00::1]:443", "0.0.0.0:443", "[::]:443", "*:443", maybe "%dev".
fn listener_matches(local: &str, addr: SocketAddr) -> bool {
    let Some((host, port)) = local.rsplit_once(':') else {
        return false;
    };
    if port.parse() != Ok(addr.port()) {
        return false;
    }
    let host = host.split('%').next().unwrap_or(host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host == "*" {
        return addr.ip().is_unspecified();
    }
    host.parse::<IpAddr>() == Ok(addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ss_columns() {
        let a: SocketAddr = "[fd00:10:200::1]:6443".parse().unwrap();
        assert!(listener_matches("[fd00:10:200::1]:6443", a));
        assert!(!listener_matches("[fd00:10:200::1]:644", a));
        assert!(!listener_matches("10.200.0.1:6443", a));
        let any: SocketAddr = "0.0.0.0:80".parse().unwrap();
        assert!(listener_matches("0.0.0.0:80", any));
        assert!(listener_matches("*:80", any));
        let v4: SocketAddr = "10.1.2.3:80".parse().unwrap();
        assert!(listener_matches("10.1.2.3%eth0:80", v4));
    }
}
