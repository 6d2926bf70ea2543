//! Maps and load-time globals shared by the programs.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use probe_common::{
    DropKey, FlowKey, FollowState, IcmpKey, KernelOffsets, MAX_ARMED, MAX_DROP_KEYS, MAX_ICMP_KEYS,
    MAX_NODE_NETNS, MAX_OWNERS, MAX_RESET_KEYS, Owner, PIN_SLOTS, PORT_WORDS, PinSlot,
    REASON_WORDS, ResetKey, TpFields, kind, tp,
};

/// Every record goes through this one buffer; userspace may resize it.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(2 * 1024 * 1024, 0);

/// Records that found the ring buffer full, per record kind.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(kind::COUNT, 0);

/// Handshake records that did not fit in their first segment: one slot per
/// flow-hash bucket, looked up without a helper call (array lookups are
/// inlined by the verifier). A slot is live while `end_seq != start_seq`.
/// Two flows in a multi-segment handshake at the same moment in the same
/// bucket: the later one wins, as an LRU map evicts under pressure.
#[map]
pub static FOLLOW: Array<FollowSlot> = Array::with_max_entries(FOLLOW_SLOTS, 0);

pub const FOLLOW_SLOTS: u32 = 4096;

/// Handshakes waiting for the client's next flight, in a slot picked by the
/// flow hash (as [`FOLLOW`]): the sequence number the client's next
/// segment will carry, and the flow.
#[map]
pub static FLIGHTS: Array<FlightSlot> = Array::with_max_entries(FOLLOW_SLOTS, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct FlightSlot {
    pub key: FlowKey,
    pub next_seq: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct FollowSlot {
    pub state: FollowState,
    pub key: FlowKey,
}

/// TCP ports the classifier looks at, one bit per port (set from `--port`
/// before load): one load decides, no map lookup.
#[unsafe(no_mangle)]
static WATCHED_PORTS: [u64; PORT_WORDS] = [0; PORT_WORDS];

#[inline(always)]
pub fn watched(port: u16) -> bool {
    // SAFETY: a global the loader writes before load; volatile so the
    // compiler does not fold the zero initialiser. The index is < 1024.
    let word = unsafe { core::ptr::read_volatile(&WATCHED_PORTS[usize::from(port >> 6)]) };
    word & (1 << (port & 63)) != 0
}

/// Drop reasons `skb/kfree_skb` counts, one bit per `skb_drop_reason`
/// value (set before load: the reasons that are a path's fault). Other
/// drops (no socket, TCP's own bookkeeping) cost one tracepoint field read.
#[unsafe(no_mangle)]
static PATH_REASONS: [u64; REASON_WORDS] = [0; REASON_WORDS];

#[inline(always)]
pub fn path_reason(reason: u32) -> bool {
    let i = (reason / 64) as usize;
    if i >= REASON_WORDS {
        return false;
    }
    // SAFETY: a global the loader writes before load (see WATCHED_PORTS).
    let word = unsafe { core::ptr::read_volatile(&PATH_REASONS[i]) };
    word & (1 << (reason % 64)) != 0
}

/// Flows under suspicion (value unused), both directions, set by userspace
/// when a symptom starts: only their drops are counted.
#[map]
pub static ARMED: LruHashMap<FlowKey, u8> = LruHashMap::with_max_entries(MAX_ARMED, 0);

/// LRU lists per CPU instead of one shared, locked list: an insert on a
/// drop flood (a new flow per SYN) takes no lock other CPUs contend for.
const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;

/// Drops of armed flows by (flow, reason, netns).
#[map]
pub static DROPS: LruHashMap<DropKey, u32> =
    LruHashMap::with_max_entries(MAX_DROP_KEYS, BPF_F_NO_COMMON_LRU);

/// ICMP errors this node sent about armed or watched flows, by
/// (flow, type, code, netns).
#[map]
pub static ICMP_SENT: LruHashMap<IcmpKey, u32> =
    LruHashMap::with_max_entries(MAX_ICMP_KEYS, BPF_F_NO_COMMON_LRU);

/// RSTs this node's stack sent on armed or watched flows, by
/// (flow, state, reason, netns).
#[map]
pub static RESET_SENT: LruHashMap<ResetKey, u32> =
    LruHashMap::with_max_entries(MAX_RESET_KEYS, BPF_F_NO_COMMON_LRU);

/// Who connected each socket, by socket address (LRU: sockets that closed
/// without being seen are forgotten by themselves).
#[map]
pub static OWNERS: LruHashMap<u64, Owner> = LruHashMap::with_max_entries(MAX_OWNERS, 0);

/// The destination MAC of each owner-probe slot (see `pin.rs`), written by
/// userspace for the length of one probe (all zero when unused), and the
/// frames rewritten.
#[map]
pub static PIN_MAC: Array<PinSlot> = Array::with_max_entries(PIN_SLOTS, 0);

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
    sock_v6_daddr: 0,
};

/// The namespaces whose sockets are this node's (its own and its pods'),
/// by inode, kept by userspace. Read only when `NETNS_FILTER` is set:
/// netprobe in a namespace other than the initial one (a lab's "node",
/// `--netns`) must not report the sockets of the machine's other
/// namespaces, which a real node could never see.
#[map]
pub static NODE_NETNS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_NODE_NETNS, 0);

/// 1 when socket-hook records are limited to [`NODE_NETNS`].
#[unsafe(no_mangle)]
static NETNS_FILTER: u8 = 0;

/// Whether a socket hook's record from namespace `netns` is this node's
/// (always, for tc's `0`).
#[inline(always)]
pub fn node_netns(netns: u32) -> bool {
    if netns == 0 {
        return true;
    }
    // SAFETY: as for KERNEL_OFFSETS.
    if unsafe { core::ptr::read_volatile(&NETNS_FILTER) } == 0 {
        return true;
    }
    // SAFETY: a map lookup; the value is not used.
    unsafe { NODE_NETNS.get(&netns) }.is_some()
}

/// 1 when the loader wants packet copies (`netprobe capture`).
#[unsafe(no_mangle)]
static CAPTURE_PACKETS: u8 = 0;

/// Non-zero when `tcp_retransmit_skb` passes the attempt's error (set by
/// the loader from tracefs; the verifier drops the read where it is 0, so
/// kernels without the argument still accept the programs).
#[unsafe(no_mangle)]
static RETRANSMIT_HAS_ERR: u8 = 0;

#[inline(always)]
pub fn retransmit_has_err() -> bool {
    // SAFETY: as for KERNEL_OFFSETS.
    unsafe { core::ptr::read_volatile(&RETRANSMIT_HAS_ERR) != 0 }
}

/// Pending ring-buffer bytes at which a submit wakes the reader (set by
/// the loader from the ring's size; 0 wakes it on every record).
#[unsafe(no_mangle)]
static WAKE_BYTES: u64 = 0;

#[inline(always)]
pub fn wake_bytes() -> u64 {
    // SAFETY: as for KERNEL_OFFSETS.
    unsafe { core::ptr::read_volatile(&WAKE_BYTES) }
}

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

/// Where this kernel's tracepoint records keep the fields the programs
/// read, by `probe_common::tp` slot (userspace reads them from tracefs by
/// name before load; `tp::ABSENT` where a record lacks the field).
#[unsafe(no_mangle)]
static TP_FIELDS: TpFields = TpFields::ABSENT;

/// The offset of tracepoint field `slot` on this kernel, if its record has
/// it. Slots are constants, so the verifier sees one known value.
#[inline(always)]
pub fn tp_off(slot: usize) -> Option<usize> {
    if slot >= tp::COUNT {
        return None;
    }
    // SAFETY: as for KERNEL_OFFSETS; the index is in bounds.
    let off = unsafe { core::ptr::read_volatile(&TP_FIELDS.off[slot]) };
    if off == tp::ABSENT {
        None
    } else {
        Some(usize::from(off))
    }
}
