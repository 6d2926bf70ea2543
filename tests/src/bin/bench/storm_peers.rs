//! The retransmit storm's peers (python3): a server that accepts and holds
//! every connection, and an asyncio client with many connections that
//! sends one small segment on each on SIGUSR1 and aborts them all (RST,
//! SO_LINGER 0: no orphan keeps retransmitting) on SIGTERM.

use std::net::Ipv4Addr;
use std::time::Duration;

use netprobe_tests::{Background, Netns, Stream, py};

const SERVER: &str = r#"
import resource, socket, sys
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(4096)
print('listening')
held = []
while True:
    held.append(s.accept()[0])
"#;

const CLIENT: &str = r#"
import asyncio, resource, signal, socket, struct, sys
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
async def main():
    loop = asyncio.get_running_loop()
    go, stop = asyncio.Event(), asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, go.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    sem = asyncio.Semaphore(100)
    async def one():
        async with sem:
            return (await asyncio.wait_for(asyncio.open_connection(host, port), 10))[1]
    ws = await asyncio.gather(*(one() for _ in range(n)))
    print('connected', len(ws))
    await go.wait()
    for w in ws:
        w.write(b'x' * 100)
    print('sent')
    await stop.wait()
    for w in ws:
        w.get_extra_info('socket').setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        w.transport.abort()
    await asyncio.sleep(0.2)
    print('aborted')
asyncio.run(main())
"#;

/// Waits for a stdout line starting with `prefix`; panics with the
/// process's output if none comes in `timeout`.
fn expect(p: &mut Background, prefix: &str, timeout: Duration) -> String {
    match p.wait_line(Stream::Stdout, |l| l.starts_with(prefix), timeout) {
        Some(l) => l,
        None => panic!("no {prefix:?} line within {timeout:?}: {}", p.report()),
    }
}

pub struct Server(#[allow(dead_code)] Background);

impl Server {
    pub fn start(ns: &Netns, ip: Ipv4Addr, port: u16) -> Server {
        let c = py::command(ns, SERVER, &[ip.to_string(), port.to_string()]);
        let mut p = Background::spawn(c, "storm server");
        expect(&mut p, "listening", Duration::from_secs(10));
        Server(p)
    }
}

pub struct Client(Background);

impl Client {
    /// Returns once all `n` connections are established.
    pub fn connect(ns: &Netns, ip: Ipv4Addr, port: u16, n: usize) -> Client {
        let args = [ip.to_string(), port.to_string(), n.to_string()];
        let mut p = Background::spawn(py::command(ns, CLIENT, &args), "storm client");
        let line = expect(&mut p, "connected ", Duration::from_secs(60));
        assert_eq!(line, format!("connected {n}"), "{}", p.report());
        Client(p)
    }

    /// One segment on every connection.
    pub fn send(&mut self) {
        self.0.signal(libc::SIGUSR1);
        expect(&mut self.0, "sent", Duration::from_secs(10));
    }

    /// RST on every connection; returns once the client exited.
    pub fn abort(&mut self) {
        self.0.signal(libc::SIGTERM);
        expect(&mut self.0, "aborted", Duration::from_secs(10));
        self.0.wait_exit(Duration::from_secs(5));
    }
}
