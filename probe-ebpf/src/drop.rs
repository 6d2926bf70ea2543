//! `skb/kfree_skb`: drops for a path's reason (userspace sets which) of
//! packets that belong to flows userspace armed (a flow under suspicion,
//! both directions) or to a watched port. Counted in the kernel per
//! (flow, reason, namespace); a record goes out at counts 1, 2, 4, 8, ...
//! so a flood of drops costs a handful of records, never one per packet.
//!
//! The packet's headers are read through the skb (`head` plus the network
//! and transport header offsets, found in BTF by userspace). Only TCP over
//! IPv4 or IPv6 without extension headers is looked at.

use aya_ebpf::{helpers::bpf_probe_read_kernel, programs::TracePointContext};
use probe_common::{AF_INET, AF_INET6, DropKey, DropRecord, FlowKey, kind};

use crate::{
    emit,
    maps::{ARMED, DROPS, kernel_offsets},
    tcp_tracepoint::read,
};

const OFF_SKBADDR: usize = 8;
const OFF_LOCATION: usize = 16;
const OFF_PROTOCOL: usize = 32;
const OFF_REASON: usize = 36;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
/// `transport_header` when unset (`(u16)~0U`).
const UNSET: u16 = 0xffff;

#[inline(always)]
fn kread<T>(addr: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel tolerates bad pointers (returns an error).
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

#[inline(always)]
pub fn handle(ctx: &TracePointContext) -> Option<()> {
    let offs = kernel_offsets();
    if offs.skb_head == 0 {
        return None;
    }
    // The reason first: most drops on a node (no socket, TCP's own
    // bookkeeping) are not a path's fault and end here.
    let reason: u32 = read(ctx, OFF_REASON)?;
    if !crate::maps::path_reason(reason) {
        return None;
    }
    let skb: u64 = read(ctx, OFF_SKBADDR)?;
    // The tracepoint stores ntohs(skb->protocol): host order already.
    let protocol: u16 = read(ctx, OFF_PROTOCOL)?;
    let head: u64 = kread(skb + u64::from(offs.skb_head))?;
    let nh: u16 = kread(skb + u64::from(offs.skb_network_header))?;
    let th: u16 = kread(skb + u64::from(offs.skb_transport_header))?;
    let ip = head + u64::from(nh);
    let mut flow = FlowKey::default();
    let l4 = match protocol {
        ETH_P_IP => {
            let h: [u8; 20] = kread(ip)?;
            if h[9] != IPPROTO_TCP {
                return None;
            }
            flow.family = AF_INET;
            flow.saddr[..4].copy_from_slice(&h[12..16]);
            flow.daddr[..4].copy_from_slice(&h[16..20]);
            ip + u64::from(h[0] & 0x0f) * 4
        }
        ETH_P_IPV6 => {
            let h: [u8; 40] = kread(ip)?;
            if h[6] != IPPROTO_TCP {
                return None;
            }
            flow.family = AF_INET6;
            flow.saddr.copy_from_slice(&h[8..24]);
            flow.daddr.copy_from_slice(&h[24..40]);
            ip + 40
        }
        _ => return None,
    };
    // Prefer the transport header the stack set; else right after the IP header.
    let tcp = if th != UNSET && th > nh {
        head + u64::from(th)
    } else {
        l4
    };
    let ports: [u8; 4] = kread(tcp)?;
    flow.sport = u16::from_be_bytes([ports[0], ports[1]]);
    flow.dport = u16::from_be_bytes([ports[2], ports[3]]);
    // Armed flows, and any flow on a watched port: a server on this node
    // whose accept queue overflows is seen without a client here.
    if !crate::maps::watched(flow.dport) && !crate::maps::watched(flow.sport) {
        // SAFETY: a map lookup; the value is not used.
        unsafe { ARMED.get(&flow) }?;
    }

    let key = DropKey {
        flow,
        reason,
        netns: netns(skb),
    };
    // SAFETY: the value is copied out at once.
    let count = unsafe { DROPS.get(&key) }.map_or(1, |c| c.saturating_add(1));
    let _ = DROPS.insert(&key, &count, 0);
    if !count.is_power_of_two() {
        return Some(());
    }
    // Everything fallible comes before the reservation: a reserved entry
    // must be submitted on every path.
    let location: u64 = read(ctx, OFF_LOCATION).unwrap_or(0);
    let mut entry = emit::reserve::<DropRecord>(kind::DROP)?;
    entry.write(DropRecord {
        header: emit::header(kind::DROP, size_of::<DropRecord>()),
        location,
        key,
        count,
        _pad: 0,
    });
    entry.submit(0);
    Some(())
}

/// Namespace of the device the packet was on, else of its socket.
#[inline(always)]
fn netns(skb: u64) -> u32 {
    let offs = kernel_offsets();
    let net = kread::<u64>(skb + u64::from(offs.skb_dev))
        .filter(|d| *d != 0 && offs.netdev_net != 0)
        .and_then(|dev| kread::<u64>(dev + u64::from(offs.netdev_net)))
        .or_else(|| {
            let sk = kread::<u64>(skb + u64::from(offs.skb_sk)).filter(|s| *s != 0)?;
            kread::<u64>(sk + u64::from(offs.sock_net))
        });
    net.filter(|n| *n != 0 && offs.net_inum != 0)
        .and_then(|n| kread::<u32>(n + u64::from(offs.net_inum)))
        .unwrap_or(0)
}
