//! Where events go: text and JSON lines, Prometheus metrics, the live
//! `top` view, capture bundles. Nothing below imports a sink.

pub mod capture;
pub mod metrics;
pub mod output;
pub mod scope;
pub mod top;
