//! Counting from a recorded stream, and the text the registry encodes.

use super::*;
use crate::model::event::{Diagnosis, FlowRef, Stats};

const STREAM: &str = r#"{"type":"tls_client_hello","time":"2026-12-02T03:00:00.000000Z","src":"10.9.0.2:40000","dst":"10.9.0.1:6443","iface":"veth-c","src_mac":"02:00:00:00:00:02","dst_mac":"02:00:00:00:00:01","sni":"api","record_version":"0x0301","handshake_version":"0x0303","segments":1,"direction":"egress"}
{"type":"tls_client_hello","time":"2026-12-02T03:00:00.000100Z","src":"10.9.0.2:40000","dst":"10.9.0.1:6443","iface":"veth-s","src_mac":"02:00:00:00:00:02","dst_mac":"02:00:00:00:00:01","sni":"api","record_version":"0x0301","handshake_version":"0x0303","segments":1,"direction":"ingress"}
{"type":"tls_server_hello","time":"2026-12-02T03:00:00.003000Z","src":"10.9.0.1:6443","dst":"10.9.0.2:40000","iface":"veth-s","src_mac":"02:00:00:00:00:01","dst_mac":"02:00:00:00:00:02","record_version":"0x0303","handshake_version":"0x0303","direction":"egress"}
{"type":"tls_server_hello","time":"2026-12-02T03:00:00.003100Z","src":"10.9.0.1:6443","dst":"10.9.0.2:40000","iface":"veth-c","src_mac":"02:00:00:00:00:01","dst_mac":"02:00:00:00:00:02","record_version":"0x0303","handshake_version":"0x0303","direction":"ingress"}
{"type":"tls_client_hello","time":"2026-12-02T03:00:01.000000Z","src":"10.9.0.2:40002","dst":"10.96.0.1:443","iface":"veth-c","src_mac":"02:00:00:00:00:02","dst_mac":"02:00:00:00:00:01","sni":null,"record_version":"0x0301","handshake_version":"0x0303","segments":1,"direction":"egress"}
{"type":"retransmit","time":"2026-12-02T03:00:01.200000Z","src":"10.9.0.2:40002","dst":"10.96.0.1:443","state":"ESTABLISHED","count":1}
{"type":"retransmit","time":"2026-12-02T03:00:01.600000Z","src":"10.9.0.2:40002","dst":"10.96.0.1:443","state":"ESTABLISHED","count":2}
{"type":"neighbour","time":"2026-12-02T03:00:01.700000Z","ip":"10.9.0.1","dev":"veth-c","old_mac":"02:00:00:00:00:01","new_mac":"02:00:00:00:00:09","old_state":"REACHABLE","new_state":"STALE","update_flags":["OVERRIDE"],"pid":0}
{"type":"stats","time":"2026-12-02T03:00:02.000000Z","events":8,"lost":3,"lost_by_type":{"tls":1,"retransmit":2},"interfaces":4}
{"type":"stats","time":"2026-12-02T03:00:12.000000Z","events":8,"lost":5,"lost_by_type":{"tls":3,"retransmit":2},"interfaces":3}
"#;

fn recorded() -> Vec<Event> {
    STREAM
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn diagnosis(cause: &str) -> Event {
    let flow = FlowRef {
        src: "10.9.0.2:40002".parse().unwrap(),
        dst: "10.96.0.1:443".parse().unwrap(),
    };
    Event {
        time: at("2026-12-02T03:00:04Z"),
        netns: None,
        body: EventBody::Diagnosis(Box::new(Diagnosis::new(
            "tls_handshake_unanswered",
            cause,
            flow,
            "s",
        ))),
    }
}

/// Value of one sample line (`name{labels} value`) in the encoded text.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn counts_a_recorded_stream() {
    let metrics = Metrics::new();
    let mut rec = Recorder::new(metrics.clone(), Duration::from_secs(3));
    for e in recorded() {
        rec.observe(&e);
    }
    rec.observe(&diagnosis("stale_neighbour"));
    rec.observe(&diagnosis("something_new"));
    // The second hello (no ServerHello) is pending until the timeout.
    assert_eq!(rec.pending(), 2);
    rec.expire(at("2026-12-02T03:00:03.500Z"));
    let text = metrics.encode();
    assert_eq!(
        sample(
            &text,
            r#"netprobe_tls_handshakes_total{outcome="answered"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"netprobe_tls_handshakes_total{outcome="unanswered"}"#
        ),
        0.0
    );
    rec.expire(at("2026-12-02T03:00:04.001Z"));
    assert_eq!(rec.pending(), 0);
    let text = metrics.encode();
    assert_eq!(
        sample(
            &text,
            r#"netprobe_tls_handshakes_total{outcome="unanswered"}"#
        ),
        1.0
    );
    assert_eq!(sample(&text, "netprobe_tcp_retransmits_total"), 2.0);
    assert_eq!(sample(&text, "netprobe_neighbour_changes_total"), 1.0);
    assert_eq!(sample(&text, "netprobe_interfaces_attached"), 3.0);
    // Duplicates on the server's interface count once; 3 ms from the
    // first ClientHello copy to the first ServerHello copy.
    assert_eq!(
        sample(&text, "netprobe_tls_handshake_duration_seconds_count"),
        1.0
    );
    assert!((sample(&text, "netprobe_tls_handshake_duration_seconds_sum") - 0.003).abs() < 1e-9);
    assert_eq!(
        sample(
            &text,
            r#"netprobe_tls_handshake_duration_seconds_bucket{le="0.0025"}"#
        ),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            r#"netprobe_tls_handshake_duration_seconds_bucket{le="0.005"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&text, r#"netprobe_events_total{type="tls_client_hello"}"#),
        3.0
    );
    assert_eq!(sample(&text, r#"netprobe_events_total{type="stats"}"#), 2.0);
    assert_eq!(
        sample(&text, r#"netprobe_events_total{type="diagnosis"}"#),
        2.0
    );
    // Loss is cumulative in `stats`: the counter follows the latest total.
    assert_eq!(
        sample(&text, r#"netprobe_events_lost_total{type="tls"}"#),
        3.0
    );
    assert_eq!(
        sample(&text, r#"netprobe_events_lost_total{type="retransmit"}"#),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            r#"netprobe_diagnoses_total{cause="stale_neighbour"}"#
        ),
        1.0
    );
    // An unknown cause does not become a new series.
    assert_eq!(
        sample(&text, r#"netprobe_diagnoses_total{cause="other"}"#),
        1.0
    );
    assert!(!text.contains("something_new"));
}

#[test]
fn no_flow_in_any_label_and_cardinality_bounded() {
    let metrics = Metrics::new();
    let mut rec = Recorder::new(metrics.clone(), Duration::from_secs(3));
    let events = recorded();
    // Many distinct flows: the series count must not follow them.
    for port in 0..2000u16 {
        for e in &events {
            let mut e = e.clone();
            if let EventBody::TlsClientHello(h) = &mut e.body {
                h.src.set_port(10_000 + port);
            }
            rec.observe(&e);
        }
    }
    rec.expire(at("2026-12-02T04:00:00Z"));
    let text = metrics.encode();
    let series = text.lines().filter(|l| !l.starts_with('#')).count();
    assert!(series < 80, "{series} series:\n{text}");
    for needle in ["10.9.0", "veth", "6443", "02:00"] {
        assert!(!text.contains(needle), "{needle} leaked into labels");
    }
    assert_eq!(
        sample(
            &text,
            r#"netprobe_tls_handshakes_total{outcome="unanswered"}"#
        ),
        2000.0
    );
}

#[test]
fn pending_map_is_bounded() {
    let metrics = Metrics::new();
    let mut rec = Recorder::new(metrics.clone(), Duration::from_secs(3));
    let EventBody::TlsClientHello(hello) = recorded().remove(0).body else {
        panic!()
    };
    let t = at("2026-12-02T03:00:00Z");
    for i in 0..(MAX_PENDING as u32 + 10) {
        let mut h = hello.clone();
        h.src = SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000 + i), 40000));
        rec.observe(&Event {
            time: t,
            netns: None,
            body: EventBody::TlsClientHello(h),
        });
    }
    assert_eq!(rec.pending(), MAX_PENDING);
    let text = metrics.encode();
    assert_eq!(
        sample(
            &text,
            r#"netprobe_tls_handshakes_total{outcome="untracked"}"#
        ),
        10.0
    );
}

#[test]
fn text_format_has_help_and_type_for_every_contract_metric() {
    let text = Metrics::new().encode();
    for (name, kind) in [
        ("netprobe_tcp_retransmits_total", "counter"),
        ("netprobe_tls_handshakes_total", "counter"),
        ("netprobe_tls_handshake_duration_seconds", "histogram"),
        ("netprobe_diagnoses_total", "counter"),
        ("netprobe_events_total", "counter"),
        ("netprobe_events_lost_total", "counter"),
        ("netprobe_neighbour_changes_total", "counter"),
    ] {
        assert!(
            text.contains(&format!("\n# TYPE {name} {kind}\n"))
                || text.starts_with(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind} missing in\n{text}"
        );
        assert!(text.contains(&format!("# HELP {name} ")), "{name}");
    }
    // Series exist before anything happened.
    assert_eq!(
        sample(&text, r#"netprobe_diagnoses_total{cause="packet_loss"}"#),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            r#"netprobe_tls_handshake_duration_seconds_bucket{le="+Inf"}"#
        ),
        0.0
    );
}

#[test]
fn type_names_are_the_listed_ones() {
    for e in recorded() {
        assert!(EVENT_TYPES.contains(&type_name(&e.body)));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], type_name(&e.body));
    }
}

#[test]
fn tee_counts_and_forwards() {
    struct Keep(Vec<Event>);
    impl Consumer for Keep {
        fn event(&mut self, event: &Event) -> std::io::Result<Flow> {
            self.0.push(event.clone());
            Ok(Flow::Continue)
        }
    }
    let metrics = Metrics::new();
    let mut keep = Keep(Vec::new());
    let mut tee = Tee {
        recorder: Recorder::new(metrics.clone(), Duration::from_secs(3)),
        inner: &mut keep,
    };
    let stats = Event {
        time: at("2026-12-02T03:00:00Z"),
        netns: None,
        body: EventBody::Stats(Stats::default()),
    };
    assert_eq!(tee.event(&stats).unwrap(), Flow::Continue);
    assert_eq!(keep.0, vec![stats]);
    assert_eq!(
        sample(&metrics.encode(), r#"netprobe_events_total{type="stats"}"#),
        1.0
    );
}

#[test]
fn every_cause_the_correlator_names_has_its_own_label() {
    let mut names: Vec<&str> = crate::correlate::Cause::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    let mut labels: Vec<&str> = super::CAUSES.to_vec();
    names.sort();
    labels.sort();
    assert_eq!(names, labels);
}
