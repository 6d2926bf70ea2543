//! netprobe's userspace: loader, decoder, correlator and sinks.
//!
//! One event's path: `probes` loads the eBPF object and attaches it (`links`
//! says to which interfaces), `trace` reads the ring buffer, `pipeline`
//! runs each record through `decode` (bytes to kernel records) and `enrich`
//! (kernel records to [`event::Event`]s, with `tls` for the handshake bytes),
//! and `output` writes them as text or JSON lines; `metrics` counts them
//! for Prometheus.

pub mod btf;
pub mod btf_offsets;
pub mod capability;
pub mod capture;
pub mod cli;
pub mod correlate;
pub mod cri;
pub mod decode;
pub mod doctor;
pub mod enrich;
pub mod event;
pub mod facts;
pub mod identity;
pub mod investigate;
pub mod links;
pub mod loader;
pub mod metrics;
pub mod names;
pub mod netns;
pub mod output;
pub mod path_checks;
pub mod pipeline;
pub mod privileges;
pub mod probes;
pub mod prog_info;
pub mod replay;
pub mod state;
pub mod tcx;
pub mod tls;
pub mod top;
pub mod trace;
pub mod tracefs;
