//! An aya loader that carries no kernel BTF.
//!
//! aya 0.14's `EbpfLoader::new()` reads and parses /sys/kernel/btf/vmlinux
//! whatever is set afterwards: about 45 ms and 17 MiB of heap here, most of
//! netprobe's start-up and peak memory. The parse serves CO-RE relocations
//! only, and netprobe's object has none (a test below checks it); its
//! struct offsets come from [`crate::kernel::btf_offsets`]. aya 0.15 reads the file
//! only when an object needs it, but needs a newer rustc than this project
//! can use (../shared/toolchain.md).
//!
//! So the loader is built on a short-lived thread that may not open files:
//! a seccomp filter of its own (not synchronised to other threads) answers
//! open calls with ENOENT, the read fails, and the loader comes out as
//! `.btf(None)` would have left it. The filter leaves with the thread. Where
//! it cannot be installed, the loader is built the usual way.

use aya::EbpfLoader;
use log::debug;

/// A loader without kernel BTF, and whether the read was avoided.
pub fn without_kernel_btf() -> (EbpfLoader<'static>, bool) {
    let built = std::thread::Builder::new()
        .name("loader".into())
        .spawn(|| {
            let sandboxed = deny_opens()
                .inspect_err(|e| debug!("loader: no seccomp filter ({e}); aya parses kernel BTF"))
                .is_ok();
            (EbpfLoader::new(), sandboxed)
        })
        .and_then(|t| {
            t.join()
                .map_err(|_| std::io::Error::other("loader thread panicked"))
        });
    built.unwrap_or_else(|e| {
        debug!("loader thread: {e}");
        (EbpfLoader::new(), false)
    })
}

/// `AUDIT_ARCH_*` of the architectures whose open calls are listed.
#[cfg(target_arch = "x86_64")]
const ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const ARCH: u32 = 0xc000_00b7;

#[cfg(target_arch = "x86_64")]
const OPENS: &[libc::c_long] = &[libc::SYS_open, libc::SYS_openat, libc::SYS_openat2];
#[cfg(target_arch = "aarch64")]
const OPENS: &[libc::c_long] = &[libc::SYS_openat, libc::SYS_openat2];

/// Makes every open call of the calling thread fail with ENOENT, from now
/// until it exits. Other threads are not affected.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn deny_opens() -> std::io::Result<()> {
    let prog = filter(ARCH, OPENS);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl/seccomp calls; `fprog` points into `prog`, which
    // outlives them. Without SECCOMP_FILTER_FLAG_TSYNC the filter and the
    // no_new_privs bit (which an unprivileged filter needs) are this
    // thread's only.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let installed = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        );
        if installed != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn deny_opens() -> std::io::Result<()> {
    Err(std::io::Error::other(
        "open calls not listed for this architecture",
    ))
}

/// Classic BPF over `seccomp_data`: on `arch`, the calls in `denied` return
/// ENOENT; everything else (and any other arch) is allowed.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
fn filter(arch: u32, denied: &[libc::c_long]) -> Vec<libc::sock_filter> {
    const NR: u32 = 0; // offsetof(struct seccomp_data, nr)
    const ARCH_AT: u32 = 4; // offsetof(struct seccomp_data, arch)
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let n = denied.len() as u8;
    let mut prog = vec![
        stmt(load, ARCH_AT),
        // Another arch: skip the number checks to ALLOW.
        jeq(arch, 0, n + 1),
        stmt(load, NR),
    ];
    for (i, nr) in denied.iter().enumerate() {
        // Match: jump over the remaining checks and ALLOW to the ERRNO.
        prog.push(jeq(*nr as u32, n - i as u8, 0));
    }
    prog.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
    prog.push(stmt(
        libc::BPF_RET | libc::BPF_K,
        libc::SECCOMP_RET_ERRNO | (libc::ENOENT as u32 & libc::SECCOMP_RET_DATA),
    ));
    prog
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loader may go without kernel BTF only while the object has no
    /// CO-RE relocations: a program that gains one must fail here, not at
    /// load time on some node.
    #[test]
    fn object_needs_no_kernel_btf() {
        let obj = aya_obj::Object::parse(crate::kernel::probes::OBJECT).unwrap();
        assert!(!obj.has_btf_relocations());
        assert!(!obj.programs.is_empty());
    }

    #[test]
    fn loader_has_no_btf_and_the_caller_can_still_open_files() {
        let (loader, sandboxed) = without_kernel_btf();
        assert!(sandboxed);
        let shown = format!("{loader:?}");
        assert!(shown.contains("btf: None"), "{shown}");
        // The filter was the loader thread's only.
        std::fs::read("/proc/self/status").unwrap();
        std::thread::spawn(|| std::fs::read("/proc/self/status").unwrap())
            .join()
            .unwrap();
    }

    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[test]
    fn filter_denies_opens_on_its_thread_only() {
        let inside = std::thread::spawn(|| {
            deny_opens().unwrap();
            let err = std::fs::File::open("/proc/self/status").unwrap_err();
            // Reading an open descriptor and the clock still work.
            let _ = std::time::Instant::now();
            err.raw_os_error()
        });
        assert_eq!(inside.join().unwrap(), Some(libc::ENOENT));
        std::fs::File::open("/proc/self/status").unwrap();
    }

    /// Jump offsets: a match lands on the ERRNO return, another arch on ALLOW.
    #[test]
    fn filter_jumps_land_on_the_returns() {
        let prog = filter(7, &[1, 2, 3]);
        let allow = prog.len() - 2;
        let errno = prog.len() - 1;
        assert_eq!(prog[allow].k, libc::SECCOMP_RET_ALLOW);
        assert_eq!(
            prog[errno].k & !libc::SECCOMP_RET_DATA,
            libc::SECCOMP_RET_ERRNO
        );
        // Arch check at 1: false branch goes to ALLOW.
        assert_eq!(1 + 1 + prog[1].jf as usize, allow);
        for (i, check) in prog.iter().enumerate().take(allow).skip(3) {
            assert_eq!(i + 1 + check.jt as usize, errno, "check {i}");
            assert_eq!(check.jf, 0);
        }
    }
}
