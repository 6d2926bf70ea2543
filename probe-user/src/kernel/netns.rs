//! Network namespaces: which one we are in, and entering another one
//! (`--netns NAME|PATH`) before any thread or socket exists.

use std::{fs::File, os::fd::AsRawFd, os::unix::fs::MetadataExt, path::PathBuf};

use anyhow::{Context as _, bail};

/// Inode of this thread's network namespace, as `ls -L -i /proc/self/ns/net`.
pub fn current_inode() -> Option<u32> {
    std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .map(|m| m.ino() as u32)
}

/// `NAME` means /run/netns/NAME (as `ip netns` makes them); anything with a
/// slash is a path, e.g. /proc/PID/ns/net of a pod's process.
pub fn resolve(spec: &str) -> PathBuf {
    if spec.contains('/') {
        PathBuf::from(spec)
    } else {
        PathBuf::from("/run/netns").join(spec)
    }
}

/// Moves the calling thread into the namespace. Call it before the runtime
/// starts: threads spawned later inherit it.
pub fn enter(spec: &str) -> anyhow::Result<()> {
    let path = resolve(spec);
    let file = File::open(&path)
        .with_context(|| format!("network namespace {} not found", path.display()))?;
    // SAFETY: plain syscall on an fd we own.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EPERM) {
            bail!(
                "cannot enter network namespace {}: permission denied (needs CAP_SYS_ADMIN)",
                path.display()
            );
        }
        bail!(
            "cannot enter network namespace {}: {err} (is it a network namespace?)",
            path.display()
        );
    }
    Ok(())
}
