//! netprobe's userspace: loader, decoder, correlator and sinks, one folder
//! a layer.
//!
//! One event's path: [`kernel`] loads the eBPF object and attaches it
//! (`kernel::probes`; `kernel::sockets` on the root cgroup, `kernel::links`
//! says which uplinks get tc), [`trace`] reads the ring buffer, [`pipeline`]
//! runs each record through `decode` (bytes to kernel records) and `enrich`
//! (kernel records to [`model::event::Event`]s, with `tls` for the
//! handshake bytes), [`correlate`] (pure: events in, diagnoses out) asks
//! [`investigate`] for [`state`] look-ups and probes, and [`sinks`] write
//! the result: text or JSON lines, metrics, `top`, capture bundles.
//!
//! Arrows point down: commands (`trace`, `doctor`, `replay`) and sinks ->
//! correlate -> model; kernel, pipeline and state -> model.

pub mod cli;
pub mod correlate;
pub mod doctor;
pub mod investigate;
pub mod kernel;
pub mod model;
pub mod pipeline;
pub mod replay;
pub mod sinks;
pub mod state;
pub mod trace;
