//! netprobe runs for the bench: started from the root namespace and pointed
//! at a lab namespace with `--netns`, as an operator would; event helpers.

use std::process::Command;
use std::time::{Duration, Instant};

use netprobe_tests::cleanup::{bpf_held, bpf_programs};
use netprobe_tests::{Lab, Netprobe, netprobe};
use serde_json::Value;

/// Loading and attaching takes about a second; a loaded machine may be slower.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A netprobe that printed its ready line, and how long that took from exec.
pub struct Started {
    pub np: Netprobe,
    pub ready_after: Duration,
}

/// `$NETPROBE_BIN args...`; panics (with its output) unless ready in time.
pub fn start(args: &[&str]) -> Started {
    let mut c = Command::new(netprobe::binary());
    c.args(args);
    let t = Instant::now();
    let mut np = Netprobe::start_command(c);
    if let Err(e) = np.wait_ready(READY_TIMEOUT) {
        panic!("netprobe not ready: {e:#}");
    }
    Started {
        np,
        ready_after: t.elapsed(),
    }
}

/// `trace --json --netns NS` plus `extra`.
pub fn trace(netns: &str, extra: &[&str]) -> Started {
    let mut args = vec!["trace", "--json", "--netns", netns];
    args.extend_from_slice(extra);
    start(&args)
}

pub fn is(v: &Value, kind: &str) -> bool {
    v["type"] == kind
}

/// An event of type `kind` sent from one of `lab`'s endpoints.
pub fn lab_event(lab: &Lab, v: &Value, kind: &str) -> bool {
    is(v, kind) && v["src"].as_str().is_some_and(|s| lab.contains_endpoint(s))
}

/// The largest `lost` of the `stats` lines (the counter only grows).
pub fn lost(events: &[Value]) -> Option<u64> {
    events
        .iter()
        .filter(|v| is(v, "stats"))
        .filter_map(|v| v["lost"].as_u64())
        .max()
}

/// Id of the program called `name` this netprobe holds.
pub fn program_id(np: &Netprobe, name: &str) -> u32 {
    let held = bpf_held(Some(np.pid()));
    bpf_programs(&[name])
        .iter()
        .filter(|p| p["name"] == name)
        .filter_map(|p| p["id"].as_u64())
        .find(|id| held.progs.contains(id))
        .and_then(|id| u32::try_from(id).ok())
        .unwrap_or_else(|| panic!("netprobe (pid {}) holds no {name} program", np.pid()))
}

/// Seconds since the epoch of an event's `time` ("2026-11-21T12:00:00.123456Z").
pub fn event_secs(v: &Value) -> Option<f64> {
    let s = v["time"].as_str()?.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':').map(|x| x.parse::<f64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_times() {
        let v = |t: &str| serde_json::json!({ "time": t });
        assert_eq!(event_secs(&v("1970-01-02T00:00:01.5Z")), Some(86_401.5));
        let a = event_secs(&v("2026-02-28T23:59:59.000000Z")).unwrap();
        let b = event_secs(&v("2026-03-01T00:00:00.250000Z")).unwrap();
        assert!((b - a - 1.25).abs() < 1e-6, "{}", b - a);
        assert_eq!(event_secs(&v("12:00")), None);
    }
}
