//! Runs the real netprobe binary and collects its JSON lines.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::background::{Background, Stream};
use crate::cmd::{self, Finished};
use crate::netns::Netns;

/// Environment variable holding the path of the binary under test.
pub const BIN_ENV: &str = "NETPROBE_BIN";

/// netprobe prints a stderr line containing this once every probe is
/// attached. Change it here only.
pub const READY_MARKER: &str = "netprobe: ready";

/// Bound on a graceful stop before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The binary under test, from `NETPROBE_BIN`; panics with a clear message
/// if unset or missing.
pub fn binary() -> PathBuf {
    binary_from(std::env::var_os(BIN_ENV))
}

fn binary_from(value: Option<OsString>) -> PathBuf {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        panic!(
            "{BIN_ENV} is not set: point it at the netprobe binary under test, e.g. \
             {BIN_ENV}=$PWD/target/release/netprobe"
        );
    };
    let p = PathBuf::from(v);
    if !p.is_file() {
        panic!("{BIN_ENV}={} is not a file", p.display());
    }
    p
}

#[derive(Default)]
struct Events {
    json: Vec<Value>,
    /// stdout lines that were not JSON objects (a contract violation the
    /// tests may want to assert on).
    other: Vec<String>,
}

type SharedEvents = Arc<(Mutex<Events>, Condvar)>;

fn lock(e: &SharedEvents) -> std::sync::MutexGuard<'_, Events> {
    e.0.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Netprobe {
    proc: Background,
    events: SharedEvents,
}

/// Everything a finished run produced.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    /// True if it had to be SIGKILLed.
    pub killed: bool,
    pub events: Vec<Value>,
    pub non_json_stdout: Vec<String>,
    pub stderr: String,
}

impl Netprobe {
    /// Starts `$NETPROBE_BIN args...` in the root namespace.
    pub fn start<I, S>(args: I) -> Netprobe
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new(binary());
        c.args(args);
        Self::start_command(c)
    }

    /// Starts it inside `ns` via `nsenter --net=` (not `ip netns exec`,
    /// which remounts /sys and hides tracefs).
    pub fn start_in<I, S>(ns: &Netns, args: I) -> Netprobe
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", ns.path().display()))
            .arg("--")
            .arg(binary())
            .args(args);
        Self::start_command(c)
    }

    /// Starts any command as "netprobe" (also how the harness tests itself).
    pub fn start_command(c: Command) -> Netprobe {
        let events: SharedEvents = Arc::default();
        let sink = events.clone();
        let hook = Box::new(move |line: &str| {
            let mut g = lock(&sink);
            match serde_json::from_str::<Value>(line) {
                Ok(v) if v.is_object() => g.json.push(v),
                _ => g.other.push(line.to_string()),
            }
            sink.1.notify_all();
        });
        let proc = Background::spawn_with_hook(c, "netprobe", Some(hook));
        Netprobe { proc, events }
    }

    /// Runs netprobe to completion (e.g. bad input, `doctor`), bounded.
    pub fn run<I, S>(args: I, timeout: Duration) -> Finished
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new(binary());
        c.args(args);
        cmd::run_bounded(&mut c, timeout)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Waits for the ready marker on stderr. Fails (with stderr) if netprobe
    /// exits first or the deadline passes.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let found = self
            .proc
            .wait_line(Stream::Stderr, |l| l.contains(READY_MARKER), timeout);
        if found.is_some() {
            return Ok(());
        }
        // stderr closed early: give the exit status a moment to appear.
        self.proc.wait_exit(Duration::from_millis(200));
        bail!(
            "netprobe not ready ({READY_MARKER:?} on stderr) after {:?}: {}",
            start.elapsed(),
            self.proc.report()
        )
    }

    /// First event (old or new) matching `pred`, waiting up to `timeout`;
    /// None at the deadline or if netprobe's stdout closed without one.
    pub fn wait_for(&self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        let mut g = lock(&self.events);
        loop {
            // Read before scanning: the reader stores every line before it
            // marks EOF, so a closed stream has nothing more to add.
            let closed = self.proc.closed(Stream::Stdout);
            if let Some(v) = g.json[seen..].iter().find(|v| pred(v)) {
                return Some(v.clone());
            }
            seen = g.json.len();
            let left = deadline.saturating_duration_since(Instant::now());
            if closed || left.is_zero() {
                return None;
            }
            // Short slices: EOF is signalled on the other condvar.
            let slice = left.min(Duration::from_millis(50));
            g = self
                .events
                .1
                .wait_timeout(g, slice)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits for the first event with `"type": t`.
    pub fn wait_for_type(&self, t: &str, timeout: Duration) -> Option<Value> {
        self.wait_for(|v| v["type"] == t, timeout)
    }

    pub fn events(&self) -> Vec<Value> {
        lock(&self.events).json.clone()
    }

    pub fn events_of_type(&self, t: &str) -> Vec<Value> {
        lock(&self.events)
            .json
            .iter()
            .filter(|v| v["type"] == t)
            .cloned()
            .collect()
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Ctrl-C: SIGINT, wait up to 10 s for a clean exit, else SIGKILL.
    pub fn stop(&mut self) -> Stopped {
        self.stop_within(STOP_TIMEOUT)
    }

    /// SIGINT, then SIGKILL if still running after `grace`.
    pub fn stop_within(&mut self, grace: Duration) -> Stopped {
        self.proc.signal(libc::SIGINT);
        let clean = self.proc.wait_exit(grace).is_some();
        let status = self.proc.kill();
        self.collect(status, !clean)
    }

    /// SIGKILL (a crash: nothing of netprobe's own cleanup runs).
    pub fn kill9(&mut self) -> Stopped {
        let status = self.proc.kill();
        self.collect(status, true)
    }

    fn collect(&self, status: ExitStatus, killed: bool) -> Stopped {
        let g = lock(&self.events);
        Stopped {
            status,
            killed,
            events: g.json.clone(),
            non_json_stdout: g.other.clone(),
            stderr: self.proc.stderr(),
        }
    }
}

impl Stopped {
    pub fn of_type(&self, t: &str) -> Vec<&Value> {
        self.events.iter().filter(|v| v["type"] == t).collect()
    }

    /// The run ended by itself with exit code 0 (not killed).
    pub fn clean_exit(&self) -> bool {
        !self.killed && self.status.success()
    }
}

/// Parses "ip:port" / "[v6]:port" from an event field.
pub fn endpoint(v: &Value) -> anyhow::Result<std::net::SocketAddr> {
    let s = v.as_str().context("endpoint is not a string")?;
    s.parse().with_context(|| format!("bad endpoint {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_binary_panics_clearly() {
        let err = std::panic::catch_unwind(|| binary_from(None)).unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(msg.contains("NETPROBE_BIN is not set"), "{msg}");
        let err =
            std::panic::catch_unwind(|| binary_from(Some("/nonexistent/np".into()))).unwrap_err();
        assert!(
            err.downcast_ref::<String>()
                .unwrap()
                .contains("is not a file")
        );
    }

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            endpoint(&Value::from("[fd00:10:200::1]:6443"))
                .unwrap()
                .port(),
            6443
        );
        assert!(endpoint(&Value::from("10.200.0.1")).is_err());
    }
}
