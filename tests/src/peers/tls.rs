//! openssl s_server as the TLS peer; openssl s_client and curl as clients.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use crate::background::Background;
use crate::cmd::{self, DEFAULT_TIMEOUT};
use crate::netns::Netns;
use crate::tmp::TempDir;

use super::wait_listening;

/// `openssl s_server -www` (answers HTTP GET with a status page) with a
/// fresh self-signed EC certificate (CN netprobe-lab, 1 day).
pub struct TlsServer {
    proc: Background,
    addr: SocketAddr,
    // Declared after proc: the files outlive the server using them.
    _dir: TempDir,
}

impl TlsServer {
    /// Listens on `bind`:`port` in `ns` (`::` listens on IPv6 only: openssl
    /// sets V6ONLY; start a second server for IPv4). Returns once listening.
    pub fn start(ns: &Netns, bind: IpAddr, port: u16) -> TlsServer {
        Self::start_with_chain(ns, bind, port, 0)
    }

    /// Like [`TlsServer::start`], also sending `extra` more certificates in
    /// its Certificate message: a server flight of several KB, whose
    /// full-size segments an MTU black hole swallows.
    pub fn start_with_chain(ns: &Netns, bind: IpAddr, port: u16, extra: usize) -> TlsServer {
        let dir = TempDir::new();
        let key = dir.join("key.pem");
        let cert = dir.join("cert.pem");
        // EC: key generation takes milliseconds, RSA-2048 can take a second.
        cmd::run(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args([
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-subj",
                    "/CN=netprobe-lab",
                ])
                .args(["-days", "1", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert),
            DEFAULT_TIMEOUT,
        );
        let addr = SocketAddr::new(bind, port);
        let mut c = ns.command(["openssl", "s_server", "-quiet", "-www", "-accept"]);
        c.arg(addr.to_string())
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key);
        if extra > 0 {
            let mut chain = Vec::new();
            for i in 0..extra {
                let (k, c) = (
                    dir.join(&format!("k{i}.pem")),
                    dir.join(&format!("c{i}.pem")),
                );
                cmd::run(
                    Command::new("openssl")
                        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-subj"])
                        .arg(format!("/CN=netprobe-lab-chain-{i}/O=a long enough organisation name to make it big"))
                        .args(["-days", "1", "-keyout"])
                        .arg(&k)
                        .arg("-out")
                        .arg(&c),
                    DEFAULT_TIMEOUT,
                );
                chain.extend(std::fs::read(&c).expect("chain certificate"));
            }
            let path = dir.join("chain.pem");
            std::fs::write(&path, chain).expect("writing the chain");
            c.arg("-cert_chain").arg(&path);
        }
        let what = format!("openssl s_server on {addr} in {}", ns.name());
        let mut proc = Background::spawn(c, &what);
        wait_listening(ns, addr, &mut proc);
        TlsServer {
            proc,
            addr,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    pub fn stop(&mut self) {
        self.proc.stop(Duration::from_secs(2));
    }

    /// What the server printed (errors of failed handshakes land here).
    pub fn output(&mut self) -> String {
        self.proc.report()
    }
}

/// Result of one `openssl s_client` handshake attempt.
#[derive(Debug)]
pub struct TlsOutcome {
    /// TCP connect succeeded (s_client printed CONNECTED).
    pub tcp_connected: bool,
    /// The TLS handshake completed.
    pub handshake_done: bool,
    /// Still running at the deadline (killed).
    pub timed_out: bool,
    pub protocol: Option<String>,
    pub elapsed: Duration,
    /// Command, status and output, for assertion messages.
    pub report: String,
}

/// One TLS handshake from `ns` to `addr`:`port` with `sni` (None sends no
/// SNI), killed at `timeout`. Certificates are not verified.
pub fn tls_client(
    ns: &Netns,
    addr: IpAddr,
    port: u16,
    sni: Option<&str>,
    timeout: Duration,
) -> TlsOutcome {
    let target = SocketAddr::new(addr, port).to_string();
    // Not -brief: it drops the CONNECTED line. stdbuf: a client killed at
    // the deadline must not lose its block-buffered stdout.
    let mut args = vec!["stdbuf", "-oL", "openssl", "s_client", "-connect", &target];
    match sni {
        Some(name) => args.extend(["-servername", name]),
        None => args.push("-noservername"),
    }
    // stdin is /dev/null: after the handshake s_client reads EOF and closes.
    let done = ns.try_exec(args, timeout);
    let out = done.stdout();
    // "New, TLSv1.3, Cipher is ..." after a handshake; "New, (NONE), ..."
    // when it failed.
    let protocol = out
        .lines()
        .find_map(|l| l.strip_prefix("New, "))
        .and_then(|rest| rest.split(',').next())
        .map(str::to_string)
        .filter(|p| p != "(NONE)");
    TlsOutcome {
        tcp_connected: out.contains("CONNECTED("),
        handshake_done: protocol.is_some(),
        timed_out: done.timed_out,
        protocol,
        elapsed: done.elapsed,
        report: done.report(),
    }
}

/// Result of `curl -k https://...` (what kubectl's failure looks like).
#[derive(Debug)]
pub struct HttpsOutcome {
    /// curl's exit code: 0 ok, 28 timed out, 7 connect refused...
    pub exit_code: Option<i32>,
    /// HTTP status, None if no response.
    pub http_code: Option<u16>,
    /// From curl -v: "Connected to" / "SSL connection using". (curl's
    /// -w timers read 0 after a timeout, so they cannot say this.)
    pub tcp_connected: bool,
    pub tls_done: bool,
    pub elapsed: Duration,
    pub report: String,
}

/// `curl -k` GET https://`host`:`port`/ resolved to `addr` (so the SNI is
/// `host`), curl itself limited to `timeout`.
pub fn curl_https(
    ns: &Netns,
    addr: IpAddr,
    port: u16,
    host: &str,
    timeout: Duration,
) -> HttpsOutcome {
    let resolve_ip = match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let resolve = format!("{host}:{port}:{resolve_ip}");
    let url = format!("https://{host}:{port}/");
    let max_time = format!("{:.3}", timeout.as_secs_f64());
    let done = ns.try_exec(
        [
            "curl",
            "-svk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            &max_time,
            "--resolve",
            &resolve,
            &url,
        ],
        timeout + Duration::from_secs(5),
    );
    let err = done.stderr();
    HttpsOutcome {
        exit_code: done.code(),
        http_code: done.stdout().trim().parse().ok().filter(|&c| c != 0),
        tcp_connected: err.contains("Connected to "),
        tls_done: err.contains("SSL connection using"),
        elapsed: done.elapsed,
        report: done.report(),
    }
}
