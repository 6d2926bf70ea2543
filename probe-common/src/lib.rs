//! Wire layout of everything that crosses the kernel/user boundary.
//!
//! Every ring-buffer record starts with a [`RecordHeader`]; the decoder in
//! probe-user checks `size` against the bytes it got before it reads the body.
//! Only integers and byte arrays cross the boundary: enums are rebuilt on the
//! user side with `TryFrom`, never transmuted.
#![no_std]

use core::mem::size_of;

/// Record kinds (the `kind` field of [`RecordHeader`]).
pub mod kind {
    pub const RETRANSMIT: u16 = 1;
    pub const NEIGHBOUR: u16 = 2;
    pub const TLS: u16 = 3;
    pub const ARP: u16 = 4;
    /// A RST received on a socket (`tcp/tcp_receive_reset`), as a [`super::TcpRecord`].
    pub const RESET: u16 = 5;
    /// A packet copy for capture bundles (capture mode only).
    pub const PACKET: u16 = 6;
    /// Drops of an armed flow's packets (`skb/kfree_skb`), aggregated in the
    /// kernel: one [`super::DropRecord`] at counts 1, 2, 4, 8, ...
    pub const DROP: u16 = 7;
    /// ICMP errors this node sent about an armed or watched flow's packets
    /// (`icmp/icmp_send`), aggregated like drops: a [`super::IcmpRecord`].
    pub const ICMP_SENT: u16 = 8;
    /// RSTs this node's stack sent on an armed or watched flow
    /// (`tcp/tcp_send_reset`), aggregated like drops: a [`super::ResetRecord`].
    pub const RESET_SENT: u16 = 9;
    /// A listener retransmitted its SYN-ACK (`tcp/tcp_retransmit_synack`):
    /// a [`super::TcpRecord`] from the listening socket's side.
    pub const SYNACK_RETRANSMIT: u16 = 10;
    /// One past the highest kind: sizes the per-kind loss counters.
    pub const COUNT: u32 = 11;
}

/// Packet direction on a TC hook.
pub mod direction {
    /// tc ingress on a device.
    pub const INGRESS: u8 = 0;
    /// tc egress on a device.
    pub const EGRESS: u8 = 1;
    /// Delivered to a local socket (`cgroup_skb` ingress): no link layer.
    pub const SOCKET_INGRESS: u8 = 2;
    /// Sent by a local socket (`cgroup_skb` egress): before the neighbour
    /// layer, so no MACs.
    pub const SOCKET_EGRESS: u8 = 3;
}

/// Most namespaces the socket hooks report for (this node's and its pods').
pub const MAX_NODE_NETNS: u32 = 8192;

/// `TlsRecord::part` values.
pub mod tls_part {
    /// The segment starts with a TLS handshake record header.
    pub const START: u8 = 1;
    /// A later segment of a handshake record that did not fit in the first.
    pub const CONTINUATION: u8 = 2;
    /// The client's first segment after its ClientHello (change cipher
    /// spec, handshake, alert or application data record): the server's
    /// flight reached it. Only its first bytes are copied.
    pub const FLIGHT: u8 = 3;
}

/// `ArpRecord::op` values (ARP opcodes, plus ICMPv6 neighbour advertisement).
pub mod arp_op {
    pub const REQUEST: u8 = 1;
    pub const REPLY: u8 = 2;
    pub const NEIGHBOUR_ADVERT: u8 = 136;
}

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// Bytes of TLS payload copied per segment. A ClientHello is usually 200-600
/// bytes; longer ones arrive as several records and are reassembled by seq.
pub const TLS_CAPTURE: usize = 512;
/// Bytes of one handshake record netprobe follows across segments at most.
pub const TLS_FOLLOW_MAX: u32 = 4096;
/// u64 words of the watched-ports bitmap (one bit per TCP port).
pub const PORT_WORDS: usize = 65536 / 64;

/// The watched-ports bitmap the classifier reads (`WATCHED_PORTS`).
pub fn port_bitmap(ports: &[u16]) -> [u64; PORT_WORDS] {
    let mut words = [0u64; PORT_WORDS];
    for &p in ports {
        words[usize::from(p >> 6)] |= 1 << (p & 63);
    }
    words
}

/// u64 words of the drop-reason bitmap (`skb_drop_reason` values below 256;
/// the subsystem reasons above are never a path's).
pub const REASON_WORDS: usize = 4;

/// The bitmap of drop reasons `skb/kfree_skb` counts (`PATH_REASONS`).
pub fn reason_bitmap(reasons: impl IntoIterator<Item = u32>) -> [u64; REASON_WORDS] {
    let mut words = [0u64; REASON_WORDS];
    for r in reasons {
        if let Some(w) = words.get_mut(r as usize / 64) {
            *w |= 1 << (r % 64);
        }
    }
    words
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: u16,
    /// Size of the whole record, header included.
    pub size: u16,
    pub _reserved: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    pub ts_ns: u64,
}

impl RecordHeader {
    pub const fn new(kind: u16, size: usize, ts_ns: u64) -> Self {
        Self {
            kind,
            size: size as u16,
            _reserved: 0,
            ts_ns,
        }
    }
}

/// A TCP socket event: `tcp/tcp_retransmit_skb` (kind RETRANSMIT, enriched
/// through the socket pointer) or `tcp/tcp_receive_reset` (kind RESET).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpRecord {
    pub header: RecordHeader,
    pub skaddr: u64,
    /// Inode of the socket's network namespace; 0 when unknown.
    pub netns: u32,
    /// Kernel TCP state (`TCP_ESTABLISHED` = 1 ...).
    pub state: u8,
    pub family: u8,
    /// 1 when `snd_una`/`snd_nxt` were read from the socket.
    pub has_seq: u8,
    /// The errno (positive) when the kernel tried to retransmit and sent
    /// nothing (no route, a full queue); 0 when the segment left.
    pub not_sent: u8,
    pub sport: u16,
    pub dport: u16,
    pub snd_una: u32,
    pub snd_nxt: u32,
    /// Process that connected the socket (thread group id); 0 when unknown.
    pub pid: u32,
    /// IPv4 uses the first 4 bytes.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// That process's command name, NUL-padded; empty when unknown.
    pub comm: [u8; 16],
}

/// Who connected a socket: recorded by `sock/inet_sock_set_state` when the
/// socket enters SYN_SENT (connect() runs in the process's context).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub comm: [u8; 16],
}

/// skb marks of netprobe's own owner-probe sockets: `PIN_MARK_BASE + slot`
/// for `slot < PIN_SLOTS`. The TC egress classifier sets the destination
/// MAC of frames carrying such a mark to `PIN_MAC[slot]`; every other frame
/// costs one field load and a compare. (A node that uses these mark bits
/// for its own routing would see netprobe's probes marked; nothing else is.)
pub const PIN_MARK_BASE: u32 = 0x6e70_0000;
/// Owner probes (one per claimant MAC) in flight at most.
pub const PIN_SLOTS: u32 = 16;

/// One owner-probe slot (`PIN_MAC`): the MAC its frames are sent to, and
/// how many frames the classifier rewrote (proof that the probe really
/// left through that MAC: a device without netprobe's hook would not).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinSlot {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    pub frames: u32,
}

/// Sockets whose owner is remembered at most.
pub const MAX_OWNERS: u32 = 16384;

/// From `neigh/neigh_update`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NeighRecord {
    pub header: RecordHeader,
    pub family: u8,
    pub lladdr_len: u8,
    /// NUD_* bits before and after the update.
    pub old_state: u8,
    pub new_state: u8,
    /// NTF_* flags of the entry.
    pub flags: u8,
    pub dead: u8,
    pub _pad: [u8; 2],
    /// NEIGH_UPDATE_F_* flags of this update.
    pub update_flags: u32,
    /// Process that asked for the change (0 for the kernel itself).
    pub pid: u32,
    pub ip: [u8; 16],
    pub old_mac: [u8; 8],
    pub new_mac: [u8; 8],
    /// Device name, NUL padded.
    pub dev: [u8; 16],
}

/// An ARP frame or an ICMPv6 neighbour advertisement seen on a TC hook.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ArpRecord {
    pub header: RecordHeader,
    pub ifindex: u32,
    pub direction: u8,
    pub op: u8,
    pub family: u8,
    /// ARP: 1 when sender IP == target IP. NDP: the advertisement's R/S/O bits.
    pub flags: u8,
    pub sender_ip: [u8; 16],
    pub target_ip: [u8; 16],
    pub sender_mac: [u8; 6],
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    pub _pad: [u8; 6],
}

/// A TCP segment on a watched port carrying (part of) a TLS handshake record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TlsRecord {
    pub header: RecordHeader,
    pub ifindex: u32,
    pub direction: u8,
    pub family: u8,
    pub part: u8,
    /// Which `TLS_CAPTURE`-sized piece of its TCP segment this is (0 = first).
    pub chunk: u8,
    pub sport: u16,
    pub dport: u16,
    /// TCP sequence number of the first payload byte in this record.
    pub seq: u32,
    /// Payload bytes in the segment, and how many of them are in `payload`.
    pub payload_len: u16,
    pub captured: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// The socket's namespace inode at a socket hook; 0 from tc, whose
    /// records belong to the namespace its interfaces are in.
    pub netns: u32,
    pub _pad: u32,
    pub payload: [u8; TLS_CAPTURE],
}

/// Bytes of a frame copied in capture mode at most (a power of two: the
/// copy length is masked with `PACKET_CAPTURE - 1` for the verifier).
pub const PACKET_CAPTURE: usize = 2048;

/// A frame copied by the classifier in capture mode: from the Ethernet
/// header on, cut after the TCP header unless the segment carries TLS
/// handshake bytes, so no application payload is ever copied.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PacketRecord {
    pub header: RecordHeader,
    pub ifindex: u32,
    pub direction: u8,
    pub _pad: [u8; 3],
    /// Frame length on the wire, and how much of it is in `data`.
    pub wire_len: u32,
    pub captured: u32,
    pub data: [u8; PACKET_CAPTURE],
}

/// Key of the in-kernel map that follows a handshake record across segments.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowKey {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub family: u8,
    pub _pad: [u8; 3],
}

/// Flows userspace armed for drop accounting, both directions.
pub const MAX_ARMED: u32 = 4096;
/// (flow, reason, netns) drop counters kept in the kernel.
pub const MAX_DROP_KEYS: u32 = 8192;

/// Key of the in-kernel drop counters: one flow direction, one reason,
/// one namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropKey {
    pub flow: FlowKey,
    /// enum skb_drop_reason.
    pub reason: u32,
    /// Inode of the namespace of the device (or socket) the packet was on.
    pub netns: u32,
}

/// A drop of an armed flow's packet: the count so far for its key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropRecord {
    pub header: RecordHeader,
    /// Kernel text address of the dropping function (`location`).
    pub location: u64,
    pub key: DropKey,
    pub count: u32,
    pub _pad: u32,
}

/// (flow, type, code, netns) counters of ICMP errors sent, kept in the kernel.
pub const MAX_ICMP_KEYS: u32 = 4096;
/// (flow, state, reason, netns) counters of RSTs sent, kept in the kernel.
pub const MAX_RESET_KEYS: u32 = 4096;

/// Key of the in-kernel counters of ICMP errors this node sent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpKey {
    /// The offending packet's flow, in its own direction.
    pub flow: FlowKey,
    /// Inode of the namespace of the offending packet's device (or socket).
    pub netns: u32,
    /// ICMP type and code (3/1 host unreachable, 3/3 port unreachable,
    /// 3/4 fragmentation needed, 3/13 administratively prohibited).
    pub icmp_type: u8,
    pub code: u8,
    pub _pad: [u8; 2],
}

/// ICMP errors sent about one flow: the count so far for its key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpRecord {
    pub header: RecordHeader,
    pub key: IcmpKey,
    pub count: u32,
    pub _pad: u32,
}

/// Key of the in-kernel counters of RSTs this node's stack sent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResetKey {
    /// The RST's direction: this node's end is `saddr`/`sport`.
    pub flow: FlowKey,
    /// enum sk_rst_reason (`NO_SOCKET` = 1 on this kernel; names from tracefs).
    pub reason: u32,
    /// Inode of the socket's namespace, else of the device the packet
    /// that was answered came in on.
    pub netns: u32,
    /// Kernel TCP state of the socket; 0 when there was none.
    pub state: u8,
    pub _pad: [u8; 3],
}

/// RSTs sent on one flow: the count so far for its key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResetRecord {
    pub header: RecordHeader,
    pub key: ResetKey,
    pub count: u32,
}

/// Tracepoint record fields the programs read, found by name in the
/// running kernel's tracefs `format` by userspace and handed to the
/// programs as one load-time global ([`TpFields`]): an index here is a
/// slot there. Fields a kernel lacks are [`tp::ABSENT`] and not read.
pub mod tp {
    /// The slot of a field this kernel's record does not have.
    pub const ABSENT: u16 = u16::MAX;

    // tcp/tcp_retransmit_skb
    pub const RT_SKADDR: usize = 0;
    pub const RT_STATE: usize = 1;
    pub const RT_SPORT: usize = 2;
    pub const RT_DPORT: usize = 3;
    pub const RT_FAMILY: usize = 4;
    pub const RT_SADDR: usize = 5;
    pub const RT_DADDR: usize = 6;
    pub const RT_SADDR6: usize = 7;
    pub const RT_DADDR6: usize = 8;
    pub const RT_ERR: usize = 9;
    // tcp/tcp_retransmit_synack
    pub const SA_SKADDR: usize = 10;
    pub const SA_SPORT: usize = 11;
    pub const SA_DPORT: usize = 12;
    pub const SA_FAMILY: usize = 13;
    pub const SA_SADDR: usize = 14;
    pub const SA_DADDR: usize = 15;
    pub const SA_SADDR6: usize = 16;
    pub const SA_DADDR6: usize = 17;
    // tcp/tcp_receive_reset
    pub const RR_SKADDR: usize = 18;
    pub const RR_SPORT: usize = 19;
    pub const RR_DPORT: usize = 20;
    pub const RR_FAMILY: usize = 21;
    pub const RR_SADDR: usize = 22;
    pub const RR_DADDR: usize = 23;
    pub const RR_SADDR6: usize = 24;
    pub const RR_DADDR6: usize = 25;
    // sock/inet_sock_set_state
    pub const SS_SKADDR: usize = 26;
    pub const SS_NEWSTATE: usize = 27;
    pub const SS_PROTOCOL: usize = 28;
    // skb/kfree_skb
    pub const KF_SKBADDR: usize = 29;
    pub const KF_LOCATION: usize = 30;
    pub const KF_PROTOCOL: usize = 31;
    pub const KF_REASON: usize = 32;
    // icmp/icmp_send
    pub const IC_SKBADDR: usize = 33;
    pub const IC_TYPE: usize = 34;
    pub const IC_CODE: usize = 35;
    pub const IC_ULEN: usize = 36;
    // tcp/tcp_send_reset: newer kernels carry the ends as sockaddrs
    // (`saddr`/`daddr`, 28 bytes), older ones as the other TCP
    // tracepoints do (ports, family, IPv4 and IPv6 addresses).
    pub const SR_SKBADDR: usize = 37;
    pub const SR_SKADDR: usize = 38;
    pub const SR_STATE: usize = 39;
    pub const SR_REASON: usize = 40;
    pub const SR_SOCKADDR_S: usize = 41;
    pub const SR_SOCKADDR_D: usize = 42;
    pub const SR_SPORT: usize = 43;
    pub const SR_DPORT: usize = 44;
    pub const SR_FAMILY: usize = 45;
    pub const SR_SADDR: usize = 46;
    pub const SR_DADDR: usize = 47;
    pub const SR_SADDR6: usize = 48;
    pub const SR_DADDR6: usize = 49;
    // neigh/neigh_update
    pub const NU_FAMILY: usize = 50;
    pub const NU_DEV: usize = 51;
    pub const NU_LLADDR: usize = 52;
    pub const NU_LLADDR_LEN: usize = 53;
    pub const NU_FLAGS: usize = 54;
    pub const NU_NUD_STATE: usize = 55;
    pub const NU_DEAD: usize = 56;
    pub const NU_KEY4: usize = 57;
    pub const NU_KEY6: usize = 58;
    pub const NU_NEW_LLADDR: usize = 59;
    pub const NU_NEW_STATE: usize = 60;
    pub const NU_UPDATE_FLAGS: usize = 61;
    pub const NU_PID: usize = 62;
    /// Slots in [`super::TpFields`].
    pub const COUNT: usize = 64;

    /// Every slot: (tracepoint, field name, size the programs read). A
    /// field of another size on the running kernel counts as absent.
    pub const FIELDS: &[(usize, &str, &str, u32)] = &[
        (RT_SKADDR, "tcp/tcp_retransmit_skb", "skaddr", 8),
        (RT_STATE, "tcp/tcp_retransmit_skb", "state", 4),
        (RT_SPORT, "tcp/tcp_retransmit_skb", "sport", 2),
        (RT_DPORT, "tcp/tcp_retransmit_skb", "dport", 2),
        (RT_FAMILY, "tcp/tcp_retransmit_skb", "family", 2),
        (RT_SADDR, "tcp/tcp_retransmit_skb", "saddr", 4),
        (RT_DADDR, "tcp/tcp_retransmit_skb", "daddr", 4),
        (RT_SADDR6, "tcp/tcp_retransmit_skb", "saddr_v6", 16),
        (RT_DADDR6, "tcp/tcp_retransmit_skb", "daddr_v6", 16),
        (RT_ERR, "tcp/tcp_retransmit_skb", "err", 4),
        (SA_SKADDR, "tcp/tcp_retransmit_synack", "skaddr", 8),
        (SA_SPORT, "tcp/tcp_retransmit_synack", "sport", 2),
        (SA_DPORT, "tcp/tcp_retransmit_synack", "dport", 2),
        (SA_FAMILY, "tcp/tcp_retransmit_synack", "family", 2),
        (SA_SADDR, "tcp/tcp_retransmit_synack", "saddr", 4),
        (SA_DADDR, "tcp/tcp_retransmit_synack", "daddr", 4),
        (SA_SADDR6, "tcp/tcp_retransmit_synack", "saddr_v6", 16),
        (SA_DADDR6, "tcp/tcp_retransmit_synack", "daddr_v6", 16),
        (RR_SKADDR, "tcp/tcp_receive_reset", "skaddr", 8),
        (RR_SPORT, "tcp/tcp_receive_reset", "sport", 2),
        (RR_DPORT, "tcp/tcp_receive_reset", "dport", 2),
        (RR_FAMILY, "tcp/tcp_receive_reset", "family", 2),
        (RR_SADDR, "tcp/tcp_receive_reset", "saddr", 4),
        (RR_DADDR, "tcp/tcp_receive_reset", "daddr", 4),
        (RR_SADDR6, "tcp/tcp_receive_reset", "saddr_v6", 16),
        (RR_DADDR6, "tcp/tcp_receive_reset", "daddr_v6", 16),
        (SS_SKADDR, "sock/inet_sock_set_state", "skaddr", 8),
        (SS_NEWSTATE, "sock/inet_sock_set_state", "newstate", 4),
        (SS_PROTOCOL, "sock/inet_sock_set_state", "protocol", 2),
        (KF_SKBADDR, "skb/kfree_skb", "skbaddr", 8),
        (KF_LOCATION, "skb/kfree_skb", "location", 8),
        (KF_PROTOCOL, "skb/kfree_skb", "protocol", 2),
        (KF_REASON, "skb/kfree_skb", "reason", 4),
        (IC_SKBADDR, "icmp/icmp_send", "skbaddr", 8),
        (IC_TYPE, "icmp/icmp_send", "type", 4),
        (IC_CODE, "icmp/icmp_send", "code", 4),
        (IC_ULEN, "icmp/icmp_send", "ulen", 2),
        (SR_SKBADDR, "tcp/tcp_send_reset", "skbaddr", 8),
        (SR_SKADDR, "tcp/tcp_send_reset", "skaddr", 8),
        (SR_STATE, "tcp/tcp_send_reset", "state", 4),
        (SR_REASON, "tcp/tcp_send_reset", "reason", 4),
        (SR_SOCKADDR_S, "tcp/tcp_send_reset", "saddr", 28),
        (SR_SOCKADDR_D, "tcp/tcp_send_reset", "daddr", 28),
        (SR_SPORT, "tcp/tcp_send_reset", "sport", 2),
        (SR_DPORT, "tcp/tcp_send_reset", "dport", 2),
        (SR_FAMILY, "tcp/tcp_send_reset", "family", 2),
        (SR_SADDR, "tcp/tcp_send_reset", "saddr", 4),
        (SR_DADDR, "tcp/tcp_send_reset", "daddr", 4),
        (SR_SADDR6, "tcp/tcp_send_reset", "saddr_v6", 16),
        (SR_DADDR6, "tcp/tcp_send_reset", "daddr_v6", 16),
        (NU_FAMILY, "neigh/neigh_update", "family", 4),
        (NU_DEV, "neigh/neigh_update", "dev", 4),
        (NU_LLADDR, "neigh/neigh_update", "lladdr", 32),
        (NU_LLADDR_LEN, "neigh/neigh_update", "lladdr_len", 1),
        (NU_FLAGS, "neigh/neigh_update", "flags", 1),
        (NU_NUD_STATE, "neigh/neigh_update", "nud_state", 1),
        (NU_DEAD, "neigh/neigh_update", "dead", 1),
        (NU_KEY4, "neigh/neigh_update", "primary_key4", 4),
        (NU_KEY6, "neigh/neigh_update", "primary_key6", 16),
        (NU_NEW_LLADDR, "neigh/neigh_update", "new_lladdr", 32),
        (NU_NEW_STATE, "neigh/neigh_update", "new_state", 1),
        (NU_UPDATE_FLAGS, "neigh/neigh_update", "update_flags", 4),
        (NU_PID, "neigh/neigh_update", "pid", 4),
    ];
}

/// Offsets of the tracepoint fields the programs read, by [`tp`] slot;
/// [`tp::ABSENT`] where the running kernel's record lacks the field.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TpFields {
    pub off: [u16; tp::COUNT],
}

impl TpFields {
    pub const ABSENT: Self = Self {
        off: [tp::ABSENT; tp::COUNT],
    };

    pub fn has(&self, slot: usize) -> bool {
        self.off.get(slot).is_some_and(|o| *o != tp::ABSENT)
    }
}

impl Default for TpFields {
    fn default() -> Self {
        Self::ABSENT
    }
}

/// Byte range of a handshake record still to come on a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FollowState {
    pub start_seq: u32,
    pub end_seq: u32,
}

/// Kernel structure offsets, found in BTF by userspace and handed to the
/// programs as globals (aya-ebpf has no CO-RE relocations). 0 = unknown.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `sock.__sk_common.skc_net` (pointer to `struct net`).
    pub sock_net: u32,
    /// `net.ns.inum`.
    pub net_inum: u32,
    /// `tcp_sock.snd_una` and `tcp_sock.snd_nxt`.
    pub tcp_snd_una: u32,
    pub tcp_snd_nxt: u32,
    /// `sk_buff.head` (pointer), `.network_header` and `.transport_header`
    /// (u16 offsets from head), `.dev` and `.sk` (pointers).
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    pub skb_dev: u32,
    pub skb_sk: u32,
    /// `net_device.nd_net.net` (pointer to `struct net`).
    pub netdev_net: u32,
    /// `sock.__sk_common.skc_v6_daddr` (then `skc_v6_rcv_saddr`), when the
    /// head of `sock_common` has its long-standing layout (daddr 0,
    /// rcv_saddr 4, dport 12, num 14, family 16, state 18); 0 otherwise,
    /// and the retransmit program falls back to the formatted tracepoint.
    pub sock_v6_daddr: u32,
}

const _: () = assert!(size_of::<RecordHeader>() == 16);
const _: () = assert!(size_of::<TcpRecord>() == 96);
const _: () = assert!(size_of::<Owner>() == 20);
const _: () = assert!(size_of::<NeighRecord>() == 80);
const _: () = assert!(size_of::<ArpRecord>() == 80);
const _: () = assert!(size_of::<TlsRecord>() == 88 + TLS_CAPTURE);
const _: () = assert!(size_of::<PacketRecord>() == 32 + PACKET_CAPTURE);
const _: () = assert!(size_of::<FlowKey>() == 40);
const _: () = assert!(size_of::<KernelOffsets>() == 44);
const _: () = assert!(size_of::<DropKey>() == 48);
const _: () = assert!(size_of::<DropRecord>() == 80);
const _: () = assert!(size_of::<IcmpKey>() == 48);
const _: () = assert!(size_of::<IcmpRecord>() == 72);
const _: () = assert!(size_of::<ResetKey>() == 52);
const _: () = assert!(size_of::<ResetRecord>() == 72);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data: repr(C), integers and byte arrays only, no padding holes.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FollowState {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::TpFields {}
    unsafe impl aya::Pod for super::DropKey {}
    unsafe impl aya::Pod for super::IcmpKey {}
    unsafe impl aya::Pod for super::ResetKey {}
    unsafe impl aya::Pod for super::PinSlot {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_bitmap_sets_one_bit_per_port() {
        let w = port_bitmap(&[0, 63, 64, 443, 6443, 65535]);
        assert_eq!(w[0], 1 | 1 << 63);
        assert_eq!(w[1], 1);
        assert_eq!(w[443 / 64], 1 << (443 % 64));
        assert_eq!(w[6443 / 64], 1 << (6443 % 64));
        assert_eq!(w[1023], 1 << 63);
        let set: u32 = w.iter().map(|x| x.count_ones()).sum();
        assert_eq!(set, 6);
        assert_eq!(port_bitmap(&[]), [0; PORT_WORDS]);
        assert_eq!(reason_bitmap([0, 65, 255, 256, 70000]), [1, 2, 0, 1 << 63]);
    }
}
