//! JSON lines: one [`Event`] object per line (shared/design.md).

use std::io::{self, Write};

use crate::model::event::Event;

/// Writes `e` and a newline; flushing is the caller's job.
pub fn write_json_line(w: &mut impl Write, e: &Event) -> io::Result<()> {
    serde_json::to_writer(&mut *w, e)?;
    w.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::sinks::output::samples;

    fn render(e: &Event) -> (String, Value) {
        let mut buf = Vec::new();
        write_json_line(&mut buf, e).unwrap();
        let line = String::from_utf8(buf).unwrap();
        let v = serde_json::from_str(line.trim_end()).unwrap();
        (line, v)
    }

    fn assert_fields(e: &Event, kind: &str, fields: &[&str]) {
        let (line, v) = render(e);
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "{line}"
        );
        assert_eq!(v["type"], kind, "{line}");
        assert_eq!(v["time"], "2026-11-21T12:00:00.123456Z", "{line}");
        for f in fields {
            assert!(v.get(f).is_some(), "{kind} lacks {f}: {line}");
        }
    }

    #[test]
    fn every_type_has_its_contract_fields() {
        let contract: [(Event, &str, &[&str]); 6] = [
            (
                samples::retransmit(),
                "retransmit",
                &["src", "dst", "state", "count"],
            ),
            (
                samples::client_hello(),
                "tls_client_hello",
                &["src", "dst", "iface", "dst_mac", "sni"],
            ),
            (
                samples::server_hello(),
                "tls_server_hello",
                &["src", "dst", "iface"],
            ),
            (
                samples::neighbour(),
                "neighbour",
                &["ip", "dev", "old_mac", "new_mac", "old_state", "new_state"],
            ),
            (
                samples::arp(),
                "arp",
                &["iface", "op", "sender_ip", "sender_mac"],
            ),
            (samples::stats(), "stats", &["events", "lost"]),
        ];
        for (e, kind, fields) in &contract {
            assert_fields(e, kind, fields);
        }
    }

    #[test]
    fn addresses_and_values_follow_the_contract() {
        let (_, v) = render(&samples::server_hello());
        assert_eq!(v["src"], "[fd00::2]:6443");
        let (_, v) = render(&samples::client_hello());
        assert_eq!(v["dst"], "10.0.0.2:6443");
        assert_eq!(v["dst_mac"], "aa:bb:cc:dd:ee:ff");
        assert_eq!(v["sni"], "api.example");
        let (_, v) = render(&samples::neighbour());
        assert_eq!(v["ip"], "10.0.0.2");
        assert_eq!(v["old_state"], "REACHABLE");
    }

    #[test]
    fn missing_values_are_null_not_absent() {
        let mut e = samples::client_hello();
        if let crate::model::event::EventBody::TlsClientHello(ch) = &mut e.body {
            ch.sni = None;
        }
        let (_, v) = render(&e);
        assert!(v["sni"].is_null() && v.get("sni").is_some());

        let mut e = samples::neighbour();
        if let crate::model::event::EventBody::Neighbour(n) = &mut e.body {
            n.old_mac = None;
        }
        let (_, v) = render(&e);
        assert!(v["old_mac"].is_null() && v.get("old_mac").is_some());
    }

    #[test]
    fn netns_only_when_known() {
        let (_, v) = render(&samples::arp());
        assert!(v.get("netns").is_none());
        let mut e = samples::arp();
        e.netns = Some(4026531840);
        let (_, v) = render(&e);
        assert_eq!(v["netns"], 4026531840u64);
    }
}
