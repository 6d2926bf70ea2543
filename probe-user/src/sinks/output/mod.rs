//! Sinks for decoded events: one line per event on stdout, as readable text
//! or as JSON (the `--json` contract in shared/design.md).

pub mod diagnosis;
pub mod json;
pub mod text;

use std::io::{self, BufWriter, IsTerminal as _, Stdout, Write};

use crate::model::event::{Event, EventBody};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// Writes events one line each into a buffer that the session flushes once
/// per wake-up (a batch of ring-buffer records, a tick): `netprobe trace
/// --json | jq` still shows them as they happen, and a flood costs one
/// write(2) per batch instead of one per line.
#[derive(Debug)]
pub struct Sink<W: Write = Stdout> {
    format: Format,
    out: BufWriter<W>,
    /// Colour diagnoses (text on a terminal only).
    colour: bool,
}

impl Sink<Stdout> {
    pub fn stdout(format: Format) -> Self {
        let mut sink = Self::new(format, io::stdout());
        sink.colour = format == Format::Text
            && io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none();
        sink
    }
}

impl<W: Write> Sink<W> {
    pub fn new(format: Format, out: W) -> Self {
        Self {
            format,
            out: BufWriter::new(out),
            colour: false,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Writes one line (buffered: see [`Sink::flush`]). When the reader has
    /// gone away (`| head`) this or the flush fails with an error for which
    /// [`is_broken_pipe`] is true.
    pub fn emit(&mut self, e: &Event) -> io::Result<()> {
        match self.format {
            Format::Text => match &e.body {
                EventBody::Diagnosis(d) => {
                    writeln!(self.out, "{}", diagnosis::block(d, self.colour))?
                }
                _ => writeln!(self.out, "{e}")?,
            },
            Format::Json => json::write_json_line(&mut self.out, e)?,
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// What `trace --diagnoses-only` passes on: the verdicts, what frames the
/// stream (`start`, the final `stats`), nothing per packet.
pub fn is_verdict(e: &Event) -> bool {
    match &e.body {
        EventBody::Start(_) | EventBody::Diagnosis(_) | EventBody::Recovered(_) => true,
        EventBody::Stats(s) => s.r#final,
        _ => false,
    }
}

/// A consumer that passes on only the events `keep` accepts.
pub struct Only<'c> {
    pub keep: fn(&Event) -> bool,
    pub inner: &'c mut dyn crate::sinks::Consumer,
}

impl crate::sinks::Consumer for Only<'_> {
    fn event(&mut self, event: &Event) -> io::Result<crate::sinks::Flow> {
        if (self.keep)(event) {
            self.inner.event(event)
        } else {
            Ok(crate::sinks::Flow::Continue)
        }
    }

    fn tick(&mut self, now: chrono::DateTime<chrono::Utc>) -> io::Result<crate::sinks::Flow> {
        self.inner.tick(now)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The reading end of stdout is closed: stop quietly rather than report it.
/// (Rust ignores SIGPIPE, so this arrives as EPIPE.)
pub fn is_broken_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

/// One event of each kind, shared by the sink tests.
#[cfg(test)]
pub(crate) mod samples {
    use chrono::{DateTime, Utc};

    use crate::model::event::*;

    pub fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T12:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn event(body: EventBody) -> Event {
        Event {
            body,
            time: at(),
            netns: None,
        }
    }

    pub fn retransmit() -> Event {
        event(EventBody::Retransmit(Retransmit {
            src: "10.0.0.1:40000".parse().unwrap(),
            dst: "10.0.0.2:8000".parse().unwrap(),
            state: "ESTABLISHED".into(),
            count: 3,
            snd_una: None,
            snd_nxt: None,
            not_sent: None,
            process: None,
            pod: None,
            container: None,
        }))
    }

    pub fn client_hello() -> Event {
        event(EventBody::TlsClientHello(TlsClientHello {
            src: "10.0.0.1:40000".parse().unwrap(),
            dst: "10.0.0.2:6443".parse().unwrap(),
            iface: "eth0".into(),
            src_mac: "02:00:00:00:00:01".into(),
            dst_mac: "aa:bb:cc:dd:ee:ff".into(),
            sni: Some("api.example".into()),
            record_version: "0x0301".into(),
            handshake_version: "0x0303".into(),
            segments: 2,
            direction: "egress".into(),
            partial: false,
        }))
    }

    pub fn server_hello() -> Event {
        event(EventBody::TlsServerHello(TlsServerHello {
            src: "[fd00::2]:6443".parse().unwrap(),
            dst: "[fd00::1]:40000".parse().unwrap(),
            iface: "eth0".into(),
            src_mac: "aa:bb:cc:dd:ee:ff".into(),
            dst_mac: "02:00:00:00:00:01".into(),
            record_version: "0x0303".into(),
            handshake_version: "0x0303".into(),
            selected_version: None,
            direction: "ingress".into(),
        }))
    }

    pub fn neighbour() -> Event {
        event(EventBody::Neighbour(Neighbour {
            ip: "10.0.0.2".parse().unwrap(),
            dev: "eth0".into(),
            old_mac: Some("aa:bb:cc:dd:ee:ff".into()),
            new_mac: Some("11:22:33:44:55:66".into()),
            old_state: "REACHABLE".into(),
            new_state: "STALE".into(),
            update_flags: vec!["OVERRIDE".into()],
            pid: 1234,
        }))
    }

    pub fn arp() -> Event {
        event(EventBody::Arp(Arp {
            iface: "eth0".into(),
            op: "reply".into(),
            sender_ip: "10.0.0.2".parse().unwrap(),
            sender_mac: "aa:bb:cc:dd:ee:ff".into(),
            target_ip: "10.0.0.1".parse().unwrap(),
            eth_src: "aa:bb:cc:dd:ee:ff".into(),
            eth_dst: "02:00:00:00:00:01".into(),
            direction: "ingress".into(),
        }))
    }

    pub fn stats() -> Event {
        event(EventBody::Stats(Stats {
            events: 120,
            lost: 2,
            ..Stats::default()
        }))
    }

    pub fn all() -> Vec<Event> {
        vec![
            retransmit(),
            client_hello(),
            server_hello(),
            neighbour(),
            arp(),
            stats(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_sink_writes_one_line_per_event() {
        let mut sink = Sink::new(Format::Text, Vec::new());
        for e in samples::all() {
            sink.emit(&e).unwrap();
        }
        sink.flush().unwrap();
        let out = String::from_utf8(sink.out.get_ref().clone()).unwrap();
        assert_eq!(out.lines().count(), samples::all().len());
        assert!(out.starts_with("12:00:00.123456 RETRANS  10.0.0.1:40000"));
    }

    #[test]
    fn json_sink_lines_parse_back() {
        let mut sink = Sink::new(Format::Json, Vec::new());
        for e in samples::all() {
            sink.emit(&e).unwrap();
        }
        sink.flush().unwrap();
        let out = String::from_utf8(sink.out.get_ref().clone()).unwrap();
        let back: Vec<Event> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back, samples::all());
    }

    #[test]
    fn lines_reach_the_writer_at_the_flush() {
        /// Records what reached the underlying writer.
        struct Spy(Vec<u8>);
        impl Write for Spy {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut sink = Sink::new(Format::Json, Spy(Vec::new()));
        sink.emit(&samples::stats()).unwrap();
        sink.emit(&samples::arp()).unwrap();
        assert!(sink.out.get_ref().0.is_empty(), "buffered until the flush");
        sink.flush().unwrap();
        let written = String::from_utf8(sink.out.get_ref().0.clone()).unwrap();
        assert_eq!(written.lines().count(), 2, "{written}");
        assert!(written.ends_with('\n'));
    }

    #[test]
    fn diagnoses_only_keeps_verdicts_and_the_frame() {
        use crate::sinks::{Consumer, Flow};
        #[derive(Default)]
        struct Kept(Vec<Event>);
        impl Consumer for Kept {
            fn event(&mut self, e: &Event) -> io::Result<Flow> {
                self.0.push(e.clone());
                Ok(Flow::Continue)
            }
        }
        let mut kept = Kept::default();
        let mut only = Only {
            keep: is_verdict,
            inner: &mut kept,
        };
        for e in samples::all() {
            only.event(&e).unwrap();
        }
        let mut last = samples::stats();
        if let EventBody::Stats(s) = &mut last.body {
            s.r#final = true;
        }
        only.event(&last).unwrap();
        assert_eq!(kept.0, vec![last]);
    }

    #[test]
    fn closed_pipe_is_recognisable() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        for format in [Format::Text, Format::Json] {
            let mut sink = Sink::new(format, Closed);
            sink.emit(&samples::arp()).unwrap();
            let err = sink.flush().unwrap_err();
            assert!(is_broken_pipe(&err), "{format:?}: {err}");
        }
        assert!(!is_broken_pipe(&io::Error::other("disk full")));
    }
}
