//! tcpdump inside a namespace: the wire-level ground truth a test compares
//! netprobe's claims with (segments, ARP replies, MACs).

use std::time::Duration;

use crate::background::{Background, Stream};
use crate::netns::Netns;

pub struct Sniffer {
    proc: Background,
}

impl Sniffer {
    /// `tcpdump -l -nn -e --immediate-mode -i iface filter` in `ns`; returns
    /// once tcpdump says it is listening (bounded 5 s). `-e` prints MACs,
    /// immediate mode avoids libpcap's batching delay.
    pub fn start(ns: &Netns, iface: &str, filter: &str) -> Sniffer {
        let mut args = vec![
            "tcpdump",
            "-l",
            "-nn",
            "-e",
            "--immediate-mode",
            "-i",
            iface,
        ];
        args.extend(filter.split_whitespace());
        let mut proc = Background::spawn(ns.command(args), &format!("tcpdump in {}", ns.name()));
        if proc
            .wait_line(
                Stream::Stderr,
                |l| l.contains("listening on"),
                Duration::from_secs(5),
            )
            .is_none()
        {
            panic!("tcpdump did not start: {}", proc.report());
        }
        Sniffer { proc }
    }

    /// Packet lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.proc.lines(Stream::Stdout)
    }

    /// Waits until `n` packet lines match `pred`; returns the matches so far.
    pub fn wait_for(
        &self,
        n: usize,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Vec<String> {
        let mut hits = 0;
        self.proc.wait_line(
            Stream::Stdout,
            |l| {
                hits += usize::from(pred(l));
                hits >= n
            },
            timeout,
        );
        self.lines().into_iter().filter(|l| pred(l)).collect()
    }

    /// Stops tcpdump and returns every packet line.
    pub fn stop(mut self) -> Vec<String> {
        self.proc.stop(Duration::from_secs(2));
        self.lines()
    }
}
