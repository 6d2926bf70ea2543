//! `netprobe replay FILE`: the correlator over a recorded `--json` stream.
//! No kernel, no root: the recorded snapshots stand in for the kernel state
//! that was read live, so the same diagnoses come out.

use std::io::BufRead;

use anyhow::Context as _;

use crate::{
    correlate::{Config, Correlator},
    model::event::{Diagnosis, Event, EventBody},
};

#[derive(Default, Debug)]
pub struct Replayed {
    /// `diagnosis` events, timed by the snapshot that completed them.
    pub diagnoses: Vec<Event>,
    /// `recovered` events: diagnosed flows that moved again.
    pub recovered: Vec<Event>,
    /// Diagnoses the recording itself contains, for comparison.
    pub recorded: Vec<Diagnosis>,
    pub events: u64,
    /// Lines that were not netprobe events: (line number, reason).
    pub skipped: Vec<(usize, String)>,
}

/// Runs the stream through a fresh correlator, ticking at each event's time.
pub fn replay(input: impl BufRead, config: Config) -> anyhow::Result<Replayed> {
    let mut correlator = Correlator::new(config);
    let mut out = Replayed::default();
    for (i, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("reading line {}", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let event: Event = match serde_json::from_str(&line) {
            Ok(e) => e,
            Err(e) => {
                out.skipped.push((i + 1, e.to_string()));
                continue;
            }
        };
        out.events += 1;
        if let EventBody::Diagnosis(d) = &event.body {
            out.recorded.push((**d).clone());
            continue;
        }
        // Investigations are ignored: the recorded snapshots answer them.
        // The clock advances as the live run's did: deadlines, then quiet
        // storms, then the event.
        let time = event.time;
        let at = |body| Event {
            time,
            netns: None,
            body,
        };
        let _ = correlator.tick(time);
        out.recovered.extend(
            correlator
                .quiet_storms(time)
                .into_iter()
                .map(|r| at(EventBody::Recovered(r))),
        );
        let o = correlator.observe(&event);
        out.diagnoses.extend(
            o.diagnoses
                .into_iter()
                .map(|d| at(EventBody::Diagnosis(Box::new(d)))),
        );
        out.recovered
            .extend(o.recovered.into_iter().map(|r| at(EventBody::Recovered(r))));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_noise_and_counts_it() {
        let input = "not json\n\n{\"type\":\"stats\",\"time\":\"2026-11-21T12:00:00Z\",\"events\":1,\"lost\":0}\n{\"type\":\"bogus\",\"time\":\"2026-11-21T12:00:00Z\"}\n";
        let r = replay(input.as_bytes(), Config::default()).unwrap();
        assert_eq!(r.events, 1);
        assert_eq!(
            r.skipped.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![1, 4]
        );
        assert!(r.diagnoses.is_empty());
    }
}
