//! One module per cause: its rule, the evidence it adds, its fix, and its
//! tests. Each `judge` reads a case and either names its cause (filling in
//! the diagnosis, returning true) or leaves the diagnosis alone.
//!
//! Every rule names a cause only with evidence about the thing it blames;
//! the controls each module's tests hold are the situations that look the
//! same and must not get it.

pub mod answered;
pub mod conntrack_table_full;
pub mod endpoint_unreachable;
pub mod kernel_drop;
pub mod listen_overflow;
pub mod mtu_blackhole;
pub mod packet_loss;
pub mod server_not_responding;
pub mod stale_conntrack_nat;
pub mod stale_neighbour;
pub mod unknown;
