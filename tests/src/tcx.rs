//! A foreign tcx program at the head of a hook, as a CNI puts its own, a
//! few instructions loaded and linked with raw bpf(2) calls (no compiler
//! for BPF C is on these machines): [`Action::Pass`] (`r0 = TCX_PASS`) or
//! [`Action::RedirectPeer`] (Cilium's `bpf_redirect_peer` into a veth's
//! other end). Either verdict ends the chain on that hook: the packet goes
//! on, and no program after it sees it. Detached when dropped (closing the
//! link fd).

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use crate::netns::Netns;

/// Names the kernel shows for the programs (`bpftool prog`, tcx queries).
pub const NAME: &str = "np_lab_pass";
pub const REDIRECT_NAME: &str = "np_lab_redirect";

/// What the program does with every packet.
#[derive(Clone, Debug)]
pub enum Action {
    /// TCX_PASS: deliver as usual.
    Pass,
    /// `bpf_redirect_peer(ifindex of this veth, 0)`: straight into the
    /// ingress of its peer, in the peer's namespace.
    RedirectPeer(String),
}

/// BPF_FUNC_redirect_peer.
const REDIRECT_PEER: i32 = 155;

/// One 8-byte instruction: opcode, dst and src registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    let [o0, o1] = off.to_le_bytes();
    let [i0, i1, i2, i3] = imm.to_le_bytes();
    u64::from_le_bytes([code, (src << 4) | dst, o0, o1, i0, i1, i2, i3])
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;
/// With relative_fd 0: before every program on the hook.
const BPF_F_BEFORE: u32 = 1 << 3;

/// `union bpf_attr` as BPF_PROG_LOAD reads it; the tail stays zero.
#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    _rest: [u8; 64],
}

/// `union bpf_attr` as BPF_LINK_CREATE reads it for tcx.
#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    _pad: u32,
    expected_revision: u64,
    _rest: [u8; 96],
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<OwnedFd> {
    // SAFETY: attr is a live, fully initialised bpf_attr of the given size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: bpf(2) returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) })
}

/// A pass-through program linked first on one hook; unlinked on drop.
pub struct HeadProgram {
    _link: OwnedFd,
    _prog: OwnedFd,
}

impl HeadProgram {
    /// Links [`NAME`] at the head of `ifname`'s ingress (or egress) tcx
    /// hook in `ns`. Panics with the kernel's error.
    pub fn attach_first(ns: &Netns, ifname: &str, ingress: bool) -> HeadProgram {
        Self::attach_first_doing(ns, ifname, ingress, Action::Pass)
    }

    /// Links a program doing `action` at the head of the hook.
    pub fn attach_first_doing(
        ns: &Netns,
        ifname: &str,
        ingress: bool,
        action: Action,
    ) -> HeadProgram {
        let ns_path = ns.path();
        let ifname = ifname.to_string();
        // setns applies to the calling thread only: a short-lived thread
        // enters the namespace, so the test's own threads stay where they are.
        std::thread::spawn(move || -> Result<HeadProgram, String> {
            let nsf =
                std::fs::File::open(&ns_path).map_err(|e| format!("{}: {e}", ns_path.display()))?;
            // SAFETY: a valid namespace fd; affects this thread only.
            if unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns: {}", std::io::Error::last_os_error()));
            }
            let cname = CString::new(ifname.clone()).unwrap();
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
            if ifindex == 0 {
                return Err(format!("no interface {ifname}"));
            }
            const MOV64_IMM: u8 = 0xb7;
            const CALL: u8 = 0x85;
            const EXIT: u8 = 0x95;
            let (insns, prog_name) = match &action {
                // r0 = 0 (TCX_PASS); exit.
                Action::Pass => (
                    vec![insn(MOV64_IMM, 0, 0, 0, 0), insn(EXIT, 0, 0, 0, 0)],
                    NAME,
                ),
                // r0 = bpf_redirect_peer(ifindex, 0): TCX_REDIRECT; exit.
                Action::RedirectPeer(to) => {
                    let cto = CString::new(to.clone()).unwrap();
                    // SAFETY: a NUL-terminated name.
                    let to_index = unsafe { libc::if_nametoindex(cto.as_ptr()) };
                    if to_index == 0 {
                        return Err(format!("no interface {to}"));
                    }
                    (
                        vec![
                            insn(MOV64_IMM, 1, 0, 0, to_index as i32),
                            insn(MOV64_IMM, 2, 0, 0, 0),
                            insn(CALL, 0, 0, 0, REDIRECT_PEER),
                            insn(EXIT, 0, 0, 0, 0),
                        ],
                        REDIRECT_NAME,
                    )
                }
            };
            let license = c"GPL";
            let mut name = [0u8; 16];
            name[..prog_name.len()].copy_from_slice(prog_name.as_bytes());
            let mut load = ProgLoad {
                prog_type: BPF_PROG_TYPE_SCHED_CLS,
                insn_cnt: insns.len() as u32,
                insns: insns.as_ptr() as u64,
                license: license.as_ptr() as u64,
                log_level: 0,
                log_size: 0,
                log_buf: 0,
                kern_version: 0,
                prog_flags: 0,
                prog_name: name,
                _rest: [0; 64],
            };
            let prog = bpf(BPF_PROG_LOAD, &mut load).map_err(|e| format!("BPF_PROG_LOAD: {e}"))?;
            let mut link = LinkCreate {
                prog_fd: prog.as_raw_fd() as u32,
                target_ifindex: ifindex,
                attach_type: if ingress {
                    BPF_TCX_INGRESS
                } else {
                    BPF_TCX_EGRESS
                },
                flags: BPF_F_BEFORE,
                relative_fd: 0,
                _pad: 0,
                expected_revision: 0,
                _rest: [0; 96],
            };
            let link = bpf(BPF_LINK_CREATE, &mut link)
                .map_err(|e| format!("BPF_LINK_CREATE on {ifname}: {e}"))?;
            Ok(HeadProgram {
                _link: link,
                _prog: prog,
            })
        })
        .join()
        .expect("attach thread panicked")
        .unwrap_or_else(|e| panic!("attaching {NAME} first: {e}"))
    }
}

const BPF_PROG_QUERY: libc::c_long = 16;

/// `union bpf_attr` as BPF_PROG_QUERY reads it (by ifindex).
#[repr(C)]
struct ProgQuery {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    count: u32,
    _pad: u32,
    _rest: [u8; 96],
}

/// Number of programs on each interface's (ingress, egress) tcx hooks in
/// `ns`; None for an interface that is not there (any more).
pub fn hook_counts(ns: &Netns, ifnames: &[String]) -> Vec<Option<(u32, u32)>> {
    let ns_path = ns.path();
    let ifnames = ifnames.to_vec();
    // setns on a short-lived thread, as in attach_first_doing.
    std::thread::spawn(move || -> Result<Vec<Option<(u32, u32)>>, String> {
        let nsf =
            std::fs::File::open(&ns_path).map_err(|e| format!("{}: {e}", ns_path.display()))?;
        // SAFETY: a valid namespace fd; affects this thread only.
        if unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        let count = |ifindex: u32, attach_type: u32| -> Option<u32> {
            let mut ids = [0u32; 64];
            let mut q = ProgQuery {
                target_ifindex: ifindex,
                attach_type,
                query_flags: 0,
                attach_flags: 0,
                prog_ids: ids.as_mut_ptr() as u64,
                count: ids.len() as u32,
                _pad: 0,
                _rest: [0; 96],
            };
            // bpf() returns 0 here, no fd: nothing to wrap.
            // SAFETY: q is a live, fully initialised bpf_attr; ids outlives the call.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_PROG_QUERY,
                    &mut q as *mut ProgQuery,
                    std::mem::size_of::<ProgQuery>() as libc::c_uint,
                )
            };
            (rc == 0).then_some(q.count)
        };
        Ok(ifnames
            .iter()
            .map(|name| {
                let cname = CString::new(name.clone()).ok()?;
                // SAFETY: a NUL-terminated name.
                let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
                if ifindex == 0 {
                    return None;
                }
                Some((
                    count(ifindex, BPF_TCX_INGRESS)?,
                    count(ifindex, BPF_TCX_EGRESS)?,
                ))
            })
            .collect())
    })
    .join()
    .expect("query thread panicked")
    .unwrap_or_else(|e| panic!("querying tcx hooks: {e}"))
}
