//! `Netns`: one named network namespace, deleted (with everything running in
//! it) when dropped.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use crate::background::Background;
use crate::cmd::{self, DEFAULT_TIMEOUT, Finished};
use crate::wait::poll_until;

/// Every namespace this crate makes starts with this, so leftovers are easy
/// to spot (`ip netns list | grep ^np-`) and to reap.
pub const PREFIX: &str = "np-";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static REAP: Once = Once::new();

pub struct Netns {
    name: String,
    deleted: AtomicBool,
    next_if: AtomicU32,
}

impl Netns {
    /// Creates `np-<label>-<pid>-<counter>` with `lo` up. `label` is cut to
    /// 24 chars of [a-z0-9-]: it is only there to tell namespaces apart in
    /// `ip netns list`.
    pub fn new(label: &str) -> Netns {
        REAP.call_once(reap_stale);
        let label: String = label
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(24)
            .collect();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{label}-{}-{n}", std::process::id());
        cmd::run(
            Command::new("ip").args(["netns", "add", &name]),
            DEFAULT_TIMEOUT,
        );
        let ns = Netns {
            name,
            deleted: AtomicBool::new(false),
            next_if: AtomicU32::new(0),
        };
        ns.ip(["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind mount that names it, e.g. for `--netns` or `nsenter --net=`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Inode of the namespace, as netprobe's `netns` field reports it
    /// (`stat -L -c %i /run/netns/NAME`).
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(self.path())
            .unwrap_or_else(|e| panic!("stat {}: {e}", self.path().display()))
            .ino()
    }

    /// A fresh interface name for this namespace: `eth0`, `eth1`, ...
    /// Interface names are per namespace, so short names never clash
    /// across labs (and stay under IFNAMSIZ).
    pub fn next_ifname(&self) -> String {
        format!("eth{}", self.next_if.fetch_add(1, Ordering::Relaxed))
    }

    /// `ip netns exec NAME args...`, not yet run. Note that `ip netns exec`
    /// remounts /sys (tracefs disappears): use nsenter for tracers.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// Runs inside; panics (with command, stdout, stderr) unless it exits 0.
    pub fn exec<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        cmd::run(&mut self.command(args), DEFAULT_TIMEOUT)
    }

    /// Runs inside with a deadline; never panics on failure.
    pub fn try_exec<I, S>(&self, args: I, timeout: Duration) -> Finished
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        cmd::run_bounded(&mut self.command(args), timeout)
    }

    /// `sh -c script` inside; panics unless it exits 0.
    pub fn sh(&self, script: &str) -> Output {
        self.exec(["sh", "-c", script])
    }

    /// Starts a background process inside; killed when the handle drops.
    pub fn spawn<I, S>(&self, args: I) -> Background
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let what = format!("process in {}", self.name);
        Background::spawn(self.command(args), &what)
    }

    /// `ip -n NAME args...` (no exec: faster, and no mount namespace games).
    pub fn ip<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new("ip");
        c.args(["-n", &self.name]).args(args);
        cmd::run(&mut c, DEFAULT_TIMEOUT)
    }

    /// `ip -n NAME -j args...`, parsed. Empty output counts as `[]`.
    pub fn ip_json<I, S>(&self, args: I) -> serde_json::Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new("ip");
        c.args(["-n", &self.name, "-j"]).args(args);
        let what = cmd::describe(&c);
        let out = cmd::run(&mut c, DEFAULT_TIMEOUT);
        parse_json(&out.stdout, &what)
    }

    /// Sets a sysctl in this namespace (net.* sysctls are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec(["sysctl", "-qw", &format!("{key}={value}")]);
    }

    /// Kernel TCP counter `Tcp: RetransSegs` of this namespace (ground truth
    /// for retransmit tests).
    pub fn tcp_retrans_segs(&self) -> u64 {
        let snmp = self.exec(["cat", "/proc/net/snmp"]);
        parse_snmp(&String::from_utf8_lossy(&snmp.stdout), "Tcp", "RetransSegs")
            .unwrap_or_else(|| panic!("no Tcp RetransSegs in /proc/net/snmp of {}", self.name))
    }

    /// A `TcpExt` counter of /proc/net/netstat (TCPSynRetrans, ...).
    pub fn tcp_ext(&self, field: &str) -> u64 {
        let netstat = self.exec(["cat", "/proc/net/netstat"]);
        parse_snmp(&String::from_utf8_lossy(&netstat.stdout), "TcpExt", field)
            .unwrap_or_else(|| panic!("no TcpExt {field} in /proc/net/netstat of {}", self.name))
    }

    /// Pids of the processes whose network namespace this is.
    pub fn pids(&self) -> Vec<i32> {
        pids_in(&self.name)
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::SeqCst)
    }

    /// Kills every process inside, then deletes the namespace. Idempotent,
    /// never panics (it runs from Drop, possibly while unwinding).
    pub fn teardown(&self) {
        if self.deleted.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(e) = delete(&self.name) {
            eprintln!("netprobe-tests: cleanup of netns {}: {e}", self.name);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.teardown();
    }
}

impl std::fmt::Debug for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Netns({})", self.name)
    }
}

/// Names from `ip netns list` (first word of each line).
pub fn list() -> Vec<String> {
    let out = cmd::run(Command::new("ip").args(["netns", "list"]), DEFAULT_TIMEOUT);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn pids_in(name: &str) -> Vec<i32> {
    let done = cmd::run_bounded(
        Command::new("ip").args(["netns", "pids", name]),
        DEFAULT_TIMEOUT,
    );
    done.stdout()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn delete(name: &str) -> Result<(), String> {
    // Processes keep a namespace (and its veths) alive after `ip netns del`.
    let emptied = poll_until(Duration::from_secs(3), Duration::from_millis(20), || {
        let pids = pids_in(name);
        for &p in &pids {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
        pids.is_empty().then_some(())
    });
    let done = cmd::run_bounded(
        Command::new("ip").args(["netns", "del", name]),
        DEFAULT_TIMEOUT,
    );
    match (emptied, done.success()) {
        (Some(()), true) => Ok(()),
        (None, _) => Err(format!("processes still inside: {:?}", pids_in(name))),
        (_, false) => Err(done.report()),
    }
}

/// Deletes `np-*` namespaces whose creating process is gone (a test run that
/// was SIGKILLed never ran its destructors).
fn reap_stale() {
    for name in list() {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        // np-<label>-<pid>-<counter>
        let Some(pid) = rest.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("netprobe-tests: reaping stale netns {name}");
            if let Err(e) = delete(&name) {
                eprintln!("netprobe-tests: reaping {name}: {e}");
            }
        }
    }
}

pub(crate) fn parse_json(bytes: &[u8], what: &str) -> serde_json::Value {
    let text = String::from_utf8_lossy(bytes);
    if text.trim().is_empty() {
        return serde_json::Value::Array(Vec::new());
    }
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("`{what}` printed bad JSON ({e}):\n{text}"))
}

/// Reads one counter from /proc/net/snmp's header/value line pairs.
fn parse_snmp(text: &str, group: &str, field: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut rows = text.lines().filter(|l| l.starts_with(&prefix));
    let header = rows.next()?;
    let values = rows.next()?;
    let i = header.split_whitespace().position(|h| h == field)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// `nsenter --net=NS setpriv ... CMD`: as `uid` with exactly `caps`
/// (setpriv names: "bpf", "perfmon", ...) inheritable, ambient and in the
/// bounding set, so they survive the exec into CMD and nothing else can
/// be regained.
pub fn with_caps(ns: &Netns, uid: u32, caps: &[&str], cmd: &[&str]) -> Command {
    let list: String = std::iter::once("-all".to_string())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", ns.path().display()))
        .args(["--", "setpriv"])
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(format!("--inh-caps={list}"))
        .arg(format!("--ambient-caps={list}"))
        .arg(format!("--bounding-set={list}"))
        .args(cmd);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_counter() {
        let t = "Ip: Forwarding X\nIp: 1 2\nTcp: RtoAlgorithm RetransSegs InErrs\nTcp: 1 42 0\n";
        assert_eq!(parse_snmp(t, "Tcp", "RetransSegs"), Some(42));
        assert_eq!(parse_snmp(t, "Tcp", "Nope"), None);
    }
}
