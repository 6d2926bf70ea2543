//! Text lines for an operator: `HH:MM:SS.micro` (UTC), a fixed-width tag,
//! then the event in a few words.

use std::fmt::{self, Display, Write as _};

use crate::model::event::{
    Arp, Event, EventBody, Neighbour, Recovered, Retransmit, Stats, TlsClientFlight,
    TlsClientHello, TlsHop, TlsServerHello,
};

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_event(f, self)
    }
}

/// Writes `e` as one line, without the newline.
pub fn write_event(f: &mut fmt::Formatter<'_>, e: &Event) -> fmt::Result {
    write!(f, "{} ", e.time.format("%H:%M:%S%.6f"))?;
    match &e.body {
        EventBody::Start(s) => {
            tag(f, "START")?;
            let off: Vec<&str> = s
                .capabilities
                .iter()
                .filter(|(_, on)| !**on)
                .map(|(c, _)| c.as_str())
                .collect();
            write!(
                f,
                "netprobe {} on {}, kernel {}{}{}",
                Clean(&s.netprobe),
                Clean(&s.node),
                Clean(&s.kernel),
                s.session_netns
                    .as_ref()
                    .map(|n| format!(", netns {}", Clean(&n.to_string())))
                    .unwrap_or_default(),
                if off.is_empty() {
                    String::new()
                } else {
                    format!(", without {}", off.join(", "))
                }
            )
        }
        EventBody::Retransmit(r) => retransmit(f, r),
        EventBody::Reset(r) => {
            tag(f, "RESET")?;
            write!(f, "{} <- {} (RST received)", r.src, r.dst)
        }
        EventBody::TlsClientHello(ch) => client_hello(f, ch),
        EventBody::TlsServerHello(sh) => server_hello(f, sh),
        EventBody::Neighbour(n) => neighbour(f, n),
        EventBody::Arp(a) => arp(f, a),
        EventBody::Stats(s) => stats(f, s),
        EventBody::Snapshot(s) => {
            tag(f, "STATE")?;
            f.write_str(&super::diagnosis::snapshot_line(s))
        }
        EventBody::Diagnosis(d) => f.write_str(&super::diagnosis::block(d, false)),
        EventBody::TlsHop(h) => hop(f, h),
        EventBody::TlsClientFlight(c) => client_flight(f, c),
        EventBody::Recovered(r) => recovered(f, r),
        EventBody::Drop(d) => {
            tag(f, "DROP")?;
            write!(
                f,
                "{} -> {} {} x{} at {}{}",
                d.src,
                d.dst,
                Clean(&d.reason),
                d.count,
                Clean(&d.location),
                owner(d.pod.as_deref(), None)
            )
        }
        EventBody::IcmpSent(i) => {
            tag(f, "ICMP-OUT")?;
            write!(
                f,
                "{} -> {} answered with ICMP {} (type {} code {}) x{}",
                i.src,
                i.dst,
                Clean(&i.message),
                i.icmp_type,
                i.code,
                i.count
            )
        }
        EventBody::SynackRetransmit(r) => {
            tag(f, "SYNACK")?;
            write!(
                f,
                "{} -> {} SYN-ACK retransmitted #{}",
                r.src, r.dst, r.count
            )
        }
        EventBody::ResetSent(r) => {
            tag(f, "RST-OUT")?;
            write!(
                f,
                "{} -> {} RST sent ({}, socket {}) x{}",
                r.src,
                r.dst,
                Clean(&r.reason),
                Clean(r.state.as_deref().unwrap_or("none")),
                r.count
            )
        }
    }?;
    if let Some(ns) = e.netns {
        write!(f, " netns={ns}")?;
    }
    Ok(())
}

fn tag(f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
    write!(f, "{name:<8} ")
}

fn retransmit(f: &mut fmt::Formatter<'_>, r: &Retransmit) -> fmt::Result {
    tag(f, "RETRANS")?;
    write!(f, "{} -> {} {} #{}", r.src, r.dst, Clean(&r.state), r.count)?;
    if let (Some(una), Some(nxt)) = (r.snd_una, r.snd_nxt) {
        write!(f, " inflight={}", nxt.wrapping_sub(una))?;
    }
    if let Some(why) = &r.not_sent {
        write!(f, " not sent: {}", Clean(why))?;
    }
    if let Some(p) = &r.process {
        write!(f, " pid={} ({})", p.pid, Clean(&p.comm))?;
    }
    write!(f, "{}", owner(r.pod.as_deref(), r.container.as_ref()))
}

/// ` pod NAMESPACE/NAME container NAME` (UID and container ID prefix where
/// the runtime did not name them), or nothing.
pub fn owner(
    pod: Option<&crate::model::pod::Pod>,
    container: Option<&crate::model::pod::Container>,
) -> String {
    let mut out = String::new();
    if let Some(pod) = pod {
        out.push_str(&format!(" pod {}", Clean(&pod.to_string())));
    }
    if let Some(c) = container {
        out.push_str(&format!(" container {}", Clean(&c.to_string())));
    }
    out
}

fn client_hello(f: &mut fmt::Formatter<'_>, ch: &TlsClientHello) -> fmt::Result {
    tag(f, "TLS CH")?;
    write!(f, "{} -> {} sni=", ch.src, ch.dst)?;
    match &ch.sni {
        Some(sni) => write!(f, "{}", Clean(sni))?,
        None => f.write_char('-')?,
    }
    write!(f, " via {} to {}", Clean(&ch.iface), ch.dst_mac)?;
    if ch.segments > 1 {
        write!(f, " ({} segments)", ch.segments)?;
    }
    Ok(())
}

fn server_hello(f: &mut fmt::Formatter<'_>, sh: &TlsServerHello) -> fmt::Result {
    tag(f, "TLS SH")?;
    write!(
        f,
        "{} -> {} version={} via {}",
        sh.src,
        sh.dst,
        // What was negotiated, when the extension says; else the body's.
        sh.selected_version
            .as_deref()
            .unwrap_or(&sh.handshake_version),
        Clean(&sh.iface)
    )
}

fn hop(f: &mut fmt::Formatter<'_>, h: &TlsHop) -> fmt::Result {
    tag(f, "TLS HOP")?;
    write!(
        f,
        "{} -> {} also via {} ({}) to {}",
        h.src,
        h.dst,
        Clean(&h.iface),
        Clean(&h.direction),
        h.dst_mac
    )
}

fn client_flight(f: &mut fmt::Formatter<'_>, c: &TlsClientFlight) -> fmt::Result {
    tag(f, "TLS FLIGHT")?;
    write!(
        f,
        "{} -> {} client's next flight ({}) on {}",
        c.src,
        c.dst,
        Clean(&c.record),
        Clean(&c.iface)
    )
}

fn recovered(f: &mut fmt::Formatter<'_>, r: &Recovered) -> fmt::Result {
    tag(f, "RECOVER")?;
    write!(
        f,
        "{} -> {} moves again {} ms after the {} verdict: {}",
        r.flow.src,
        r.flow.dst,
        r.after_ms,
        Clean(&r.cause),
        Clean(&r.how)
    )
}

fn neighbour(f: &mut fmt::Formatter<'_>, n: &Neighbour) -> fmt::Result {
    tag(f, "NEIGH")?;
    write!(
        f,
        "{} dev {} {} {} -> {} {}",
        n.ip,
        Clean(&n.dev),
        n.old_mac.as_deref().unwrap_or("-"),
        n.old_state,
        n.new_mac.as_deref().unwrap_or("-"),
        n.new_state
    )?;
    if !n.update_flags.is_empty() {
        write!(f, " [{}]", n.update_flags.join(","))?;
    }
    if n.pid != 0 {
        write!(f, " pid {}", n.pid)?;
    }
    Ok(())
}

fn arp(f: &mut fmt::Formatter<'_>, a: &Arp) -> fmt::Result {
    tag(f, "ARP")?;
    match a.op.as_str() {
        "request" => write!(
            f,
            "request who-has {} tell {} ({})",
            a.target_ip, a.sender_ip, a.sender_mac
        )?,
        "neighbour_advert" => write!(f, "advert {} is-at {}", a.sender_ip, a.sender_mac)?,
        op => write!(f, "{} {} is-at {}", Clean(op), a.sender_ip, a.sender_mac)?,
    }
    write!(f, " on {}", Clean(&a.iface))
}

fn stats(f: &mut fmt::Formatter<'_>, s: &Stats) -> fmt::Result {
    tag(f, "STATS")?;
    write!(f, "events={} lost={}", s.events, s.lost)?;
    if !s.lost_by_type.is_empty() {
        let by_type: Vec<String> = s
            .lost_by_type
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        write!(f, " ({})", by_type.join(" "))?;
    }
    if !s.skipped_by_kernel.is_empty() {
        let by_prog: Vec<String> = s
            .skipped_by_kernel
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        write!(f, " skipped_by_kernel({})", by_prog.join(" "))?;
    }
    if s.malformed > 0 {
        write!(f, " malformed={}", s.malformed)?;
    }
    if s.tls_incomplete > 0 {
        write!(f, " tls_incomplete={}", s.tls_incomplete)?;
    }
    if s.interfaces > 0 {
        write!(f, " interfaces={}", s.interfaces)?;
    }
    for (name, n) in [
        ("storms_other_netns", s.storms_other_netns),
        ("lookup_failures", s.lookup_failures),
        ("probes_sent", s.probes_sent),
        ("probes_skipped", s.probes_skipped),
        ("recovered", s.recovered),
    ] {
        if n > 0 {
            write!(f, " {name}={n}")?;
        }
    }
    if s.r#final {
        f.write_str(" final")?;
    }
    Ok(())
}

/// SNIs and device names come from the wire or the kernel and may hold
/// control characters; escape those so one event stays one terminal line.
pub(crate) struct Clean<'a>(pub(crate) &'a str);

impl Display for Clean<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::model::event::EventBody;
    use crate::sinks::output::samples;

    #[test]
    fn synack_retransmit_line() {
        let mut e = samples::retransmit();
        e.body = EventBody::SynackRetransmit(crate::model::event::SynackRetransmit {
            src: "10.0.0.2:6443".parse().unwrap(),
            dst: "10.0.0.1:40000".parse().unwrap(),
            count: 2,
        });
        assert_eq!(
            e.to_string(),
            "12:00:00.123456 SYNACK   10.0.0.2:6443 -> 10.0.0.1:40000 SYN-ACK retransmitted #2"
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "synack_retransmit");
    }

    #[test]
    fn retransmit_line() {
        assert_eq!(
            samples::retransmit().to_string(),
            "12:00:00.123456 RETRANS  10.0.0.1:40000 -> 10.0.0.2:8000 ESTABLISHED #3"
        );
        let mut e = samples::retransmit();
        if let EventBody::Retransmit(r) = &mut e.body {
            r.snd_una = Some(u32::MAX - 99);
            r.snd_nxt = Some(1348);
        }
        assert!(e.to_string().ends_with("#3 inflight=1448"), "{e}");
        if let EventBody::Retransmit(r) = &mut e.body {
            r.not_sent = Some("EHOSTUNREACH".into());
        }
        assert!(
            e.to_string()
                .ends_with("inflight=1448 not sent: EHOSTUNREACH"),
            "{e}"
        );
    }

    #[test]
    fn client_hello_line() {
        assert_eq!(
            samples::client_hello().to_string(),
            "12:00:00.123456 TLS CH   10.0.0.1:40000 -> 10.0.0.2:6443 sni=api.example \
             via eth0 to aa:bb:cc:dd:ee:ff (2 segments)"
        );
        let mut e = samples::client_hello();
        if let EventBody::TlsClientHello(ch) = &mut e.body {
            ch.sni = None;
            ch.segments = 1;
        }
        assert!(
            e.to_string()
                .ends_with("sni=- via eth0 to aa:bb:cc:dd:ee:ff"),
            "{e}"
        );
    }

    #[test]
    fn server_hello_line() {
        assert_eq!(
            samples::server_hello().to_string(),
            "12:00:00.123456 TLS SH   [fd00::2]:6443 -> [fd00::1]:40000 version=0x0303 via eth0"
        );
    }

    #[test]
    fn neighbour_line() {
        assert_eq!(
            samples::neighbour().to_string(),
            "12:00:00.123456 NEIGH    10.0.0.2 dev eth0 aa:bb:cc:dd:ee:ff REACHABLE -> \
             11:22:33:44:55:66 STALE [OVERRIDE] pid 1234"
        );
        let mut e = samples::neighbour();
        if let EventBody::Neighbour(n) = &mut e.body {
            n.old_mac = None;
            n.update_flags.clear();
            n.pid = 0;
        }
        assert!(
            e.to_string()
                .ends_with("eth0 - REACHABLE -> 11:22:33:44:55:66 STALE"),
            "{e}"
        );
    }

    #[test]
    fn arp_lines() {
        assert_eq!(
            samples::arp().to_string(),
            "12:00:00.123456 ARP      reply 10.0.0.2 is-at aa:bb:cc:dd:ee:ff on eth0"
        );
        let mut e = samples::arp();
        if let EventBody::Arp(a) = &mut e.body {
            a.op = "request".into();
        }
        assert!(
            e.to_string()
                .ends_with("request who-has 10.0.0.1 tell 10.0.0.2 (aa:bb:cc:dd:ee:ff) on eth0"),
            "{e}"
        );
        if let EventBody::Arp(a) = &mut e.body {
            a.op = "gratuitous".into();
        }
        assert!(
            e.to_string().contains("ARP      gratuitous 10.0.0.2 is-at"),
            "{e}"
        );
    }

    #[test]
    fn stats_line() {
        assert_eq!(
            samples::stats().to_string(),
            "12:00:00.123456 STATS    events=120 lost=2"
        );
        let mut e = samples::stats();
        if let EventBody::Stats(s) = &mut e.body {
            s.lost_by_type.insert("tls".into(), 2);
            s.tls_incomplete = 5;
            s.r#final = true;
        }
        assert!(
            e.to_string()
                .ends_with("lost=2 (tls=2) tls_incomplete=5 final"),
            "{e}"
        );
    }

    #[test]
    fn netns_and_control_characters() {
        let mut e = samples::client_hello();
        e.netns = Some(4026531840);
        if let EventBody::TlsClientHello(ch) = &mut e.body {
            ch.sni = Some("evil\n\x1b[2Jhost".into());
        }
        let line = e.to_string();
        assert!(!line.contains('\n') && !line.contains('\x1b'), "{line}");
        assert!(line.contains(r"sni=evil\n\u{1b}[2Jhost"), "{line}");
        assert!(line.ends_with(" netns=4026531840"), "{line}");
    }
}
