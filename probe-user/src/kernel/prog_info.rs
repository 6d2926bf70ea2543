//! The bpf(2) calls aya 0.14 does not wrap: `bpf_prog_info` of a loaded
//! program (verified instructions, run time and count, and the runs the
//! kernel skipped because another BPF program was running on that CPU),
//! turning run-time statistics on, and loading a raw program.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// `union bpf_attr`, large enough for the commands above (the kernel
/// accepts a shorter or longer attr as long as the tail is zero).
#[repr(C, align(8))]
pub struct Attr(pub [u8; 128]);

impl Default for Attr {
    fn default() -> Self {
        Self::new()
    }
}

impl Attr {
    pub fn new() -> Attr {
        Attr([0; 128])
    }
    pub fn u32(&mut self, off: usize, v: u32) -> &mut Attr {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    pub fn u64(&mut self, off: usize, v: u64) -> &mut Attr {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

pub fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
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

pub fn owned(rc: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this new descriptor.
    unsafe { OwnedFd::from_raw_fd(rc as RawFd) }
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
    /// Time spent in the program and its runs, counted only while run-time
    /// statistics are on ([`enable_run_time_stats`]).
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

pub fn prog_fd(id: u32) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32(0, id);
    bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).map(owned)
}

pub fn prog_info(fd: BorrowedFd<'_>) -> io::Result<ProgInfo> {
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
        run_time_ns: at64(192),
        run_cnt: at64(200),
    })
}

const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_STATS_RUN_TIME: u32 = 0;

/// Turns on the kernel's per-program run time and run count accounting
/// for as long as the descriptor lives (it costs two clock reads a run, so
/// it is off by default).
pub fn enable_run_time_stats() -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32(0, BPF_STATS_RUN_TIME);
    bpf(BPF_ENABLE_STATS, &mut attr).map(owned)
}
