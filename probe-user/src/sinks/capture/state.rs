//! neighbours.json and conntrack.json: the namespace's whole neighbour and
//! conntrack tables, read at the start and at each diagnosis. Each file is
//! a JSON array of `{time, reason, error, entries}` that stays valid after
//! every append (the closing bracket is rewritten each time).

use std::io::{self, SeekFrom, Write};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::state::{self, ConntrackEntry, NeighbourEntry, conntrack::Family};

/// Both tables as read at one moment.
#[derive(Debug)]
pub struct Tables {
    pub time: DateTime<Utc>,
    pub reason: String,
    pub neighbours: Result<Vec<NeighbourEntry>, String>,
    pub conntrack: Result<Vec<ConntrackEntry>, String>,
}

/// Reads both tables of the current namespace; failures are kept as text.
pub async fn read(reason: String) -> Tables {
    let time = Utc::now();
    let neighbours = state::neighbours::all().await.map_err(|e| e.to_string());
    let conntrack = match tokio::task::spawn_blocking(|| state::conntrack::dump(Family::Any)).await
    {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("conntrack dump task: {e}")),
    };
    Tables {
        time,
        reason,
        neighbours,
        conntrack,
    }
}

/// One array element, entries one per line so that grep finds them.
pub fn element<T: Serialize>(
    time: DateTime<Utc>,
    reason: &str,
    entries: &Result<Vec<T>, String>,
) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    write!(
        out,
        "{{\"time\":{},\"reason\":{},\"error\":{},\"entries\":[",
        serde_json::to_string(&time.to_rfc3339_opts(SecondsFormat::Micros, true))?,
        serde_json::to_string(reason)?,
        serde_json::to_string(&entries.as_ref().err())?,
    )?;
    let list: &[T] = entries.as_deref().unwrap_or(&[]);
    for (i, e) in list.iter().enumerate() {
        out.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
        serde_json::to_writer(&mut out, e)?;
    }
    out.extend_from_slice(if list.is_empty() { b"]}" } else { b"\n]}" });
    Ok(out)
}

/// An element saying a table was not written (size cap).
pub fn skipped(time: DateTime<Utc>, reason: &str, why: &str) -> io::Result<Vec<u8>> {
    element::<()>(time, reason, &Err(why.to_string()))
}

/// A JSON array file, valid after each append.
pub struct JsonArray<F: Write + io::Seek> {
    file: F,
    /// Offset of the closing `]`.
    close_at: u64,
    pub elements: u64,
}

impl<F: Write + io::Seek> JsonArray<F> {
    pub fn new(mut file: F) -> io::Result<Self> {
        file.write_all(b"[\n]\n")?;
        Ok(Self {
            file,
            close_at: 2,
            elements: 0,
        })
    }

    /// Bytes the file holds.
    pub fn bytes(&self) -> u64 {
        self.close_at + 2
    }

    /// Bytes [`JsonArray::push`] of `element` adds.
    pub fn growth(&self, element: &[u8]) -> u64 {
        element.len() as u64 + if self.elements > 0 { 2 } else { 0 } + 1
    }

    /// Appends one element (serialised JSON).
    pub fn push(&mut self, element: &[u8]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(element.len() + 5);
        if self.elements > 0 {
            buf.extend_from_slice(b",\n");
        }
        buf.extend_from_slice(element);
        buf.extend_from_slice(b"\n]\n");
        self.file.seek(SeekFrom::Start(self.close_at))?;
        self.file.write_all(&buf)?;
        self.file.flush()?;
        self.close_at += buf.len() as u64 - 2;
        self.elements += 1;
        Ok(())
    }

    pub fn into_inner(self) -> F {
        self.file
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn entry(ip: &str, mac: Option<&str>) -> NeighbourEntry {
        NeighbourEntry {
            ip: ip.parse().unwrap(),
            dev: "eth0".into(),
            mac: mac.map(String::from),
            state: "REACHABLE".into(),
            updated_ago_ms: Some(10),
            confirmed_ago_ms: None,
        }
    }

    #[test]
    fn array_stays_valid_after_each_append() {
        let t = DateTime::from_timestamp(1_795_262_400, 0).unwrap();
        let mut a = JsonArray::new(Cursor::new(Vec::new())).unwrap();
        let parse = |a: &JsonArray<Cursor<Vec<u8>>>| -> serde_json::Value {
            let bytes = a.file.get_ref();
            assert_eq!(bytes.len() as u64, a.bytes());
            serde_json::from_slice(bytes).unwrap()
        };
        assert_eq!(parse(&a), serde_json::json!([]));

        let first = element(
            t,
            "start",
            &Ok(vec![
                entry("10.0.0.1", Some("02:00:00:00:00:01")),
                entry("10.0.0.2", None),
            ]),
        )
        .unwrap();
        let grows = a.growth(&first);
        let before = a.bytes();
        a.push(&first).unwrap();
        assert_eq!(a.bytes() - before, grows);
        let v = parse(&a);
        assert_eq!(v[0]["reason"], "start");
        assert_eq!(v[0]["time"], "2026-11-21T12:00:00.000000Z");
        assert!(v[0]["error"].is_null());
        assert_eq!(v[0]["entries"][0]["mac"], "02:00:00:00:00:01");
        assert!(v[0]["entries"][1]["mac"].is_null());

        let second =
            element::<ConntrackEntry>(t, "diagnosis 1", &Err("no conntrack".into())).unwrap();
        let grows = a.growth(&second);
        let before = a.bytes();
        a.push(&second).unwrap();
        assert_eq!(a.bytes() - before, grows);
        a.push(&skipped(t, "diagnosis 2", "size cap").unwrap())
            .unwrap();
        let v = parse(&a);
        assert_eq!(v.as_array().unwrap().len(), 3);
        assert_eq!(v[1]["error"], "no conntrack");
        assert_eq!(v[1]["entries"], serde_json::json!([]));
        assert_eq!(v[2]["error"], "size cap");
        // One entry per line.
        let text = String::from_utf8(a.into_inner().into_inner()).unwrap();
        assert!(
            text.lines().any(|l| l.starts_with("{\"ip\":\"10.0.0.2\"")),
            "{text}"
        );
    }
}
