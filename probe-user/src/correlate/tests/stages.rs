//! TLS stages past the ServerHello: a handshake is followed until the
//! client's next flight when the stream reports flights, and a stall there
//! is its own symptom, never blamed on the neighbour or the server's TCP.

use super::*;
use crate::model::event::TlsClientFlight;

fn flight(record: &str) -> EventBody {
    EventBody::TlsClientFlight(TlsClientFlight {
        src: addr("10.9.0.1:40000"),
        dst: addr("10.9.0.100:6443"),
        iface: "eth0".into(),
        direction: "egress".into(),
        record: record.into(),
    })
}

fn following() -> Correlator {
    Correlator::new(Config {
        client_flights: true,
        ..Default::default()
    })
}

#[test]
fn a_handshake_whose_client_flight_goes_out_is_never_investigated() {
    let mut c = following();
    let (invs, diags) = run(
        &[
            ev(ms(0), hello(A)),
            ev(ms(20), server_hello()),
            ev(ms(25), flight("change_cipher_spec")),
            ev(ms(9000), garp(A)),
        ],
        &mut c,
    );
    assert!(invs.is_empty() && diags.is_empty(), "{invs:?} {diags:#?}");
}

#[test]
fn a_client_alert_ends_the_handshake_too() {
    let mut c = following();
    let (invs, _) = run(
        &[
            ev(ms(0), hello(A)),
            ev(ms(20), server_hello()),
            ev(ms(30), flight("alert")),
            ev(ms(9000), garp(A)),
        ],
        &mut c,
    );
    assert!(invs.is_empty(), "{invs:?}");
}

#[test]
fn a_stall_after_the_server_hello_is_its_own_symptom_without_a_fix() {
    let mut c = following();
    let (invs, diags) = run(
        &[
            ev(ms(0), hello(A)),
            ev(ms(20), server_hello()),
            ev(ms(3100), garp(A)),
            // The investigation's answer: a neighbour entry that would make
            // an unanswered hello look stale (another MAC claims the VIP).
            ev(ms(3400), handshake_snapshot(B, &[A, B])),
        ],
        &mut c,
    );
    assert_eq!(invs.len(), 1, "investigated 3 s after the ServerHello");
    assert_eq!(diags.len(), 1, "{diags:#?}");
    let d = &diags[0];
    assert_eq!(d.symptom, "tls_handshake_stalled");
    assert_eq!(d.stage.as_deref(), Some("server_hello"));
    assert_eq!(d.cause, "unknown", "the server answered: {d:#?}");
    assert!(d.fix.is_none(), "{d:#?}");
    assert!(
        d.detected_after_ms >= 3000 && d.detected_after_ms < 3500,
        "{d:#?}"
    );
    // The flight comes after all: recovered.
    let out = c.observe(&ev(ms(5000), flight("change_cipher_spec")));
    assert_eq!(out.recovered.len(), 1);
    assert_eq!(out.recovered[0].symptom, "tls_handshake_stalled");
}

#[test]
fn a_recording_without_flights_ends_handshakes_at_the_server_hello() {
    // Learnt from the stream: nothing says flights are reported.
    let mut c = Correlator::new(Config::default());
    let (invs, _) = run(
        &[
            ev(ms(0), hello(A)),
            ev(ms(20), server_hello()),
            ev(ms(9000), garp(A)),
        ],
        &mut c,
    );
    assert!(invs.is_empty());
    // Once a flight is seen, later handshakes are followed.
    let mut c = Correlator::new(Config::default());
    let EventBody::TlsClientHello(mut other) = hello(A) else {
        unreachable!()
    };
    other.src = addr("10.9.0.1:39000");
    let (invs, _) = run(
        &[
            ev(ms(0), EventBody::TlsClientHello(other.clone())),
            ev(
                ms(10),
                EventBody::TlsClientFlight(TlsClientFlight {
                    src: other.src,
                    dst: other.dst,
                    iface: "eth0".into(),
                    direction: "egress".into(),
                    record: "change_cipher_spec".into(),
                }),
            ),
            ev(ms(100), hello(A)),
            ev(ms(120), server_hello()),
            ev(ms(3200), garp(A)),
        ],
        &mut c,
    );
    assert_eq!(invs.len(), 1, "followed past its ServerHello: {invs:?}");
}
