//! `sock/inet_sock_set_state`: remembers which process connected a TCP
//! socket. connect() moves the socket to SYN_SENT in the process's own
//! context, so the current pid and comm are the owner's. Nothing is sent to
//! userspace here: the retransmit and reset programs look the owner up by
//! socket address, so a healthy connection costs one map update.

use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid};
use aya_ebpf::programs::TracePointContext;
use probe_common::{Owner, tp};

use crate::{maps::OWNERS, tcp_tracepoint::field};

const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;
const IPPROTO_TCP: u16 = 6;

#[inline(always)]
pub fn handle(ctx: &TracePointContext) -> Option<()> {
    if field::<u16>(ctx, tp::SS_PROTOCOL)? != IPPROTO_TCP {
        return None;
    }
    let sk: u64 = field(ctx, tp::SS_SKADDR)?;
    match field::<i32>(ctx, tp::SS_NEWSTATE)? {
        TCP_SYN_SENT => {
            let owner = Owner {
                pid: (bpf_get_current_pid_tgid() >> 32) as u32,
                comm: bpf_get_current_comm().unwrap_or_default(),
            };
            let _ = OWNERS.insert(&sk, &owner, 0);
        }
        // The address may be reused by another socket: forget the owner.
        TCP_CLOSE => {
            let _ = OWNERS.remove(&sk);
        }
        _ => {}
    }
    Some(())
}

/// The owner of socket `sk`, if it was connected while netprobe ran.
#[inline(always)]
pub fn owner(sk: u64) -> Owner {
    // SAFETY: the value is copied out at once.
    unsafe { OWNERS.get(&sk) }.copied().unwrap_or_default()
}
