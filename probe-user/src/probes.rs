//! Loading the eBPF object and attaching its programs: tracepoints once, the
//! TC classifier per interface (tcx; netlink clsact where tcx is missing).
//! Dropping `Probes` detaches everything; tcx and perf links also vanish
//! when the process dies, even on SIGKILL.

use std::{collections::HashMap, os::fd::AsFd as _};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{LinkOrder, SchedClassifier, TcAttachType, TracePoint, tc},
};
use log::debug;
use probe_common::{AF_INET, AF_INET6, FlowKey, KernelOffsets, kind};

/// The kernel's key for one direction of a flow (ports in host order).
fn flow_key(src: std::net::SocketAddr, dst: std::net::SocketAddr) -> FlowKey {
    let bytes = |ip: std::net::IpAddr| {
        let mut b = [0u8; 16];
        match ip {
            std::net::IpAddr::V4(a) => b[..4].copy_from_slice(&a.octets()),
            std::net::IpAddr::V6(a) => b = a.octets(),
        }
        b
    };
    FlowKey {
        saddr: bytes(src.ip()),
        daddr: bytes(dst.ip()),
        sport: src.port(),
        dport: dst.port(),
        family: if src.is_ipv4() { AF_INET } else { AF_INET6 },
        _pad: [0; 3],
    }
}

/// The compiled eBPF object, built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe"));

pub const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("tcp_retransmit", "tcp", "tcp_retransmit_skb"),
    ("tcp_receive_reset", "tcp", "tcp_receive_reset"),
    ("neigh_update", "neigh", "neigh_update"),
    ("sock_state", "sock", "inet_sock_set_state"),
    ("skb_kfree", "skb", "kfree_skb"),
    ("icmp_send", "icmp", "icmp_send"),
    ("tcp_send_reset", "tcp", "tcp_send_reset"),
];
pub const CLASSIFIERS: &[(&str, TcAttachType)] = &[
    ("tc_ingress", TcAttachType::Ingress),
    ("tc_egress", TcAttachType::Egress),
];

pub struct LoadOptions {
    pub ring_bytes: u32,
    pub offsets: KernelOffsets,
    pub ports: Vec<u16>,
    /// Copy packets for a capture bundle.
    pub capture_packets: bool,
}

/// How the classifier was attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    Tcx,
    Clsact,
}

/// The classifier links on one interface, by program name.
type Links = Vec<(&'static str, tc::SchedClassifierLinkId)>;

pub struct Probes {
    ebpf: Ebpf,
    /// ifindex -> (name, links of the ingress and egress programs).
    attached: HashMap<u32, (String, Links)>,
}

impl Probes {
    pub fn load(opts: &LoadOptions) -> anyhow::Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", opts.ring_bytes)
            .override_global("KERNEL_OFFSETS", &opts.offsets, true)
            .override_global("CAPTURE_PACKETS", &u8::from(opts.capture_packets), true)
            .override_global(
                "WATCHED_PORTS",
                &probe_common::port_bitmap(&opts.ports),
                true,
            )
            .override_global(
                "PATH_REASONS",
                &crate::tracefs::path_reason_bitmap(&crate::tracefs::drop_reasons()),
                true,
            )
            .load(OBJECT)
            .map_err(|e| anyhow!("loading the eBPF object: {e}"))?;
        for (prog, category, name) in TRACEPOINTS {
            let tp: &mut TracePoint = ebpf
                .program_mut(prog)
                .with_context(|| format!("program {prog} missing"))?
                .try_into()?;
            tp.load()
                .map_err(|e| anyhow!("loading {prog} (verifier): {e}"))?;
            tp.attach(category, name)
                .map_err(|e| anyhow!("attaching tracepoint {category}/{name}: {e}"))?;
            debug!("attached {category}/{name}");
        }
        for (prog, _) in CLASSIFIERS {
            let cls: &mut SchedClassifier = ebpf
                .program_mut(prog)
                .with_context(|| format!("program {prog} missing"))?
                .try_into()?;
            cls.load()
                .map_err(|e| anyhow!("loading {prog} (verifier): {e}"))?;
        }
        Ok(Self {
            ebpf,
            attached: HashMap::new(),
        })
    }

    /// Counts this flow's drops from now on, both directions (an LRU map:
    /// old flows fall out by themselves).
    pub fn arm(
        &mut self,
        src: std::net::SocketAddr,
        dst: std::net::SocketAddr,
    ) -> anyhow::Result<()> {
        let mut armed: aya::maps::HashMap<_, FlowKey, u8> =
            aya::maps::HashMap::try_from(self.ebpf.map_mut("ARMED").context("map ARMED missing")?)?;
        for (a, b) in [(src, dst), (dst, src)] {
            armed.insert(flow_key(a, b), 1, 0)?;
        }
        Ok(())
    }

    pub fn ring_buffer(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        let map = self.ebpf.take_map("EVENTS").context("map EVENTS missing")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Runs of each tracepoint program the kernel skipped because another
    /// BPF program (anyone's) was running on that CPU: events that never
    /// reached the ring buffer. (program, runs skipped)
    pub fn skipped(&self) -> Vec<(&'static str, u64)> {
        TRACEPOINTS
            .iter()
            .filter_map(|(prog, _, _)| {
                let fd = self.ebpf.program(prog)?.fd().ok()?;
                let info = crate::prog_info::prog_info(fd.as_fd()).ok()?;
                Some((*prog, info.recursion_misses))
            })
            .collect()
    }

    /// Records lost to a full ring buffer since load, by kind (summed over CPUs).
    pub fn lost(&self) -> anyhow::Result<[u64; kind::COUNT as usize]> {
        let map: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("LOST").context("map LOST missing")?)?;
        let mut out = [0u64; kind::COUNT as usize];
        for (k, slot) in out.iter_mut().enumerate() {
            *slot = map.get(&(k as u32), 0)?.iter().sum();
        }
        Ok(out)
    }

    pub fn is_attached(&self, ifindex: u32) -> bool {
        self.attached.contains_key(&ifindex)
    }

    pub fn attached_count(&self) -> usize {
        self.attached.len()
    }

    /// Attaches both directions; on failure nothing stays attached to `name`.
    pub fn attach(&mut self, ifindex: u32, name: &str) -> anyhow::Result<AttachMode> {
        let mut links = Vec::new();
        let mut mode = AttachMode::Tcx;
        for (prog, attach_type) in CLASSIFIERS {
            let cls: &mut SchedClassifier = self
                .ebpf
                .program_mut(prog)
                .context("classifier missing")?
                .try_into()?;
            let link = if tcx_supported() {
                // At the head of the chain: a CNI program ahead of ours that
                // redirects (bpf_redirect_peer) or returns a verdict other
                // than TCX_NEXT would hide the packet from us.
                cls.attach_with_options(
                    name,
                    *attach_type,
                    tc::TcAttachOptions::TcxOrder(LinkOrder::first()),
                )
            } else {
                // Kernels without tcx: a clsact qdisc and a netlink filter.
                mode = AttachMode::Clsact;
                let _ = tc::qdisc_add_clsact(name);
                cls.attach_with_options(
                    name,
                    *attach_type,
                    tc::TcAttachOptions::Netlink(tc::NlOptions::default()),
                )
            };
            match link {
                Ok(link) => links.push((*prog, link)),
                Err(e) => {
                    self.detach_links(links);
                    return Err(anyhow!("attaching {prog} to {name}: {e}"));
                }
            }
        }
        self.attached.insert(ifindex, (name.to_string(), links));
        Ok(mode)
    }

    /// Forgets an interface; detaching fails harmlessly when it is gone.
    pub fn detach(&mut self, ifindex: u32) -> Option<String> {
        let (name, links) = self.attached.remove(&ifindex)?;
        self.detach_links(links);
        Some(name)
    }

    fn detach_links(&mut self, links: Links) {
        for (prog, link) in links {
            if let Some(Ok(cls)) = self
                .ebpf
                .program_mut(prog)
                .map(<&mut SchedClassifier>::try_from)
            {
                let _ = cls.detach(link);
            }
        }
    }

    /// One line per hook of `iface` where netprobe shares the tcx chain
    /// with other programs (empty when alone, or without tcx).
    pub fn hook_report(&self, iface: &str) -> Vec<String> {
        if !tcx_supported() {
            return Vec::new();
        }
        CLASSIFIERS
            .iter()
            .filter_map(|(prog, attach_type)| {
                let ours = self.ebpf.program(prog)?.info().ok()?.id();
                let chain = tcx_chain(iface, *attach_type).ok()?;
                let desc = describe_chain(&chain, ours)?;
                Some(format!("{iface} {}: {desc}", direction(*attach_type)))
            })
            .collect()
    }

    pub fn detach_all(&mut self) {
        let all: Vec<u32> = self.attached.keys().copied().collect();
        for ifindex in all {
            self.detach(ifindex);
        }
    }
}

/// One program on a tcx hook, in the kernel's running order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookProgram {
    pub id: u32,
    pub name: String,
}

/// The programs on one tcx hook of `iface`, first to run first.
pub fn tcx_chain(iface: &str, attach_type: TcAttachType) -> anyhow::Result<Vec<HookProgram>> {
    let (_, programs) = SchedClassifier::query_tcx(iface, attach_type)
        .map_err(|e| anyhow!("querying the tcx chain of {iface}: {e}"))?;
    Ok(programs
        .iter()
        .map(|p| HookProgram {
            id: p.id(),
            name: p.name_as_str().unwrap_or("?").to_string(),
        })
        .collect())
}

/// Where netprobe's classifier (program `ours`) sits on a hook and who
/// else is there, e.g. `position 1 of 2 (after it: cil_from_container id
/// 41)`; None when it runs alone or is not there.
pub fn describe_chain(chain: &[HookProgram], ours: u32) -> Option<String> {
    let at = chain.iter().position(|p| p.id == ours)?;
    if chain.len() == 1 {
        return None;
    }
    let list = |ps: &[HookProgram]| {
        ps.iter()
            .map(|p| format!("{} id {}", p.name, p.id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!("position {} of {}", at + 1, chain.len());
    if at > 0 {
        out.push_str(&format!(
            " (before it, able to hide packets: {})",
            list(&chain[..at])
        ));
    }
    if at + 1 < chain.len() {
        out.push_str(&format!(" (after it: {})", list(&chain[at + 1..])));
    }
    Some(out)
}

pub fn direction(attach_type: TcAttachType) -> &'static str {
    match attach_type {
        TcAttachType::Ingress => "ingress",
        TcAttachType::Egress => "egress",
        TcAttachType::Custom(_) => "custom",
    }
}

/// tcx needs Linux 6.6.
pub fn tcx_supported() -> bool {
    aya::util::KernelVersion::current()
        .map(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
        .unwrap_or(false)
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.detach_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prog(id: u32, name: &str) -> HookProgram {
        HookProgram {
            id,
            name: name.into(),
        }
    }

    #[test]
    fn chain_descriptions() {
        assert_eq!(describe_chain(&[prog(7, "tc_ingress")], 7), None);
        assert_eq!(describe_chain(&[prog(3, "other")], 7), None);
        assert_eq!(
            describe_chain(&[prog(7, "tc_ingress"), prog(3, "cil")], 7).as_deref(),
            Some("position 1 of 2 (after it: cil id 3)")
        );
        // Another netprobe's program of the same name is someone else.
        assert_eq!(
            describe_chain(
                &[prog(3, "cil"), prog(5, "tc_ingress"), prog(7, "tc_ingress")],
                7
            )
            .as_deref(),
            Some("position 3 of 3 (before it, able to hide packets: cil id 3, tc_ingress id 5)")
        );
    }
}
