//! The background task that keeps the [`Directory`] current: one listing
//! at start, then on request (an event named a namespace or pod not known
//! yet) at most every [`MIN_GAP`], and every [`PERIOD`] regardless. Never
//! on the start-up path; a runtime that is absent or does not answer leaves
//! the cgroup identity alone.

use std::{
    net::IpAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use super::{
    client::Runtime,
    directory::{ContainerName, Directory, Sandbox},
    grpc::Error,
    info,
};
use crate::model::pod::Pod;

pub const MIN_GAP: Duration = Duration::from_secs(2);
pub const PERIOD: Duration = Duration::from_secs(60);
/// Each call to the runtime, and connecting.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Sandboxes read per listing at most, and status calls per refresh.
const MAX_SANDBOXES: usize = 4096;
const MAX_STATUS_CALLS: usize = 512;
const NSFS_MAGIC: i64 = 0x6e73_6673;

pub async fn run(socket: PathBuf, dir: Arc<Mutex<Directory>>, nudge: Arc<Notify>) {
    let mut runtime: Option<Runtime> = None;
    let mut warned = false;
    loop {
        let started = Instant::now();
        match refresh(&socket, &mut runtime, &dir).await {
            Ok((pods, containers)) => {
                warned = false;
                log::debug!(
                    "CRI {}: {pods} pod sandboxes, {containers} containers in {:?}",
                    socket.display(),
                    started.elapsed()
                );
            }
            Err(e) => {
                runtime = None;
                let absent =
                    matches!(&e, Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound);
                if absent || warned {
                    log::debug!("CRI {}: {e}", socket.display());
                } else {
                    warned = true;
                    log::warn!(
                        "pod names from the container runtime at {}: {e}; naming pods by cgroup only",
                        socket.display()
                    );
                }
            }
        }
        tokio::select! {
            _ = nudge.notified() => {}
            _ = tokio::time::sleep(PERIOD) => {}
        }
        let since = started.elapsed();
        if since < MIN_GAP {
            tokio::time::sleep(MIN_GAP - since).await;
        }
    }
}

async fn refresh(
    socket: &Path,
    runtime: &mut Option<Runtime>,
    dir: &Mutex<Directory>,
) -> Result<(usize, usize), Error> {
    let rt = match runtime {
        Some(rt) => rt,
        None => {
            // Checked first so an absent runtime costs no connect attempt.
            std::fs::metadata(socket)?;
            runtime.insert(Runtime::connect(socket, CALL_TIMEOUT).await?)
        }
    };
    let listed = rt.list_pod_sandboxes().await?;
    let mut sandboxes = Vec::with_capacity(listed.len().min(MAX_SANDBOXES));
    let mut status_calls = 0;
    for sb in listed.into_iter().take(MAX_SANDBOXES) {
        let Some(meta) = sb.metadata else {
            continue;
        };
        let known = lock(dir).live_sandbox(&sb.id).cloned();
        let ready = sb.state == 0;
        // A sandbox's namespace and IPs do not change: its status is read
        // once (again only if that failed), while it is ready.
        let (netns, ips, resolved) = match known {
            Some(k) if k.resolved || !ready => (k.netns, k.ips, k.resolved),
            _ if ready && status_calls < MAX_STATUS_CALLS => {
                status_calls += 1;
                match where_it_lives(rt, &sb.id).await {
                    Some((netns, ips)) => (netns, ips, true),
                    None => (None, Vec::new(), false),
                }
            }
            _ => (None, Vec::new(), false),
        };
        sandboxes.push(Sandbox {
            id: sb.id,
            pod: Pod {
                namespace: Some(meta.namespace),
                name: Some(meta.name),
                uid: meta.uid,
            },
            netns,
            ips,
            resolved,
        });
    }
    let containers: Vec<ContainerName> = rt
        .list_containers()
        .await?
        .into_iter()
        .filter_map(|c| {
            Some(ContainerName {
                name: c.metadata?.name,
                id: c.id,
                sandbox: c.pod_sandbox_id,
            })
        })
        .collect();
    let counts = (sandboxes.len(), containers.len());
    lock(dir).update(Instant::now(), sandboxes, containers);
    Ok(counts)
}

pub fn lock(dir: &Mutex<Directory>) -> std::sync::MutexGuard<'_, Directory> {
    dir.lock().unwrap_or_else(|p| p.into_inner())
}

/// The sandbox's network namespace inode and IPs, from its verbose
/// status; `None` when the status could not be read.
async fn where_it_lives(rt: &Runtime, id: &str) -> Option<(Option<u32>, Vec<IpAddr>)> {
    let status = match rt.pod_sandbox_status(id).await {
        Ok(s) => s,
        Err(e) => {
            log::debug!("CRI PodSandboxStatus {id}: {e}");
            return None;
        }
    };
    let ns = info::sandbox_netns(&status.info);
    let inode = ns
        .path
        .as_deref()
        .and_then(|p| nsfs_inode(Path::new(p)))
        .or_else(|| {
            ns.pid
                .and_then(|pid| nsfs_inode(&PathBuf::from(format!("/proc/{pid}/ns/net"))))
        });
    let ips = status
        .status
        .and_then(|s| s.network)
        .map(|n| {
            std::iter::once(n.ip)
                .chain(n.additional_ips.into_iter().map(|i| i.ip))
                .filter_map(|ip| ip.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    Some((inode, ips))
}

/// Inode of a namespace file; `None` unless it really is one (a bind mount
/// made in another mount namespace shows here as an empty file).
fn nsfs_inode(path: &Path) -> Option<u32> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: zeroed statfs is a valid out buffer; c is NUL-terminated.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut fs) } != 0 || fs.f_type as i64 != NSFS_MAGIC {
        return None;
    }
    std::fs::metadata(path).ok().map(|m| m.ino() as u32)
}
