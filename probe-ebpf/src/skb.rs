//! Reading a packet's TCP flow and namespace through an `sk_buff` pointer a
//! tracepoint handed over (`head` plus the network and transport header
//! offsets, found in BTF by userspace). Shared by the programs that see an
//! skb: `skb/kfree_skb`, `icmp/icmp_send`, `tcp/tcp_send_reset`.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use probe_common::{AF_INET, AF_INET6, FlowKey};

use crate::maps::kernel_offsets;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
/// `transport_header` when unset (`(u16)~0U`).
const UNSET: u16 = 0xffff;

#[inline(always)]
pub fn kread<T>(addr: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel tolerates bad pointers (returns an error).
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

/// The TCP flow of the packet in `skb` (`protocol`: ETH_P_IP or
/// ETH_P_IPV6, host order); `None` for anything else, an IPv4 fragment
/// after the first, or IPv6 with extension headers.
#[inline(always)]
pub fn tcp_flow(skb: u64, protocol: u16) -> Option<FlowKey> {
    let offs = kernel_offsets();
    if offs.skb_head == 0 {
        return None;
    }
    let head: u64 = kread(skb + u64::from(offs.skb_head))?;
    let nh: u16 = kread(skb + u64::from(offs.skb_network_header))?;
    let th: u16 = kread(skb + u64::from(offs.skb_transport_header))?;
    let ip = head + u64::from(nh);
    let mut flow = FlowKey::default();
    let l4 = match protocol {
        ETH_P_IP => {
            let h: [u8; 20] = kread(ip)?;
            // Not TCP, or a later fragment (no TCP header to read ports from).
            if h[9] != IPPROTO_TCP || (h[6] & 0x1f) | h[7] != 0 {
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
    Some(flow)
}

/// Armed flows, and any flow on a watched port.
#[inline(always)]
pub fn of_interest(flow: &FlowKey) -> bool {
    if crate::maps::watched(flow.dport) || crate::maps::watched(flow.sport) {
        return true;
    }
    // SAFETY: a map lookup; the value is not used.
    unsafe { crate::maps::ARMED.get(flow) }.is_some()
}

/// The kernel address of a program's `sk_buff` context as a plain number,
/// so offsets found in BTF can be added to it (the verifier refuses
/// arithmetic on a context pointer, not on a number read back from the
/// stack).
#[inline(always)]
pub fn ctx_addr(ctx: *const core::ffi::c_void) -> u64 {
    let slot = ctx as u64;
    kread::<u64>(&slot as *const u64 as u64).unwrap_or(0)
}

/// Namespace of the device the packet was on, else of its socket.
#[inline(always)]
pub fn netns(skb: u64) -> u32 {
    let offs = kernel_offsets();
    let net = kread::<u64>(skb + u64::from(offs.skb_dev))
        .filter(|d| *d != 0 && offs.netdev_net != 0)
        .and_then(|dev| kread::<u64>(dev + u64::from(offs.netdev_net)))
        .or_else(|| {
            let sk = kread::<u64>(skb + u64::from(offs.skb_sk)).filter(|s| *s != 0)?;
            kread::<u64>(sk + u64::from(offs.sock_net))
        });
    net_inum(net)
}

/// Namespace of a socket (full, request or timewait: `skc_net` is common).
#[inline(always)]
pub fn sock_netns(sk: u64) -> u32 {
    let offs = kernel_offsets();
    if offs.sock_net == 0 {
        return 0;
    }
    net_inum(kread::<u64>(sk + u64::from(offs.sock_net)))
}

#[inline(always)]
fn net_inum(net: Option<u64>) -> u32 {
    let offs = kernel_offsets();
    net.filter(|n| *n != 0 && offs.net_inum != 0)
        .and_then(|n| kread::<u32>(n + u64::from(offs.net_inum)))
        .unwrap_or(0)
}
