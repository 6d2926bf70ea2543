//! Echo server and a client that sends a line every N ms and waits for its
//! echo (the retransmit/stale-conntrack incident's client: it blocks in
//! read while its unacknowledged line is retransmitted).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::background::{Background, Stream};
use crate::netns::Netns;
use crate::py;

use super::START_TIMEOUT;

const SERVER: &str = r#"
import socket, sys, threading
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(64)
print('listening')
def serve(c):
    with c:
        for line in c.makefile('rb'):
            c.sendall(line)
while True:
    c, a = s.accept()
    print('accepted', a[0], a[1])
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

const CLIENT: &str = r#"
import socket, sys, time
host, port, every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
count, user_timeout_ms = int(sys.argv[4]), int(sys.argv[5])
v6 = ':' in host
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET)
if user_timeout_ms:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, user_timeout_ms)
s.settimeout(5)
s.connect((host, port))
s.settimeout(None)
l = s.getsockname()
print('connected', ('[%s]:%d' if v6 else '%s:%d') % (l[0], l[1]))
f = s.makefile('rb')
i = 0
try:
    while count == 0 or i < count:
        i += 1
        s.sendall(b'line %d\n' % i)
        print('sent', i)
        if not f.readline():
            print('closed')
            break
        print('echo', i)
        time.sleep(every)
except Exception as e:
    print('error', type(e).__name__, e)
"#;

pub struct EchoServer {
    proc: Background,
    addr: SocketAddr,
}

impl EchoServer {
    /// Line echo server on `bind`:`port` in `ns`; returns once listening.
    pub fn start(ns: &Netns, bind: IpAddr, port: u16) -> EchoServer {
        let addr = SocketAddr::new(bind, port);
        let c = py::command(ns, SERVER, &[bind.to_string(), port.to_string()]);
        let mut proc = Background::spawn(c, &format!("echo server on {addr} in {}", ns.name()));
        if proc
            .wait_line(Stream::Stdout, |l| l == "listening", START_TIMEOUT)
            .is_none()
        {
            panic!("echo server did not start: {}", proc.report());
        }
        EchoServer { proc, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kills the server (connections die with RST from the kernel).
    pub fn kill(&mut self) {
        self.proc.kill();
    }
}

pub struct LineClient {
    proc: Background,
    local: SocketAddr,
}

impl LineClient {
    /// Connects from `ns` to `dst` and sends "line N\n" every `every`,
    /// reading each echo before the next (forever, until dropped). Returns
    /// once connected; panics if that takes over 5 s.
    pub fn start(ns: &Netns, dst: SocketAddr, every: Duration) -> LineClient {
        Self::start_with(ns, dst, every, None)
    }

    /// Same, with TCP_USER_TIMEOUT set (the mitigation that bounds the hang).
    pub fn start_with(
        ns: &Netns,
        dst: SocketAddr,
        every: Duration,
        user_timeout: Option<Duration>,
    ) -> LineClient {
        let args = [
            dst.ip().to_string(),
            dst.port().to_string(),
            every.as_secs_f64().to_string(),
            "0".to_string(),
            user_timeout.map_or(0, |d| d.as_millis()).to_string(),
        ];
        let c = py::command(ns, CLIENT, &args);
        let mut proc = Background::spawn(c, &format!("line client to {dst} in {}", ns.name()));
        let line = proc.wait_line(
            Stream::Stdout,
            |l| l.starts_with("connected "),
            START_TIMEOUT,
        );
        let local = line
            .and_then(|l| l["connected ".len()..].parse().ok())
            .unwrap_or_else(|| panic!("line client did not connect: {}", proc.report()));
        LineClient { proc, local }
    }

    /// Our end of the flow: how a test finds it in netprobe's events.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn count(&self, prefix: &str) -> usize {
        self.proc
            .lines(Stream::Stdout)
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }

    pub fn sent(&self) -> usize {
        self.count("sent ")
    }

    pub fn echoes(&self) -> usize {
        self.count("echo ")
    }

    /// Waits until `n` echoes arrived in total.
    pub fn wait_echoes(&self, n: usize, timeout: Duration) -> bool {
        let mut seen = 0;
        self.proc
            .wait_line(
                Stream::Stdout,
                |l| {
                    seen += usize::from(l.starts_with("echo "));
                    seen >= n
                },
                timeout,
            )
            .is_some()
    }

    /// The error that ended the client (e.g. "TimeoutError ..."), if any.
    pub fn error(&self) -> Option<String> {
        self.proc
            .lines(Stream::Stdout)
            .iter()
            .find_map(|l| l.strip_prefix("error ").map(String::from))
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }
}
