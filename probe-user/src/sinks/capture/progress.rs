//! Progress on stderr while the capture waits: elapsed time, events,
//! flows, diagnoses and bytes. One line rewritten in place on a terminal,
//! a plain line every so often otherwise (logs, CI, `2>file`).

use std::{
    io::{IsTerminal as _, Write},
    time::Duration,
};

/// What the progress line shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub events: u64,
    pub packets: u64,
    pub flows: u64,
    pub diagnoses: u64,
    pub bytes: u64,
}

const TTY_EVERY: Duration = Duration::from_millis(250);
const PLAIN_EVERY: Duration = Duration::from_secs(10);

pub struct Progress {
    tty: bool,
    /// Elapsed time of the last line written.
    last: Option<Duration>,
    /// A tty line is on screen and needs clearing before other output.
    drawn: bool,
}

impl Progress {
    pub fn stderr() -> Self {
        Self::new(std::io::stderr().is_terminal())
    }

    pub fn new(tty: bool) -> Self {
        Self {
            tty,
            last: None,
            drawn: false,
        }
    }

    /// The line for `counts` after `elapsed`; `goal` says what it waits for.
    pub fn line(elapsed: Duration, counts: &Counts, goal: &str) -> String {
        let secs = elapsed.as_secs();
        format!(
            "capturing {:02}:{:02}  {}, {}, {}, {}, {}  ({goal})",
            secs / 60,
            secs % 60,
            plural(counts.events, "event"),
            plural(counts.packets, "packet"),
            plural(counts.flows, "flow"),
            plural(counts.diagnoses, "diagnosis"),
            human_bytes(counts.bytes),
        )
    }

    /// What to write now, if anything (pure: `update` prints it).
    pub fn due(&mut self, elapsed: Duration, counts: &Counts, goal: &str) -> Option<String> {
        let every = if self.tty { TTY_EVERY } else { PLAIN_EVERY };
        if self.last.is_some_and(|l| elapsed < l + every) {
            return None;
        }
        self.last = Some(elapsed);
        let line = Self::line(elapsed, counts, goal);
        Some(if self.tty {
            self.drawn = true;
            format!("\r\x1b[K{line}")
        } else {
            format!("netprobe: {line}\n")
        })
    }

    pub fn update(&mut self, elapsed: Duration, counts: &Counts, goal: &str) {
        if let Some(text) = self.due(elapsed, counts, goal) {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(text.as_bytes());
            let _ = err.flush();
        }
    }

    /// Ends the in-place line so that what follows starts clean.
    pub fn finish(&mut self) {
        if self.drawn {
            let _ = std::io::stderr().write_all(b"\n");
            self.drawn = false;
        }
    }
}

/// `1 event`, `2 events`, `3 diagnoses`, `4 entries`.
pub fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else if let Some(stem) = what.strip_suffix("is") {
        format!("{n} {stem}es")
    } else if let Some(stem) = what.strip_suffix('y') {
        format!("{n} {stem}ies")
    } else {
        format!("{n} {what}s")
    }
}

/// `512 B`, `12.3 KiB`, `4.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Counts = Counts {
        events: 63,
        packets: 154,
        flows: 3,
        diagnoses: 1,
        bytes: 25_805,
    };

    #[test]
    fn line_says_everything() {
        assert_eq!(
            Progress::line(Duration::from_secs(75), &C, "until the first diagnosis"),
            "capturing 01:15  63 events, 154 packets, 3 flows, 1 diagnosis, 25.2 KiB  (until the first diagnosis)"
        );
    }

    #[test]
    fn tty_rewrites_one_line_often_plain_writes_lines_rarely() {
        let mut tty = Progress::new(true);
        let first = tty.due(Duration::ZERO, &C, "g").unwrap();
        assert!(first.starts_with("\r\x1b[K") && !first.ends_with('\n'));
        assert!(tty.due(Duration::from_millis(100), &C, "g").is_none());
        assert!(tty.due(Duration::from_millis(300), &C, "g").is_some());

        let mut plain = Progress::new(false);
        let first = plain.due(Duration::ZERO, &C, "g").unwrap();
        assert!(first.starts_with("netprobe: capturing") && first.ends_with('\n'));
        assert!(!first.contains('\r'));
        assert!(plain.due(Duration::from_secs(9), &C, "g").is_none());
        assert!(plain.due(Duration::from_secs(10), &C, "g").is_some());
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(plural(0, "diagnosis"), "0 diagnoses");
        assert_eq!(plural(1, "diagnosis"), "1 diagnosis");
        assert_eq!(plural(2, "table read"), "2 table reads");
        assert_eq!(plural(0, "entry"), "0 entries");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(256 * 1024 * 1024), "256.0 MiB");
    }
}
