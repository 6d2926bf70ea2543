//! The types every layer shares: events and diagnoses, the facts state
//! look-ups return, and the kernel's names for its numbers.

pub mod event;
pub mod facts;
pub mod names;
pub mod pod;
