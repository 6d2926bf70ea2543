//! A TCP listener that accepts and then never answers: the wrong L2 owner
//! of a VIP in the stale-ARP incident (TCP connects, the ClientHello is
//! ACKed by the kernel, no ServerHello ever comes).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::background::{Background, Stream};
use crate::netns::Netns;
use crate::py;

use super::START_TIMEOUT;

const SCRIPT: &str = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(128)
print('listening')
held = []  # never read, write or close: the peer waits forever
while True:
    c, a = s.accept()
    held.append(c)
    print('accepted', a[0], a[1])
"#;

pub struct BlackHole {
    proc: Background,
    addr: SocketAddr,
}

impl BlackHole {
    /// Listens on `bind`:`port` in `ns`; returns once listening.
    pub fn start(ns: &Netns, bind: IpAddr, port: u16) -> BlackHole {
        let addr = SocketAddr::new(bind, port);
        let c = py::command(ns, SCRIPT, &[bind.to_string(), port.to_string()]);
        let proc = Background::spawn(c, &format!("black hole on {addr} in {}", ns.name()));
        let mut hole = BlackHole { proc, addr };
        if hole
            .proc
            .wait_line(Stream::Stdout, |l| l == "listening", START_TIMEOUT)
            .is_none()
        {
            panic!("black hole did not start: {}", hole.proc.report());
        }
        hole
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Peers ("ip port") of the connections accepted so far.
    pub fn accepted(&self) -> Vec<String> {
        self.proc
            .lines(Stream::Stdout)
            .iter()
            .filter_map(|l| l.strip_prefix("accepted ").map(String::from))
            .collect()
    }

    /// Waits until at least `n` connections were accepted.
    pub fn wait_accepted(&self, n: usize, timeout: Duration) -> bool {
        let mut seen = 0;
        self.proc
            .wait_line(
                Stream::Stdout,
                |l| {
                    seen += usize::from(l.starts_with("accepted "));
                    seen >= n
                },
                timeout,
            )
            .is_some()
    }
}
