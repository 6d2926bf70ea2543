//! Reading a `netprobe trace --json` run of a lab: event predicates, the
//! lab's share of the stream for failure messages, and [`Trace`], netprobe
//! started on one lab namespace (optionally recorded as a replay fixture).

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

use crate::{Lab, Netns, Netprobe, Stopped, netprobe::endpoint};

/// Loading and attaching takes a few seconds on 2 cores; bound it generously.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Set to 1 to save the JSON streams as fixtures.
pub const RECORD_ENV: &str = "NETPROBE_RECORD_FIXTURES";

// ---------------------------------------------------------------------------
// Reading netprobe's events
// ---------------------------------------------------------------------------

/// Seconds since the epoch of an RFC 3339 UTC `time` field
/// ("2026-11-21T12:00:00.123456Z"); panics on anything else.
pub fn event_time(v: &Value) -> f64 {
    let s = v["time"]
        .as_str()
        .unwrap_or_else(|| panic!("event without a time: {v}"));
    parse_rfc3339_utc(s).unwrap_or_else(|| panic!("bad time {s:?} in {v}"))
}

pub fn parse_rfc3339_utc(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':');
    let h: f64 = t.next()?.parse().ok()?;
    let min: f64 = t.next()?.parse().ok()?;
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + sec)
}

pub fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

pub fn is_type(v: &Value, t: &str) -> bool {
    v["type"] == t
}

pub fn ep(v: &Value) -> Option<SocketAddr> {
    endpoint(v).ok()
}

pub fn is_diagnosis_for_dst(v: &Value, dst: SocketAddr) -> bool {
    is_type(v, "diagnosis") && ep(&v["flow"]["dst"]) == Some(dst)
}

pub fn is_diagnosis_for_src(v: &Value, src: SocketAddr) -> bool {
    is_type(v, "diagnosis") && ep(&v["flow"]["src"]) == Some(src)
}

/// Every IP address written anywhere in `v` (fields, evidence sentences,
/// "ip:port", "[v6]:port", "10.1.2.0/24"), found by splitting its strings
/// into address-shaped tokens. MACs and clock times do not parse as IPs.
pub fn addresses_in(v: &Value, out: &mut Vec<IpAddr>) {
    match v {
        Value::String(s) => {
            for tok in s.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':')) {
                let tok = tok.trim_matches(|c| c == '.' || c == ':');
                if let Ok(ip) = tok.parse::<IpAddr>() {
                    out.push(ip);
                } else if let Ok(sa) = tok.parse::<SocketAddr>() {
                    out.push(sa.ip());
                } else if let Some(ip) = tok
                    .rsplit_once(':')
                    .filter(|(_, port)| port.parse::<u16>().is_ok())
                    .and_then(|(host, _)| host.parse::<std::net::Ipv4Addr>().ok())
                {
                    out.push(ip.into());
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| addresses_in(x, out)),
        Value::Object(o) => o.values().for_each(|x| addresses_in(x, out)),
        _ => {}
    }
}

/// True when every address `v` names belongs to `lab` (or is 0.0.0.0 / ::,
/// which names nobody: the sender of netprobe's ARP probe).
pub fn only_lab_addresses(lab: &Lab, v: &Value) -> bool {
    let mut ips = Vec::new();
    addresses_in(v, &mut ips);
    ips.iter()
        .all(|ip| ip.is_unspecified() || lab.contains(*ip))
}

/// True when `v` names at least one of the lab's addresses or MACs.
pub fn mentions_lab(lab: &Lab, v: &Value) -> bool {
    let mut ips = Vec::new();
    addresses_in(v, &mut ips);
    let mac_prefix = format!("02:6e:70:{:02x}:", lab.octet());
    ips.iter().any(|ip| lab.contains(*ip)) || v.to_string().contains(&mac_prefix)
}

/// The lab's share of a run, for failure messages.
pub fn report(lab: &Lab, events: &[Value], stderr: &str) -> String {
    let mine: Vec<String> = events
        .iter()
        .filter(|v| {
            is_type(v, "diagnosis")
                || is_type(v, "snapshot")
                || is_type(v, "stats")
                || mentions_lab(lab, v)
        })
        .map(Value::to_string)
        .collect();
    const MAX: usize = 400;
    let shown = &mine[mine.len().saturating_sub(MAX)..];
    let tail: Vec<&str> = stderr.lines().rev().take(80).collect();
    format!(
        "--- netprobe events of this lab ({} of {}; last {} shown) ---\n{}\n\
         --- netprobe stderr (last {} lines) ---\n{}",
        mine.len(),
        events.len(),
        shown.len(),
        shown.join("\n"),
        tail.len(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

/// A running `netprobe trace --json --netns NS`, for one lab. Dropped while
/// the test panics, it prints what netprobe printed.
pub struct Trace<'a> {
    pub np: Netprobe,
    lab: &'a Lab,
    /// Fixture name, if this run is recorded.
    fixture: Option<&'static str>,
    started: Instant,
}

impl<'a> Trace<'a> {
    /// Started from the root namespace and pointed at `ns`, as an operator
    /// points it at a node or pod namespace.
    pub fn start(lab: &'a Lab, ns: &Netns, fixture: Option<&'static str>) -> Trace<'a> {
        Self::start_with(lab, ns, fixture, &[])
    }

    /// Like [`Trace::start`], with more arguments for `netprobe trace`.
    pub fn start_with(
        lab: &'a Lab,
        ns: &Netns,
        fixture: Option<&'static str>,
        extra: &[&str],
    ) -> Trace<'a> {
        let t = Instant::now();
        let mut args = vec![
            "trace",
            "--json",
            "--netns",
            ns.name(),
            "--handshake-timeout",
            "3s",
        ];
        args.extend_from_slice(extra);
        let mut np = Netprobe::start(args);
        if let Err(e) = np.wait_ready(READY_TIMEOUT) {
            panic!("netprobe did not get ready: {e:#}");
        }
        eprintln!(
            "netprobe ready in {:?} (--netns {})",
            t.elapsed(),
            ns.name()
        );
        Trace {
            np,
            lab,
            fixture,
            started: Instant::now(),
        }
    }

    pub fn report(&self) -> String {
        report(self.lab, &self.np.events(), &self.np.stderr())
    }

    /// The first event matching `pred` within `timeout`; panics with the
    /// report when none comes.
    pub fn expect(&self, what: &str, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        self.np.wait_for(&pred, timeout).unwrap_or_else(|| {
            panic!(
                "netprobe printed no {what} within {timeout:?}\n{}",
                self.report()
            )
        })
    }

    /// curl from `ns` to `api` whose TLS handshake must stall after TCP
    /// connected (curl gives up after `curl_timeout`), then the diagnosis
    /// netprobe gives for that flow; panics with the report otherwise.
    pub fn stalled_handshake(&self, ns: &Netns, api: SocketAddr, curl_timeout: Duration) -> Value {
        let r = crate::peers::curl_https(ns, api.ip(), api.port(), "kubernetes", curl_timeout);
        assert!(
            r.tcp_connected && !r.tls_done,
            "want TCP connected and the TLS handshake stalled: {}",
            r.report
        );
        self.expect(
            "diagnosis for the stalled handshake",
            |v| is_type(v, "diagnosis") && ep(&v["flow"]["dst"]) == Some(api),
            Duration::from_secs(10),
        )
    }

    pub fn events(&self) -> Vec<Value> {
        self.np.events()
    }

    /// Diagnoses of this lab's flows so far.
    pub fn lab_diagnoses(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|v| is_type(v, "diagnosis") && mentions_lab(self.lab, &v["flow"]))
            .collect()
    }

    /// Ctrl-C; saves the fixture when recording. Returns what it printed.
    pub fn stop(mut self) -> Stopped {
        let s = self.np.stop();
        if !s.clean_exit() {
            eprintln!(
                "note: netprobe did not exit cleanly on SIGINT (status {:?}, killed {})",
                s.status, s.killed
            );
        }
        if let Some(name) = self.fixture.take() {
            record_fixture(self.lab, name, &s.events);
        }
        s
    }
}

impl Drop for Trace<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "netprobe ran {:?}; what it printed:\n{}",
                self.started.elapsed(),
                self.report()
            );
        }
    }
}

/// Writes the run's JSON lines to tests/fixtures/NAME.jsonl when
/// NETPROBE_RECORD_FIXTURES=1. Retransmit tracepoints are global, so events
/// of flows outside this lab (the machine's own traffic) are left out: a
/// fixture holds lab addresses only.
pub fn record_fixture(lab: &Lab, name: &str, events: &[Value]) {
    if std::env::var(RECORD_ENV).as_deref() != Ok("1") {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let kept: Vec<String> = events
        .iter()
        .filter(|v| only_lab_addresses(lab, v))
        .map(Value::to_string)
        .collect();
    for v in events.iter().filter(|v| !only_lab_addresses(lab, v)) {
        let mut ips = Vec::new();
        addresses_in(v, &mut ips);
        ips.retain(|ip| !ip.is_unspecified() && !lab.contains(*ip));
        eprintln!("not recorded ({} names {ips:?})", v["type"]);
    }
    let path = dir.join(format!("{name}.jsonl"));
    std::fs::write(&path, kept.join("\n") + "\n")
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    eprintln!(
        "recorded {} of {} events to {}",
        kept.len(),
        events.len(),
        path.display()
    );
}

/// A diagnosis's fix without the namespace netprobe makes it act in
/// (`ip -n NS ...`, `nsenter --net=/run/netns/NS ...`, NS being the
/// diagnosis's `netns`), so tests can check the command itself. Panics
/// when a namespace-bound command of the fix does not name that namespace:
/// pasted on the node it would act on the node's own.
pub fn bare_fix(d: &Value) -> String {
    let fix = d["fix"].as_str().unwrap_or_default().to_string();
    let Some(ns) = d["netns"].as_str() else {
        return fix;
    };
    let bare = fix
        .replace(&format!("ip -n {ns} "), "ip ")
        .replace(&format!("nsenter --net=/run/netns/{ns} "), "");
    let command = bare.split("  #").next().unwrap_or_default();
    for part in command.split([';', '|']) {
        let word = part.split_whitespace().next().unwrap_or_default();
        let bound = ["ip", "conntrack", "nft", "ss", "iptables"].contains(&word);
        let named = fix.contains(&format!("ip -n {ns} "))
            || fix.contains(&format!("nsenter --net=/run/netns/{ns} {word}"));
        assert!(
            !bound || named,
            "fix {fix:?} runs {word} without naming netns {ns}: {d}"
        );
    }
    bare
}

pub fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse() {
        let t = parse_rfc3339_utc("1970-01-02T00:00:01.5Z").unwrap();
        assert!((t - 86_401.5).abs() < 1e-6, "{t}");
        let t = parse_rfc3339_utc("2026-11-21T12:00:00.123456Z").unwrap();
        assert!((t - 1_795_262_400.123_456).abs() < 1e-3, "{t}");
        assert!(parse_rfc3339_utc("2026-11-21 12:00:00").is_none());
    }

    #[test]
    fn addresses_are_found_in_sentences() {
        let v = serde_json::json!({
            "src": "10.201.0.1:40000",
            "evidence": ["neighbour fd00:10:201::100 dev eth0: 02:6e:70:c9:00:03 STALE at 12:00:01.250",
                         "route to 10.201.2.0/24 via [fd00::1]:443, x 8.8.8.8."]
        });
        let mut ips = Vec::new();
        addresses_in(&v, &mut ips);
        let got: Vec<String> = ips.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "fd00:10:201::100",
                "10.201.2.0",
                "fd00::1",
                "8.8.8.8",
                "10.201.0.1"
            ]
        );
    }
}
