//! A TLS server that is slow for a while: a TCP relay in front of a real
//! one (`TlsServer` on loopback) that holds its first `slow` connections
//! for `delay` before relaying them, and relays later ones at once. A
//! CPU-starved or briefly wedged API server, as a new VIP owner may be
//! right after a failover.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::background::{Background, Stream};
use crate::netns::Netns;
use crate::py;

use super::START_TIMEOUT;

const SCRIPT: &str = r#"
import socket, sys, threading, time
host, port, back, slow, delay = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(128)
print('listening', flush=True)
def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for x in (a, b):
        try:
            x.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def serve(c, wait):
    time.sleep(wait)
    try:
        u = socket.create_connection(('127.0.0.1', back))
    except OSError:
        c.close()
        return
    threading.Thread(target=pump, args=(c, u), daemon=True).start()
    pump(u, c)
n = 0
while True:
    c, a = s.accept()
    n += 1
    wait = delay if n <= slow else 0.0
    print('accepted', a[0], a[1], wait, flush=True)
    threading.Thread(target=serve, args=(c, wait), daemon=True).start()
"#;

pub struct SlowRelay {
    proc: Background,
}

impl SlowRelay {
    /// Listens on `bind`:`port` in `ns`, relaying to 127.0.0.1:`backend`;
    /// the first `slow` connections wait `delay` first.
    pub fn start(
        ns: &Netns,
        bind: IpAddr,
        port: u16,
        backend: u16,
        slow: u32,
        delay: Duration,
    ) -> SlowRelay {
        let addr = SocketAddr::new(bind, port);
        let args = [
            bind.to_string(),
            port.to_string(),
            backend.to_string(),
            slow.to_string(),
            format!("{:.3}", delay.as_secs_f64()),
        ];
        let c = py::command(ns, SCRIPT, &args);
        let mut proc = Background::spawn(c, &format!("slow relay on {addr} in {}", ns.name()));
        if proc
            .wait_line(Stream::Stdout, |l| l == "listening", START_TIMEOUT)
            .is_none()
        {
            panic!("slow relay did not start: {}", proc.report());
        }
        SlowRelay { proc }
    }

    /// "ip port delay" of each connection accepted so far.
    pub fn accepted(&self) -> Vec<String> {
        self.proc
            .lines(Stream::Stdout)
            .iter()
            .filter_map(|l| l.strip_prefix("accepted ").map(String::from))
            .collect()
    }
}
