//! The few bpf(2) calls the per-packet bench needs and bpftool does not
//! give: an empty TC program to measure the floor against (same frames,
//! same run), and `bpf_prog_info.verified_insns` (this Debian bpftool does
//! not print it).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::process::Command;

use netprobe_tests::cmd::run_bounded;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;

/// `union bpf_attr`, large enough for the commands above (the kernel
/// accepts a shorter or longer attr as long as the tail is zero).
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Attr {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Attr {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, zero-tailed bpf_attr of the stated size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            std::mem::size_of::<Attr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned(rc: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this new descriptor.
    unsafe { OwnedFd::from_raw_fd(rc as RawFd) }
}

/// `r0 = -1 (TCX_NEXT); exit`: what a TC hook costs with a program that
/// does nothing. Unloaded when the descriptor is dropped.
pub fn load_empty() -> io::Result<OwnedFd> {
    let insns: [u8; 16] = [
        0xb7, 0x00, 0, 0, 0xff, 0xff, 0xff, 0xff, // mov64 r0, -1
        0x95, 0, 0, 0, 0, 0, 0, 0, // exit
    ];
    let license = b"GPL\0";
    let mut attr = Attr::new();
    attr.u32(0, BPF_PROG_TYPE_SCHED_CLS)
        .u32(4, 2)
        .u64(8, insns.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64);
    attr.0[48..48 + 14].copy_from_slice(b"np_bench_empty");
    bpf(BPF_PROG_LOAD, &mut attr).map(owned)
}

pub struct ProgInfo {
    pub id: u32,
    pub jited_len: u32,
    pub xlated_len: u32,
    /// Instructions the verifier processed (all paths, all call sites).
    pub verified_insns: u32,
    /// Runs the kernel skipped because a BPF program was already running on
    /// that CPU (tracepoints: any kprobe/tracepoint program, anyone's).
    pub recursion_misses: u64,
}

pub fn prog_fd(id: u32) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32(0, id);
    bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).map(owned)
}

pub fn prog_info(fd: &OwnedFd) -> io::Result<ProgInfo> {
    use std::os::fd::AsRawFd;
    // struct bpf_prog_info is 232 bytes on 6.x; room to spare.
    let mut info = [0u8; 256];
    let mut attr = Attr::new();
    attr.u32(0, fd.as_raw_fd() as u32)
        .u32(4, info.len() as u32)
        .u64(8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let at = |off: usize| u32::from_ne_bytes(info[off..off + 4].try_into().expect("4 bytes"));
    let at64 = |off: usize| u64::from_ne_bytes(info[off..off + 8].try_into().expect("8 bytes"));
    Ok(ProgInfo {
        id: at(4),
        jited_len: at(16),
        xlated_len: at(20),
        verified_insns: at(216),
        recursion_misses: at64(208),
    })
}

/// Stack bytes per function of program `id` (main first), from its
/// translated code: the deepest r10-relative slot each function touches,
/// as the verifier's "stack depth a+b+c" would say it. bpftool prints
/// one signature line per function (the program has BTF).
pub fn stack_per_function(id: u32) -> io::Result<Vec<u32>> {
    let mut c = Command::new("bpftool");
    c.args(["prog", "dump", "xlated", "id", &id.to_string()]);
    let done = run_bounded(&mut c, std::time::Duration::from_secs(30));
    if !done.success() {
        return Err(io::Error::other(done.report()));
    }
    Ok(stack_depths(&done.stdout()))
}

/// See [`stack_per_function`]: `(r10 -N)` operands, and `rX = r10` then
/// `rX += -N` (addresses of stack slots passed to helpers).
fn stack_depths(dump: &str) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    let mut frame_reg: Option<String> = None;
    for line in dump.lines() {
        let t = line.trim();
        if !t.starts_with(|c: char| c.is_ascii_digit()) {
            if !t.starts_with(';') && t.ends_with("):") {
                out.push(0);
            }
            continue;
        }
        let Some(cur) = out.last_mut() else {
            out.push(0);
            continue;
        };
        // "12: (7b) *(u64 *)(r10 -8) = r1"
        let body = t.split_once(") ").map_or(t, |(_, b)| b);
        let mut deepest = 0u32;
        let mut rest = body;
        while let Some(i) = rest.find("(r10 -") {
            rest = &rest[i + 6..];
            let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
            deepest = deepest.max(n.parse().unwrap_or(0));
        }
        if let Some((reg, rhs)) = body.split_once(" = ") {
            frame_reg = (rhs.trim() == "r10").then(|| reg.trim().to_string());
        } else if let Some(reg) = &frame_reg
            && let Some(n) = body.strip_prefix(&format!("{reg} += -"))
        {
            deepest = deepest.max(n.trim().parse().unwrap_or(0));
            frame_reg = None;
        }
        *cur = (*cur).max(deepest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_from_a_dump() {
        let dump = "int main(struct __sk_buff * ctx):\n\
            ; comment\n   0: (7b) *(u64 *)(r10 -24) = r1\n   1: (bf) r2 = r10\n   \
            2: (07) r2 += -40\n   3: (95) exit\nint sub(void):\n   4: (b7) r0 = 0\n   \
            5: (63) *(u32 *)(r10 -4) = r0\n";
        assert_eq!(stack_depths(dump), [40, 4]);
    }
}
