//! Where events go: text and JSON lines, Prometheus metrics, the live
//! `top` view, capture bundles. Nothing below imports a sink.

pub mod capture;
pub mod metrics;
pub mod output;
pub mod scope;
pub mod top;

use crate::model::event::Event;
use output::Sink;

/// Whether the session goes on after a consumer call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Where a session's events go: stdout (`trace`), a live view (`top`), a
/// capture bundle (`capture`).
pub trait Consumer {
    /// Every event, in order: kernel events, snapshots, diagnoses, stats.
    fn event(&mut self, event: &Event) -> std::io::Result<Flow>;
    /// A packet copied by the classifier (capture mode only: see
    /// [`Consumer::wants_packets`]).
    fn packet(&mut self, _packet: &crate::pipeline::Packet) -> std::io::Result<Flow> {
        Ok(Flow::Continue)
    }
    /// Whether the classifier should copy packets (headers and TLS
    /// handshake bytes of watched ports, ARP and NDP) to this consumer.
    fn wants_packets(&self) -> bool {
        false
    }
    /// About every 100 ms, for timers, input and redraws.
    fn tick(&mut self, _now: chrono::DateTime<chrono::Utc>) -> std::io::Result<Flow> {
        Ok(Flow::Continue)
    }
    /// Once per wake-up of the session, after whatever it handled.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Consumer for Sink {
    fn event(&mut self, event: &Event) -> std::io::Result<Flow> {
        self.emit(event)?;
        Ok(Flow::Continue)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Sink::flush(self)
    }
}
