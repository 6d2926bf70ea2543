//! Maps and load-time globals shared by the programs.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use probe_common::{
    DropKey, FlowKey, FollowState, KernelOffsets, MAX_ARMED, MAX_DROP_KEYS, MAX_OWNERS, MAX_PORTS,
    Owner, kind,
};

/// Every record goes through this one buffer; userspace may resize it.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(2 * 1024 * 1024, 0);

/// Records that found the ring buffer full, per record kind.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(kind::COUNT, 0);

/// TCP ports the classifier looks at (value unused), set from `--port`.
#[map]
pub static PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_PORTS, 0);

/// Handshake records that did not fit in their first segment, by flow.
#[map]
pub static FOLLOW: LruHashMap<FlowKey, FollowState> = LruHashMap::with_max_entries(4096, 0);

/// Flows under suspicion (value unused), both directions, set by userspace
/// when a symptom starts: only their drops are counted.
#[map]
pub static ARMED: LruHashMap<FlowKey, u8> = LruHashMap::with_max_entries(MAX_ARMED, 0);

/// Drops of armed flows by (flow, reason, netns).
#[map]
pub static DROPS: LruHashMap<DropKey, u32> = LruHashMap::with_max_entries(MAX_DROP_KEYS, 0);

/// Who connected each socket, by socket address (LRU: sockets that closed
/// without being seen are forgotten by themselves).
#[map]
pub static OWNERS: LruHashMap<u64, Owner> = LruHashMap::with_max_entries(MAX_OWNERS, 0);

/// Structure offsets userspace found in the kernel's BTF (0 = unknown).
#[unsafe(no_mangle)]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets {
    sock_net: 0,
    net_inum: 0,
    tcp_snd_una: 0,
    tcp_snd_nxt: 0,
    skb_head: 0,
    skb_network_header: 0,
    skb_transport_header: 0,
    skb_dev: 0,
    skb_sk: 0,
    netdev_net: 0,
};

/// 1 when the loader wants packet copies (`netprobe capture`).
#[unsafe(no_mangle)]
static CAPTURE_PACKETS: u8 = 0;

#[inline(always)]
pub fn capture_packets() -> bool {
    // SAFETY: as for KERNEL_OFFSETS.
    unsafe { core::ptr::read_volatile(&CAPTURE_PACKETS) != 0 }
}

#[inline(always)]
pub fn kernel_offsets() -> KernelOffsets {
    // SAFETY: a global the loader may rewrite before load; read it volatile
    // so the compiler does not fold the zero initialiser.
    unsafe { core::ptr::read_volatile(&KERNEL_OFFSETS) }
}
