//! A long-running child process (server, sniffer, netprobe) whose output is
//! collected line by line and which is always killed when dropped.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::cmd::{describe, kill_group};

/// Called by the reader thread for every stdout line, as it arrives.
pub type LineHook = Box<dyn FnMut(&str) + Send>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Default)]
struct Captured {
    stdout: Vec<String>,
    stderr: Vec<String>,
    stdout_eof: bool,
    stderr_eof: bool,
}

impl Captured {
    fn lines(&self, s: Stream) -> &[String] {
        match s {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }
    fn eof(&self, s: Stream) -> bool {
        match s {
            Stream::Stdout => self.stdout_eof,
            Stream::Stderr => self.stderr_eof,
        }
    }
}

type Shared = Arc<(Mutex<Captured>, Condvar)>;

fn lock(shared: &Shared) -> MutexGuard<'_, Captured> {
    // A panicking reader hook must not hide the output collected so far.
    shared.0.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Background {
    what: String,
    command: String,
    child: Child,
    status: Option<ExitStatus>,
    shared: Shared,
    readers: Vec<JoinHandle<()>>,
}

impl Background {
    /// Starts `cmd`; `what` names it in messages ("openssl s_server in np-x").
    pub fn spawn(cmd: Command, what: &str) -> Background {
        Self::spawn_with_hook(cmd, what, None)
    }

    /// The child runs in its own process group (so stop/kill reach whatever it
    /// started) and gets SIGKILL if the spawning thread dies, so a crashed
    /// test leaves no server behind. Consequence: spawn from the thread that
    /// owns the process, not from a short-lived helper thread.
    pub fn spawn_with_hook(mut cmd: Command, what: &str, hook: Option<LineHook>) -> Background {
        let command = describe(&cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: `{command}`: {e}"));
        let shared: Shared = Arc::default();
        let readers = vec![
            reader(
                child.stdout.take().expect("piped"),
                Stream::Stdout,
                shared.clone(),
                hook,
            ),
            reader(
                child.stderr.take().expect("piped"),
                Stream::Stderr,
                shared.clone(),
                None,
            ),
        ];
        Background {
            what: what.to_string(),
            command,
            child,
            status: None,
            shared,
            readers,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn command(&self) -> &str {
        &self.command
    }

    pub fn lines(&self, stream: Stream) -> Vec<String> {
        lock(&self.shared).lines(stream).to_vec()
    }

    pub fn stdout(&self) -> String {
        self.lines(Stream::Stdout).join("\n")
    }

    pub fn stderr(&self) -> String {
        self.lines(Stream::Stderr).join("\n")
    }

    /// True once the child closed that stream (normally: it exited).
    pub fn closed(&self, stream: Stream) -> bool {
        lock(&self.shared).eof(stream)
    }

    /// First line (old or new) matching `pred`; None at the deadline or when
    /// the stream closed without one.
    pub fn wait_line(
        &self,
        stream: Stream,
        mut pred: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        let mut guard = lock(&self.shared);
        loop {
            let lines = guard.lines(stream);
            if let Some(l) = lines[seen..].iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            seen = lines.len();
            if guard.eof(stream) {
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            guard = self
                .shared
                .1
                .wait_timeout(guard, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Exit status if it has exited (reaps it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits up to `timeout` for the child to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` to the child only (not its group). No-op once reaped, so
    /// a recycled pid is never hit.
    pub fn signal(&mut self, sig: i32) {
        if self.is_running() {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(self.child.id() as i32, sig);
            }
        }
    }

    /// SIGTERM to the group, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) -> ExitStatus {
        if self.is_running() {
            kill_group(self.child.id(), libc::SIGTERM);
            if self.wait_exit(grace).is_none() {
                kill_group(self.child.id(), libc::SIGKILL);
            }
        }
        self.reap()
    }

    /// SIGKILL to the group, reaped.
    pub fn kill(&mut self) -> ExitStatus {
        if self.is_running() {
            kill_group(self.child.id(), libc::SIGKILL);
        }
        self.reap()
    }

    fn reap(&mut self) -> ExitStatus {
        if self.status.is_none() {
            let s = self
                .child
                .wait()
                .unwrap_or_else(|e| panic!("reaping {}: {e}", self.what));
            self.status = Some(s);
        }
        self.join_readers(Duration::from_secs(1));
        self.status.expect("reaped")
    }

    /// Lets the readers collect the last lines after exit; bounded, because a
    /// grandchild that escaped the group could keep a pipe open.
    fn join_readers(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && self.readers.iter().any(|r| !r.is_finished()) {
            thread::sleep(Duration::from_millis(5));
        }
        for r in std::mem::take(&mut self.readers) {
            if r.is_finished() {
                let _ = r.join();
            }
        }
    }

    /// Everything known about the process, for panic messages.
    pub fn report(&mut self) -> String {
        let state = match self.try_status() {
            Some(s) => format!("exited: {s}"),
            None => "still running".to_string(),
        };
        format!(
            "{} (`{}`), {state}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.command,
            self.stdout(),
            self.stderr()
        )
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.status.is_none() {
            kill_group(self.child.id(), libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

fn reader(
    pipe: impl Read + Send + 'static,
    stream: Stream,
    shared: Shared,
    mut hook: Option<LineHook>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut r = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                    if let Some(h) = hook.as_mut() {
                        h(&line);
                    }
                    let mut g = lock(&shared);
                    match stream {
                        Stream::Stdout => g.stdout.push(line),
                        Stream::Stderr => g.stderr.push(line),
                    }
                    shared.1.notify_all();
                }
            }
        }
        let mut g = lock(&shared);
        match stream {
            Stream::Stdout => g.stdout_eof = true,
            Stream::Stderr => g.stderr_eof = true,
        }
        shared.1.notify_all();
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn collects_lines_and_sees_eof() {
        let mut p = Background::spawn(sh("echo a; echo b >&2; echo c"), "sh");
        let got = p.wait_line(Stream::Stdout, |l| l == "c", Duration::from_secs(5));
        assert_eq!(got.as_deref(), Some("c"));
        assert!(p.wait_exit(Duration::from_secs(5)).unwrap().success());
        assert!(
            p.wait_line(Stream::Stdout, |l| l == "zz", Duration::from_secs(5))
                .is_none()
        );
        p.kill();
        assert_eq!(p.lines(Stream::Stdout), ["a", "c"]);
        assert_eq!(p.stderr(), "b");
    }

    #[test]
    fn stop_kills_the_whole_group() {
        let mut p = Background::spawn(sh("sleep 60 & echo $!; wait"), "sh");
        let pid: i32 = p
            .wait_line(Stream::Stdout, |_| true, Duration::from_secs(5))
            .unwrap()
            .parse()
            .unwrap();
        let start = Instant::now();
        p.stop(Duration::from_secs(2));
        assert!(start.elapsed() < Duration::from_secs(3));
        // The grandchild got the group signal; it is init's to reap, so poll.
        let gone =
            crate::wait::poll_until(Duration::from_secs(2), Duration::from_millis(10), || {
                // SAFETY: signal 0 only checks existence.
                let alive = unsafe { libc::kill(pid, 0) } == 0
                    && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .map(|s| !s.contains(") Z "))
                        .unwrap_or(false);
                (!alive).then_some(())
            });
        assert!(gone.is_some(), "grandchild {pid} survived");
    }

    #[test]
    fn hook_sees_stdout_lines() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let mut p = Background::spawn_with_hook(
            sh("echo one; echo two"),
            "sh",
            Some(Box::new(move |l| s2.lock().unwrap().push(l.to_uppercase()))),
        );
        p.wait_exit(Duration::from_secs(5)).unwrap();
        p.kill();
        assert_eq!(*seen.lock().unwrap(), ["ONE", "TWO"]);
    }
}
