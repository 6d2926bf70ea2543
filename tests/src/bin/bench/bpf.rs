//! The few bpf(2) calls the per-packet bench needs and bpftool does not
//! give: an empty TC program to measure the floor against (same frames,
//! same run), and `bpf_prog_info.verified_insns` (this Debian bpftool does
//! not print it).

use std::io;
use std::os::fd::OwnedFd;
use std::process::Command;

use probe_user::prog_info::{Attr, BPF_PROG_LOAD, bpf, owned};
pub use probe_user::prog_info::{ProgInfo, prog_fd, prog_info};

use netprobe_tests::cmd::run_bounded;

const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;

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
