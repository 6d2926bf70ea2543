//! The userspace event pipeline under a synthetic flood, on one core:
//! ring-buffer bytes -> decode -> enrich (TLS reassembly) -> correlator.
//! Prints records per second (median and spread over runs) and peak memory
//! with 100,000 and 1,000,000 distinct flows, with the evictions that keep
//! the state bounded. Figures, not pass/fail. Writes target/bench/pipeline.json.

use std::{collections::HashMap, time::Instant};

use probe_common::{
    AF_INET, ArpRecord, RecordHeader, TLS_CAPTURE, TcpRecord, TlsRecord, arp_op, direction, kind,
    tls_part,
};
use probe_user::{
    correlate::{Config, Correlator},
    pipeline::decode::to_bytes,
    pipeline::enrich::{Clock, Enricher},
    pipeline::{Fed, Pipeline},
};

const CLIENT_HELLO_HEX: &str =
    include_str!("../src/pipeline/tls_fixtures/client_hello_openssl3.hex");
const RUNS: usize = 5;
const RECORDS_PER_RUN: usize = 1_000_000;

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

fn v4(a: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&a.to_be_bytes());
    out
}

fn retransmit(flow: u32, ts: u64) -> Vec<u8> {
    to_bytes(&TcpRecord {
        header: RecordHeader::new(kind::RETRANSMIT, size_of::<TcpRecord>(), ts),
        skaddr: 0,
        netns: 0,
        state: 1,
        family: AF_INET,
        has_seq: 1,
        not_sent: 0,
        sport: 10_000 + (flow % 50_000) as u16,
        dport: 8000,
        snd_una: 1000,
        snd_nxt: 2000,
        pid: 0,
        saddr: v4(0x0a00_0000 | (flow / 50_000)),
        daddr: v4(0x0a60_000a),
        comm: [0; 16],
    })
}

fn arp(n: u32, ts: u64) -> Vec<u8> {
    to_bytes(&ArpRecord {
        header: RecordHeader::new(kind::ARP, size_of::<ArpRecord>(), ts),
        ifindex: 2,
        direction: direction::INGRESS,
        op: arp_op::REPLY,
        family: AF_INET,
        flags: 0,
        sender_ip: v4(0x0a01_0000 | (n % 4096)),
        target_ip: v4(0x0a01_ffff),
        sender_mac: [2, 0, 0, 0, (n >> 8) as u8, n as u8],
        eth_src: [2, 0, 0, 0, (n >> 8) as u8, n as u8],
        eth_dst: [2, 0, 0, 0, 0, 1],
        _pad: [0; 6],
    })
}

fn client_hello(flow: u32, ts: u64, hello: &[u8]) -> Vec<u8> {
    let mut payload = [0u8; TLS_CAPTURE];
    let n = hello.len().min(TLS_CAPTURE);
    payload[..n].copy_from_slice(&hello[..n]);
    to_bytes(&TlsRecord {
        header: RecordHeader::new(kind::TLS, size_of::<TlsRecord>(), ts),
        ifindex: 2,
        direction: direction::EGRESS,
        family: AF_INET,
        part: tls_part::START,
        chunk: 0,
        sport: 20_000 + (flow % 40_000) as u16,
        dport: 6443,
        seq: flow,
        payload_len: n as u16,
        captured: n as u16,
        saddr: v4(0x0a02_0000 | (flow / 40_000)),
        daddr: v4(0x0a02_ff64),
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        netns: 0,
        _pad: 0,
        payload,
    })
}

/// A mix like a busy node's: mostly retransmits, some ARP, some hellos.
fn records(count: usize, flows: u32, hello: &[u8]) -> Vec<Vec<u8>> {
    (0..count as u64)
        .map(|i| {
            let flow = (i as u32).wrapping_mul(2_654_435_761) % flows;
            let ts = 1_000_000_000 + i * 1000;
            match i % 10 {
                0 => client_hello(flow, ts, hello),
                1 | 2 => arp(flow, ts),
                _ => retransmit(flow, ts),
            }
        })
        .collect()
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Outcome {
    per_sec: f64,
    events: u64,
    investigations: u64,
}

fn run(input: &[Vec<u8>]) -> Outcome {
    let ifaces: HashMap<u32, String> = [(2, "eth0".to_string())].into();
    let mut pipeline = Pipeline::new(Enricher::new(Clock::new(0), None));
    let mut correlator = Correlator::new(Config::default());
    let (mut events, mut investigations) = (0u64, 0u64);
    let start = Instant::now();
    for (i, bytes) in input.iter().enumerate() {
        if let Fed::Event(e) = pipeline.feed(bytes, &ifaces) {
            events += 1;
            investigations += correlator.observe(&e).investigations.len() as u64;
            if i % 4096 == 0 {
                investigations += correlator.tick(e.time).len() as u64;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Outcome {
        per_sec: input.len() as f64 / secs,
        events,
        investigations,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Child mode: feed `flows` distinct flows (three records each, made on the
/// fly) and print peak RSS and evictions as JSON.
fn memory_child(flows: u32) {
    let hello = hex(CLIENT_HELLO_HEX);
    let ifaces: HashMap<u32, String> = [(2, "eth0".to_string())].into();
    let mut pipeline = Pipeline::new(Enricher::new(Clock::new(0), None));
    let mut correlator = Correlator::new(Config::default());
    for i in 0..u64::from(flows) * 3 {
        let flow = (i as u32) % flows.max(1);
        let ts = 1_000_000_000 + i * 1000;
        let bytes = match i % 10 {
            0 => client_hello(flow, ts, &hello),
            1 | 2 => arp(flow, ts),
            _ => retransmit(flow, ts),
        };
        if let Fed::Event(e) = pipeline.feed(&bytes, &ifaces) {
            let _ = correlator.observe(&e);
        }
    }
    let evicted = correlator.evictions() + pipeline.enricher().flows_evicted();
    println!(
        "{}",
        serde_json::json!({"peak_rss_kib": rss_kib("VmHWM:"), "evicted": evicted})
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--memory-child") {
        let flows = args.get(i + 1).and_then(|f| f.parse().ok()).unwrap_or(0);
        return memory_child(flows);
    }
    let hello = hex(CLIENT_HELLO_HEX);
    println!(
        "pipeline benchmark: decode + enrich + correlate, one core, {RUNS} runs of {RECORDS_PER_RUN} records"
    );
    let input = records(RECORDS_PER_RUN, 100_000, &hello);
    let mut rates: Vec<f64> = Vec::new();
    let mut last = None;
    for _ in 0..RUNS {
        let o = run(&input);
        rates.push(o.per_sec);
        last = Some(o);
    }
    drop(input);
    let last = last.expect("at least one run");
    let (min, max) = (
        rates.iter().copied().fold(f64::MAX, f64::min),
        rates.iter().copied().fold(0.0, f64::max),
    );
    let med = median(&mut rates);
    println!(
        "throughput: median {:.0} records/s (min {:.0}, max {:.0}); {} events, {} investigations asked",
        med, min, max, last.events, last.investigations
    );

    // Memory: state must stay bounded whatever the number of flows. Each
    // count runs in a fresh child process with records made on the fly, so
    // its peak RSS is the pipeline's own.
    let mut memory = Vec::new();
    let exe = std::env::current_exe().expect("own path");
    for flows in [0u32, 100_000, 1_000_000] {
        let out = std::process::Command::new(&exe)
            .args(["--memory-child", &flows.to_string()])
            .output()
            .expect("memory child");
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_default();
        let label = if flows == 0 {
            "idle (pipeline built, no records)".to_string()
        } else {
            format!("{flows} distinct flows ({} records)", flows as u64 * 3)
        };
        println!(
            "memory, {label}: peak RSS {:.1} MiB, {} state entries evicted to stay bounded",
            v["peak_rss_kib"].as_u64().unwrap_or(0) as f64 / 1024.0,
            v["evicted"]
        );
        memory.push(serde_json::json!({"flows": flows, "peak_rss_kib": v["peak_rss_kib"], "evicted": v["evicted"]}));
    }

    // Rows in the lab bench's schema, so `cargo xtask bench` merges them.
    const SECTION: &str = "event pipeline (userspace, one core)";
    let mut rows = vec![serde_json::json!({
        "section": SECTION,
        "name": "records decoded, enriched and correlated per second",
        "unit": "rec/s",
        "samples": rates,
        "note": format!("{RECORDS_PER_RUN} records a run: 70 % retransmits, 20 % ARP, 10 % ClientHellos"),
    })];
    for m in &memory {
        let flows = m["flows"].as_u64().unwrap_or(0);
        let name = if flows == 0 {
            "peak RSS, pipeline idle".to_string()
        } else {
            format!("peak RSS, {flows} distinct flows")
        };
        rows.push(serde_json::json!({
            "section": SECTION,
            "name": name,
            "unit": "MiB",
            "samples": [m["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0],
            "note": format!("{} state entries evicted (tables are bounded)", m["evicted"]),
        }));
    }
    let out = serde_json::json!({ "runs": RUNS, "quick": false, "rows": rows });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(
            dir.join("pipeline.json"),
            serde_json::to_string_pretty(&out).unwrap_or_default(),
        );
    }
}
