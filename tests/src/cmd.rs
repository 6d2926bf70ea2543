//! Running one external command to completion, bounded in time.
//!
//! Every lab step shells out (ip, nft, openssl...). A hung tool must not hang
//! the test run, and a failed one must say exactly what was run and what it
//! printed, so the test log alone is enough to debug it.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Bound for configuration commands (ip, nft, tc...), which take milliseconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// A command that ran (or was killed at its deadline).
#[derive(Debug)]
pub struct Finished {
    pub command: String,
    pub output: Output,
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl Finished {
    pub fn success(&self) -> bool {
        !self.timed_out && self.output.status.success()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Exit code, None when killed by a signal (including our timeout).
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    /// Human readable account for panic messages.
    pub fn report(&self) -> String {
        let how = if self.timed_out {
            format!("timed out after {:?}", self.elapsed)
        } else {
            format!("{} after {:?}", self.output.status, self.elapsed)
        };
        format!(
            "`{}` {how}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.stdout().trim_end(),
            self.stderr().trim_end()
        )
    }
}

/// Shell-like rendering of a command line, for messages only.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@,+%[]".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` with stdin closed and output captured; kills its whole process
/// group at `timeout`. Panics only if the program cannot be started at all.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Finished {
    let command = describe(cmd);
    // Own process group so a timeout also kills what a `sh -c` started.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));

    let mut timed_out = false;
    let mut nap = Duration::from_millis(1);
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => panic!("waiting for `{command}`: {e}"),
        }
        if start.elapsed() >= timeout {
            timed_out = true;
            kill_group(child.id(), libc::SIGKILL);
            break child
                .wait()
                .unwrap_or_else(|e| panic!("reaping `{command}`: {e}"));
        }
        thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    };
    // A background grandchild may hold the pipes open: don't wait for it.
    let grace = Duration::from_secs(1);
    let output = Output {
        status,
        stdout: out.recv_timeout(grace).unwrap_or_default(),
        stderr: err.recv_timeout(grace).unwrap_or_default(),
    };
    Finished {
        command,
        output,
        timed_out,
        elapsed: start.elapsed(),
    }
}

/// Like [`run_bounded`], but panics unless the command exits 0 in time.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let done = run_bounded(cmd, timeout);
    if !done.success() {
        panic!("command failed: {}", done.report());
    }
    done.output
}

fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Signals a process group whose leader is `pid` (spawned with process_group(0)).
pub(crate) fn kill_group(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(-(pid as i32), sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_when_needed() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo 'hi'", "10.0.0.1/24"]);
        assert_eq!(describe(&c), r#"sh -c 'echo '\''hi'\''' 10.0.0.1/24"#);
    }

    #[test]
    fn timeout_kills_the_group() {
        let start = Instant::now();
        let done = run_bounded(
            Command::new("sh").args(["-c", "sleep 30 & sleep 30"]),
            Duration::from_millis(200),
        );
        assert!(done.timed_out);
        assert!(!done.success());
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn captures_output_and_status() {
        let done = run_bounded(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            DEFAULT_TIMEOUT,
        );
        assert_eq!(done.code(), Some(3));
        assert_eq!(done.stdout(), "out\n");
        assert_eq!(done.stderr(), "err\n");
        assert!(done.report().contains("exit status: 3"));
    }
}
