#![no_std]
// Library target so probe-user can name this crate as a build-dependency
// (cargo then knows when the eBPF object must be rebuilt).
