//! Loading the eBPF object and attaching its programs: tracepoints once, the
//! TC classifier per interface (tcx; netlink clsact where tcx is missing).
//! Dropping `Probes` detaches everything; tcx and perf links also vanish
//! when the process dies, even on SIGKILL.

use std::{
    collections::{HashMap, HashSet},
    os::fd::AsFd as _,
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{Program, RawTracePoint, SchedClassifier, TcAttachType, TracePoint, tc},
};
use log::{debug, warn};
use probe_common::{AF_INET, AF_INET6, FlowKey, KernelOffsets, TpFields, kind};

use crate::kernel::capability::{self, CAPABILITIES, RETRANSMIT_RAW, RETRANSMIT_TP, Status};

pub use crate::kernel::tcx::Done;

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
pub(crate) static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe"));

pub const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("tcp_receive_reset", "tcp", "tcp_receive_reset"),
    ("neigh_update", "neigh", "neigh_update"),
    ("sock_state", "sock", "inet_sock_set_state"),
    ("skb_kfree", "skb", "kfree_skb"),
    ("icmp_send", "icmp", "icmp_send"),
    ("tcp_send_reset", "tcp", "tcp_send_reset"),
    ("synack_retrans", "tcp", "tcp_retransmit_synack"),
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
    /// The drop reasons `kfree_skb` counts
    /// ([`crate::kernel::tracefs::path_reason_bitmap`]).
    pub path_reasons: [u64; probe_common::REASON_WORDS],
    /// `tcp_retransmit_skb` passes the attempt's error
    /// ([`crate::kernel::tracefs::retransmit_has_err`]).
    pub retransmit_err: bool,
    /// Socket-hook records only from the namespaces in `NODE_NETNS`
    /// (see [`crate::kernel::sockets`]).
    pub netns_filter: bool,
    /// Where this kernel's tracepoint records keep the programs' fields
    /// ([`crate::kernel::tracefs::tp_fields`]).
    pub tp_fields: TpFields,
    /// `doctor`: verify every program, the formatted retransmit tracepoint
    /// too where the raw one loads.
    pub verify_all: bool,
}

/// Pending bytes at which the programs wake the reader: an eighth of the
/// ring, at most 64 KiB. Below that the reader drains on its own timer
/// ([`crate::trace::DRAIN_INTERVAL`], the correlator's tick), so a burst costs one wake-up and a
/// trickle none; the eighth leaves room for what comes while it wakes.
pub fn wake_bytes(ring_bytes: u32) -> u64 {
    (u64::from(ring_bytes) / 8).min(64 * 1024)
}

/// Loads and attaches the retransmit program: `tcp_retransmit_skb` as a
/// raw tracepoint when BTF gave the socket's layout (it is guarded per
/// program, so other BPF programs running on the CPU do not make it skip
/// retransmits), else the formatted tracepoint (when its record has the
/// fields). Returns which, or every reason neither runs. With `verify_all`
/// the formatted one is verified too (and refusals of either are in
/// `refused`).
fn load_retransmit(
    ebpf: &mut Ebpf,
    offsets: &KernelOffsets,
    formatted: Result<(), String>,
    verify_all: bool,
    refused: &mut Vec<(&'static str, String)>,
) -> Result<&'static str, String> {
    let mut why = Vec::new();
    let mut chosen = None;
    if offsets.sock_v6_daddr != 0 {
        let raw: Result<&mut RawTracePoint, String> = ebpf
            .program_mut(RETRANSMIT_RAW)
            .ok_or_else(|| format!("program {RETRANSMIT_RAW} missing"))
            .and_then(|p| p.try_into().map_err(|e| format!("{e}")));
        let loaded = raw.and_then(|raw| {
            raw.load().map_err(|e| {
                let v = verifier_line(&e);
                refused.push((RETRANSMIT_RAW, v.clone()));
                format!("{RETRANSMIT_RAW} refused by the verifier: {v}")
            })?;
            raw.attach("tcp_retransmit_skb")
                .map_err(|e| format!("attaching raw tracepoint tcp_retransmit_skb: {e}"))
        });
        match loaded {
            Ok(_) => chosen = Some(RETRANSMIT_RAW),
            Err(e) => {
                warn!("{e}; using the formatted tracepoint");
                why.push(e);
            }
        }
    } else {
        why.push("no socket layout from BTF for the raw tracepoint".to_string());
    }
    if chosen.is_some() && !verify_all {
        return Ok(RETRANSMIT_RAW);
    }
    let formatted = formatted.and_then(|()| {
        let tp: &mut TracePoint = ebpf
            .program_mut(RETRANSMIT_TP)
            .ok_or_else(|| format!("program {RETRANSMIT_TP} missing"))?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        tp.load().map_err(|e| {
            let v = verifier_line(&e);
            refused.push((RETRANSMIT_TP, v.clone()));
            format!("{RETRANSMIT_TP} refused by the verifier: {v}")
        })?;
        if chosen.is_none() {
            tp.attach("tcp", "tcp_retransmit_skb")
                .map_err(|e| format!("attaching tracepoint tcp/tcp_retransmit_skb: {e}"))?;
        }
        Ok(())
    });
    match (chosen, formatted) {
        (Some(c), _) => Ok(c),
        (None, Ok(())) => Ok(RETRANSMIT_TP),
        (None, Err(e)) => {
            why.push(e);
            Err(why.join("; "))
        }
    }
}

/// The line of a verifier refusal that says why (aya's error carries the
/// whole log), e.g. `combined stack size of 3 calls is 544. Too large`.
pub fn verifier_line(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            summarise_verifier_log(&log).unwrap_or_else(|| format!("{io_error}"))
        }
        other => format!("{other}"),
    }
}

/// The last line of a verifier log that is not its statistics.
pub fn summarise_verifier_log(log: &str) -> Option<String> {
    log.lines()
        .map(str::trim)
        .rfind(|l| {
            !(l.is_empty()
                || l.starts_with("processed ")
                || l.starts_with("verification time")
                || l.starts_with("stack depth")
                || l.starts_with("mark_precise"))
        })
        .map(str::to_string)
}

#[cfg(test)]
mod verifier_tests {
    #[test]
    fn the_refusal_line_is_the_last_that_is_not_statistics() {
        let log = "0: (bf) r6 = r1\n; stack depth\ncombined stack size of 3 calls is 544. Too large\nverification time 1620 usec\nstack depth 320+80+144\nprocessed 1200 insns (limit 1000000)\n\n";
        assert_eq!(
            super::summarise_verifier_log(log).as_deref(),
            Some("combined stack size of 3 calls is 544. Too large")
        );
        assert_eq!(super::summarise_verifier_log(""), None);
    }
}

/// How the classifier was attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    Tcx,
    Clsact,
}

/// The classifier links on one interface, by program name (clsact).
type Links = Vec<(&'static str, tc::SchedClassifierLinkId)>;

/// Who makes the links: a thread for tcx (see [`crate::kernel::tcx`]), aya's
/// netlink path inline on kernels without tcx.
enum Linker {
    Tcx(crate::kernel::tcx::Attacher),
    Clsact {
        links: HashMap<u32, (String, Links)>,
        done: tokio::sync::mpsc::UnboundedSender<Done>,
    },
    /// The classifiers are off on this kernel: interfaces are answered as
    /// done without links.
    Off(tokio::sync::mpsc::UnboundedSender<Done>),
}

pub struct Probes {
    ebpf: Ebpf,
    /// Which retransmit program runs: the raw tracepoint's, or the
    /// formatted tracepoint's where the socket's layout is unknown.
    retransmit: &'static str,
    linker: Option<Linker>,
    /// Interfaces asked for and not detached since (linked or on the way).
    requested: HashSet<u32>,
    /// ifindex -> name, for the interfaces whose links are made.
    attached: HashMap<u32, String>,
    /// Every capability, on or off and why ([`crate::kernel::capability`]).
    capabilities: Vec<Status>,
    /// Programs the verifier refused, with its reason.
    refused: Vec<(&'static str, String)>,
}

impl Probes {
    /// Loads the object and every capability's programs; a capability
    /// whose tracepoint is missing, whose record lacks a field it needs or
    /// whose program the verifier refuses is off (see
    /// [`Probes::capabilities`]), the rest run. Errors only when the
    /// object itself cannot be loaded.
    pub fn load(opts: &LoadOptions) -> anyhow::Result<Self> {
        let (loader, btf_skipped) = crate::kernel::loader::without_kernel_btf();
        debug!("loader without kernel BTF: {btf_skipped}");
        let mut loader: EbpfLoader<'_> = loader;
        let mut ebpf = loader
            .map_max_entries("EVENTS", opts.ring_bytes)
            .override_global("KERNEL_OFFSETS", &opts.offsets, true)
            .override_global("TP_FIELDS", &opts.tp_fields, true)
            .override_global("CAPTURE_PACKETS", &u8::from(opts.capture_packets), true)
            .override_global(
                "WATCHED_PORTS",
                &probe_common::port_bitmap(&opts.ports),
                true,
            )
            .override_global("PATH_REASONS", &opts.path_reasons, true)
            .override_global("RETRANSMIT_HAS_ERR", &u8::from(opts.retransmit_err), true)
            .override_global("WAKE_BYTES", &wake_bytes(opts.ring_bytes), true)
            .override_global("NETNS_FILTER", &u8::from(opts.netns_filter), true)
            .load(OBJECT)
            .map_err(|e| anyhow!("loading the eBPF object: {e}"))?;
        let release = kernel_release();
        // What tracefs allows, per capability.
        let judged: Vec<Result<String, String>> = CAPABILITIES
            .iter()
            .map(|cap| {
                let exists = cap.tracepoint.is_some_and(crate::kernel::tracefs::exists);
                capability::judge_fields(cap, exists, &opts.tp_fields, &release)
            })
            .collect();
        // Verify the programs of the capabilities still on (retransmit's
        // apart: it picks one of two).
        let wanted: Vec<&'static str> = CAPABILITIES
            .iter()
            .zip(&judged)
            .filter(|(cap, j)| j.is_ok() && cap.name != "retransmits")
            .flat_map(|(cap, _)| cap.programs.iter().copied())
            .collect();
        let mut refused = load_programs(&mut ebpf, &wanted)?;
        let mut capabilities = Vec::new();
        let mut retransmit = RETRANSMIT_TP;
        for (cap, judged) in CAPABILITIES.iter().zip(judged) {
            let status = if cap.name == "retransmits" {
                let formatted = judged.clone().map(drop);
                let mut also = Vec::new();
                let got = load_retransmit(
                    &mut ebpf,
                    &opts.offsets,
                    formatted,
                    opts.verify_all,
                    &mut also,
                );
                refused.extend(also);
                match got {
                    Ok(prog) => {
                        retransmit = prog;
                        let note = if prog == RETRANSMIT_RAW {
                            String::new()
                        } else {
                            judged.unwrap_or_default()
                        };
                        Status::on(cap, note)
                    }
                    Err(why) => Status::off(cap, why),
                }
            } else {
                match judged {
                    Err(why) => Status::off(cap, why),
                    Ok(note) => {
                        let bad: Vec<String> = cap
                            .programs
                            .iter()
                            .filter_map(|p| {
                                refused
                                    .iter()
                                    .find(|(r, _)| r == p)
                                    .map(|(r, v)| format!("{r} refused by the verifier: {v}"))
                            })
                            .collect();
                        if !bad.is_empty() {
                            Status::off(cap, bad.join("; "))
                        } else if let Some((category, name)) =
                            cap.tracepoint.and_then(|t| t.split_once('/'))
                        {
                            match attach_tracepoint(&mut ebpf, cap.programs[0], category, name) {
                                Ok(()) => Status::on(cap, note),
                                Err(e) => Status::off(cap, format!("{e:#}")),
                            }
                        } else {
                            Status::on(cap, note)
                        }
                    }
                }
            };
            capabilities.push(status);
        }
        Ok(Self {
            ebpf,
            retransmit,
            linker: None,
            requested: HashSet::new(),
            attached: HashMap::new(),
            capabilities,
            refused,
        })
    }

    /// Every capability, on or off and why, in [`CAPABILITIES`] order.
    pub fn capabilities(&self) -> &[Status] {
        &self.capabilities
    }

    /// Programs the verifier refused, with the line that says why.
    pub fn refused(&self) -> &[(&'static str, String)] {
        &self.refused
    }

    fn classifiers_on(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| c.name == "tc classifier" && c.on)
    }

    /// Starts linking: results of [`Probes::attach`] and [`Probes::detach`]
    /// come back on `done`, to be handed to [`Probes::completed`].
    pub fn start_linking(
        &mut self,
        done: tokio::sync::mpsc::UnboundedSender<Done>,
    ) -> anyhow::Result<()> {
        if !self.classifiers_on() {
            self.linker = Some(Linker::Off(done));
            return Ok(());
        }
        if !tcx_supported() {
            self.linker = Some(Linker::Clsact {
                links: HashMap::new(),
                done,
            });
            return Ok(());
        }
        let mut hooks = Vec::new();
        for (prog, attach_type) in CLASSIFIERS {
            let cls = self.ebpf.program(prog).context("classifier missing")?;
            let fd = cls.fd()?.try_clone()?;
            let id = cls.info()?.id();
            hooks.push(crate::kernel::tcx::Hook {
                prog,
                fd,
                id,
                attach_type: *attach_type,
            });
        }
        let attacher = crate::kernel::tcx::Attacher::start(hooks, done)
            .context("starting the attach thread")?;
        self.linker = Some(Linker::Tcx(attacher));
        Ok(())
    }

    /// Attaches the socket programs to the root cgroup (see
    /// [`crate::kernel::sockets`]); returns the cgroup's path.
    pub fn attach_sockets(&mut self) -> anyhow::Result<std::path::PathBuf> {
        if !self
            .capabilities()
            .iter()
            .any(|c| c.name == "socket hooks" && c.on)
        {
            bail!("the verifier refused them on this kernel");
        }
        crate::kernel::sockets::attach(&mut self.ebpf)
    }

    /// Makes the kernel report socket-hook records for exactly these
    /// namespaces (when it filters at all).
    pub fn set_node_netns(&mut self, inodes: &HashSet<u32>) -> anyhow::Result<()> {
        crate::kernel::sockets::sync_map(&mut self.ebpf, inodes)
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

    /// The owner probes' MAC per pin slot (see `state::owner`).
    pub fn pin_map(&mut self) -> anyhow::Result<aya::maps::Array<MapData, probe_common::PinSlot>> {
        let map = self
            .ebpf
            .take_map("PIN_MAC")
            .context("map PIN_MAC missing")?;
        Ok(aya::maps::Array::try_from(map)?)
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
            .map(|(prog, _, _)| prog)
            .chain([&self.retransmit])
            .filter_map(|prog| {
                let fd = self.ebpf.program(prog)?.fd().ok()?;
                let info = crate::kernel::prog_info::prog_info(fd.as_fd()).ok()?;
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

    /// Asked for (linked, or its links on the way).
    pub fn is_requested(&self, ifindex: u32) -> bool {
        self.requested.contains(&ifindex)
    }

    pub fn attached_count(&self) -> usize {
        self.attached.len()
    }

    /// Asks for both directions on `ifindex`; the outcome comes back as a
    /// [`Done`]. Asking twice is asking once.
    pub fn attach(&mut self, ifindex: u32, name: &str) {
        if !self.requested.insert(ifindex) {
            return;
        }
        match self.linker.as_mut() {
            Some(Linker::Tcx(attacher)) => attacher.attach(ifindex, name),
            Some(Linker::Clsact { links, done }) => {
                let out = match clsact_attach(&mut self.ebpf, name) {
                    Ok(l) => {
                        links.insert(ifindex, (name.to_string(), l));
                        Done::Attached {
                            index: ifindex,
                            name: name.to_string(),
                            report: Vec::new(),
                        }
                    }
                    Err(e) => Done::Failed {
                        index: ifindex,
                        name: name.to_string(),
                        error: format!("{e:#}"),
                    },
                };
                let _ = done.send(out);
            }
            Some(Linker::Off(done)) => {
                let _ = done.send(Done::Detached {
                    index: ifindex,
                    name: name.to_string(),
                });
            }
            None => {}
        }
    }

    /// Asks to forget an interface (unlinking fails harmlessly when it is
    /// gone); a [`Done::Detached`] follows if it was asked for.
    pub fn detach(&mut self, ifindex: u32) {
        if !self.requested.remove(&ifindex) {
            return;
        }
        match self.linker.as_mut() {
            Some(Linker::Tcx(attacher)) => attacher.detach(ifindex),
            Some(Linker::Clsact { links, done }) => {
                if let Some((name, l)) = links.remove(&ifindex) {
                    clsact_detach(&mut self.ebpf, l);
                    let _ = done.send(Done::Detached {
                        index: ifindex,
                        name,
                    });
                }
            }
            Some(Linker::Off(_)) | None => {}
        }
    }

    /// Takes in what the linker did; the mode for an interface now linked.
    pub fn completed(&mut self, done: &Done) -> Option<AttachMode> {
        match done {
            Done::Attached { index, name, .. } => {
                self.attached.insert(*index, name.clone());
                Some(match self.linker {
                    Some(Linker::Clsact { .. }) => AttachMode::Clsact,
                    _ => AttachMode::Tcx,
                })
            }
            Done::Failed { index, .. } => {
                self.requested.remove(index);
                None
            }
            Done::Detached { index, .. } => {
                self.attached.remove(index);
                None
            }
        }
    }

    /// Unlinks everything now and waits for it (one grace period per hook
    /// for interfaces still there).
    pub fn detach_all(&mut self) {
        match self.linker.take() {
            Some(Linker::Tcx(mut attacher)) => attacher.stop(),
            Some(Linker::Clsact { links, .. }) => {
                for (_, (_, l)) in links {
                    clsact_detach(&mut self.ebpf, l);
                }
            }
            Some(Linker::Off(_)) | None => {}
        }
        self.requested.clear();
        self.attached.clear();
        self.unload_all();
    }

    /// Unloads every program, each on a thread of its own: closing a
    /// tracepoint's perf event waits for an RCU grace period (~75 ms
    /// here), and one after the other the nine of them made exit take
    /// half a second. Side by side they wait for about one.
    fn unload_all(&mut self) {
        let progs: Vec<(&str, &mut Program)> = self.ebpf.programs_mut().collect();
        std::thread::scope(|s| {
            for (name, prog) in progs {
                let spawned = std::thread::Builder::new()
                    .name("netprobe-unload".into())
                    .spawn_scoped(s, move || {
                        let unloaded = match prog {
                            Program::TracePoint(p) => p.unload(),
                            Program::RawTracePoint(p) => p.unload(),
                            Program::SchedClassifier(p) => p.unload(),
                            Program::CgroupSkb(p) => p.unload(),
                            _ => Ok(()),
                        };
                        if let Err(e) = unloaded {
                            debug!("unloading {name}: {e}");
                        }
                    });
                if let Err(e) = spawned {
                    debug!("unloading {name} on a thread of its own: {e}");
                }
            }
        });
    }
}

/// Attaches a loaded tracepoint program.
fn attach_tracepoint(
    ebpf: &mut Ebpf,
    prog: &str,
    category: &str,
    name: &str,
) -> anyhow::Result<()> {
    let tp: &mut TracePoint = ebpf
        .program_mut(prog)
        .with_context(|| format!("program {prog} missing"))?
        .try_into()?;
    tp.attach(category, name)
        .map_err(|e| anyhow!("attaching tracepoint {category}/{name}: {e}"))?;
    debug!("attached {category}/{name}");
    Ok(())
}

/// The running kernel's release (uname -r).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "this kernel".into())
}

/// Verifies the programs named in `wanted`, two at a time: the verifier
/// is most of the start-up and runs on one CPU per load. The two
/// classifiers, the largest, go to different threads. Returns the ones
/// the verifier refused, each with the line that says why; errors only
/// when a program is missing from the object.
fn load_programs(
    ebpf: &mut Ebpf,
    wanted: &[&'static str],
) -> anyhow::Result<Vec<(&'static str, String)>> {
    for prog in TRACEPOINTS
        .iter()
        .map(|(p, _, _)| p)
        .chain(CLASSIFIERS.iter().map(|(p, _)| p))
    {
        if ebpf.program(prog).is_none() {
            bail!("program {prog} missing");
        }
    }
    let mut progs: Vec<(&'static str, &mut Program)> = ebpf
        .programs_mut()
        .filter_map(|(n, p)| wanted.iter().find(|w| **w == n).map(|w| (*w, p)))
        .collect();
    // Classifiers first, then alternate: each thread gets one of them.
    progs.sort_by_key(|(n, _)| !CLASSIFIERS.iter().any(|(p, _)| p == n));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (i, p) in progs.into_iter().enumerate() {
        if i % 2 == 0 { a.push(p) } else { b.push(p) }
    }
    let load_all = |group: Vec<(&'static str, &mut Program)>| -> Vec<(&'static str, String)> {
        let mut refused = Vec::new();
        for (name, prog) in group {
            let loaded = match prog {
                Program::TracePoint(p) => p.load(),
                Program::SchedClassifier(p) => p.load(),
                Program::CgroupSkb(p) => p.load(),
                _ => {
                    refused.push((name, "of an unexpected program type".to_string()));
                    continue;
                }
            };
            if let Err(e) = loaded {
                let line = verifier_line(&e);
                warn!("{name} refused by the verifier: {line}");
                refused.push((name, line));
            }
        }
        refused
    };
    std::thread::scope(|s| {
        let other = std::thread::Builder::new()
            .name("netprobe-load".into())
            .spawn_scoped(s, || load_all(b))
            .context("starting a loader thread")?;
        let mut mine = load_all(a);
        let theirs = other
            .join()
            .map_err(|_| anyhow!("the loader thread panicked"))?;
        mine.extend(theirs);
        Ok(mine)
    })
}

/// Kernels without tcx: a clsact qdisc and a netlink filter per direction;
/// on failure nothing stays attached to `name`.
///
/// Netlink filters outlive their process (a SIGKILL leaves them behind):
/// netprobe's own, found by its programs' names, are removed first.
fn clsact_attach(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<Links> {
    let _ = tc::qdisc_add_clsact(name);
    for removed in remove_leftovers(name) {
        warn!(
            "removed netprobe's leftover clsact filter {removed} on {name} (a netprobe that did not exit cleanly)"
        );
    }
    let mut links = Vec::new();
    for (prog, attach_type) in CLASSIFIERS {
        let cls: &mut SchedClassifier = ebpf
            .program_mut(prog)
            .context("classifier missing")?
            .try_into()?;
        match cls.attach_with_options(
            name,
            *attach_type,
            tc::TcAttachOptions::Netlink(tc::NlOptions::default()),
        ) {
            Ok(link) => links.push((*prog, link)),
            Err(e) => {
                clsact_detach(ebpf, links);
                return Err(anyhow!("attaching {prog} to {name}: {e}"));
            }
        }
    }
    Ok(links)
}

/// Removes clsact filters of netprobe's classifiers (by program name) from
/// `iface`; returns what was removed ("tc_ingress ingress", ...).
pub fn remove_leftovers(iface: &str) -> Vec<String> {
    CLASSIFIERS
        .iter()
        .filter(|(prog, attach_type)| tc::qdisc_detach_program(iface, *attach_type, prog).is_ok())
        .map(|(prog, attach_type)| format!("{prog} {}", direction(*attach_type)))
        .collect()
}

fn clsact_detach(ebpf: &mut Ebpf, links: Links) {
    for (prog, link) in links {
        if let Some(Ok(cls)) = ebpf.program_mut(prog).map(<&mut SchedClassifier>::try_from) {
            let _ = cls.detach(link);
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

/// Whether the kernel has tcx, probed (not judged by version): querying a
/// tcx hook of `lo` fails on kernels without it (and without the rights).
/// NETPROBE_FORCE_CLSACT=1 takes the clsact path anyway (tests).
pub fn tcx_supported() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        if std::env::var_os("NETPROBE_FORCE_CLSACT").is_some_and(|v| v == "1") {
            return false;
        }
        let q = SchedClassifier::query_tcx("lo", TcAttachType::Ingress);
        if let Err(e) = &q {
            debug!("no tcx: querying lo's tcx ingress hook: {e}");
        }
        q.is_ok()
    })
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

    #[test]
    fn wake_bytes_is_an_eighth_of_the_ring_at_most_64_kib() {
        assert_eq!(wake_bytes(4 * 1024), 512);
        assert_eq!(wake_bytes(256 * 1024), 32 * 1024);
        assert_eq!(wake_bytes(4 * 1024 * 1024), 64 * 1024);
    }
}
