//! The few bpf(2) calls the per-packet bench needs and bpftool does not
//! give: an empty TC program to measure the floor against (same frames,
//! same run), and `bpf_prog_info.verified_insns` (this Debian bpftool does
//! not print it).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::Command;

use probe_user::kernel::prog_info::{Attr, BPF_PROG_LOAD, bpf, owned};
pub use probe_user::kernel::prog_info::{ProgInfo, enable_run_time_stats, prog_fd, prog_info};

use netprobe_tests::cmd::run_bounded;

const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;

/// `r0 = -1 (TCX_NEXT); exit`: what a TC hook costs with a program that
/// does nothing. Unloaded when the descriptor is dropped.
pub fn load_empty() -> io::Result<OwnedFd> {
    load_return(BPF_PROG_TYPE_SCHED_CLS, -1, b"np_bench_empty")
}

const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;

/// `r0 = 1 (allow); exit` as a `cgroup_skb` program: the floor of the
/// socket hooks.
pub fn load_empty_cgroup_skb() -> io::Result<OwnedFd> {
    load_return(BPF_PROG_TYPE_CGROUP_SKB, 1, b"np_bench_cgskb")
}

/// Loads `r0 = ret; exit` as a program of type `prog_type`.
fn load_return(prog_type: u32, ret: i32, name: &[u8]) -> io::Result<OwnedFd> {
    let mut insns = [0u8; 16];
    insns[0] = 0xb7; // mov64 r0, imm
    insns[4..8].copy_from_slice(&ret.to_le_bytes());
    insns[8] = 0x95; // exit
    let license = b"GPL\0";
    let mut attr = Attr::new();
    attr.u32(0, prog_type)
        .u32(4, 2)
        .u64(8, insns.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64);
    let n = name.len().min(15);
    attr.0[48..48 + n].copy_from_slice(&name[..n]);
    bpf(BPF_PROG_LOAD, &mut attr).map(owned)
}

const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_SAMPLE_RAW: u64 = 1 << 10;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;

/// `r0 = 0; exit` on tracepoint `category/name`: the floor a tracepoint
/// program pays (dispatch, and the run-time accounting's clock reads),
/// measured beside netprobe's on the same calls. The program's id and the
/// descriptors that keep it attached.
pub fn attach_empty_tracepoint(category: &str, name: &str) -> io::Result<(u32, OwnedFd, OwnedFd)> {
    let prog = load_return(BPF_PROG_TYPE_TRACEPOINT, 0, b"np_bench_tpnl")?;
    let id = prog_info(prog.as_fd())?.id;
    let tp_id: u64 =
        std::fs::read_to_string(format!("/sys/kernel/tracing/events/{category}/{name}/id"))?
            .trim()
            .parse()
            .map_err(io::Error::other)?;
    // struct perf_event_attr (its first 64 bytes; size says so).
    let mut pattr = [0u8; 128];
    pattr[0..4].copy_from_slice(&PERF_TYPE_TRACEPOINT.to_ne_bytes());
    pattr[4..8].copy_from_slice(&128u32.to_ne_bytes());
    pattr[8..16].copy_from_slice(&tp_id.to_ne_bytes());
    pattr[16..24].copy_from_slice(&1u64.to_ne_bytes()); // sample_period
    pattr[24..32].copy_from_slice(&PERF_SAMPLE_RAW.to_ne_bytes());
    pattr[48..52].copy_from_slice(&1u32.to_ne_bytes()); // wakeup_events
    // SAFETY: a zero-tailed perf_event_attr of the stated size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            pattr.as_ptr(),
            -1 as libc::c_int,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let perf = owned(fd);
    for (req, arg) in [
        (PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd() as libc::c_ulong),
        (PERF_EVENT_IOC_ENABLE, 0),
    ] {
        // SAFETY: ioctls on the perf event descriptor we own.
        if unsafe { libc::ioctl(perf.as_raw_fd(), req, arg) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((id, prog, perf))
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
