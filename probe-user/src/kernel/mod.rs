//! Everything that talks to the kernel to get events: loading the eBPF
//! object (BTF offsets, tracefs formats, program info), attaching it (the
//! socket hooks on the root cgroup, tc on the uplinks, links that follow
//! interfaces), and the namespace netprobe runs in.

pub mod btf;
pub mod btf_offsets;
pub mod capability;
pub mod links;
pub mod loader;
pub mod netns;
pub mod privileges;
pub mod probes;
pub mod prog_info;
pub mod sockets;
pub mod tcx;
pub mod tracefs;
