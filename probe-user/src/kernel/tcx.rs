//! tcx links made with raw bpf(2) calls, by ifindex, and a thread that
//! makes and closes them off the event loop.
//!
//! Why a thread and not a pool: the kernel creates (and releases) every
//! tcx link under the RTNL lock and waits for an RCU grace period inside it
//! (`tcx_entry_sync`), about 9 ms a link on the development machine. Links
//! cannot be made in parallel (measured: 8 threads took as long as one), so
//! the cost is one grace period per hook; what netprobe controls is paying
//! nothing more per link (no name look-ups, one query per hook for the
//! report) and never blocking the ring-buffer reader while it waits.

use std::{
    collections::{HashMap, HashSet},
    io,
    os::fd::{AsFd, AsRawFd as _, BorrowedFd, OwnedFd},
    sync::mpsc,
    thread::JoinHandle,
};

use crate::kernel::prog_info::{Attr, bpf, owned};

const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_LINK_CREATE: libc::c_long = 28;
pub const BPF_TCX_INGRESS: u32 = 46;
pub const BPF_TCX_EGRESS: u32 = 47;
/// With relative_fd 0: ahead of every program on the hook.
const BPF_F_BEFORE: u32 = 1 << 3;

/// Links `prog` at the head of one tcx hook of `ifindex`; closing the
/// returned fd unlinks it.
pub fn link_first(prog: BorrowedFd<'_>, ifindex: u32, attach_type: u32) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32(0, prog.as_raw_fd() as u32)
        .u32(4, ifindex)
        .u32(8, attach_type)
        .u32(12, BPF_F_BEFORE);
    bpf(BPF_LINK_CREATE, &mut attr).map(owned)
}

/// The ids of the programs on one tcx hook, first to run first (at most 64).
pub fn hook_ids(ifindex: u32, attach_type: u32) -> io::Result<Vec<u32>> {
    let mut ids = [0u32; 64];
    let mut attr = Attr::new();
    attr.u32(0, ifindex)
        .u32(4, attach_type)
        .u64(16, ids.as_mut_ptr() as u64)
        .u32(24, ids.len() as u32);
    bpf(BPF_PROG_QUERY, &mut attr)?;
    let count = u32::from_ne_bytes(attr.0[24..28].try_into().expect("4 bytes")) as usize;
    Ok(ids[..count.min(ids.len())].to_vec())
}

/// One classifier to link on every interface.
pub struct Hook {
    pub prog: &'static str,
    pub fd: aya::programs::ProgramFd,
    /// Its kernel id, to find it in a hook's chain.
    pub id: u32,
    pub attach_type: aya::programs::TcAttachType,
}

impl Hook {
    fn kernel_type(&self) -> u32 {
        match self.attach_type {
            aya::programs::TcAttachType::Egress => BPF_TCX_EGRESS,
            _ => BPF_TCX_INGRESS,
        }
    }
}

/// What the attach thread did.
#[derive(Debug)]
pub enum Done {
    /// Both hooks linked; `report` says who else shares them (see
    /// [`crate::kernel::probes::describe_chain`]).
    Attached {
        index: u32,
        name: String,
        report: Vec<String>,
    },
    Failed {
        index: u32,
        name: String,
        error: String,
    },
    /// Unlinked (or the interface was gone before its links were made).
    Detached { index: u32, name: String },
}

enum Job {
    Attach(u32, String),
    Detach(u32),
}

/// Jobs handled per turn at most: a detach queued behind them cancels an
/// attach of the same interface still waiting in the batch.
const BATCH: usize = 256;

/// The thread that owns every tcx link; dropping it unlinks them all.
pub struct Attacher {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Attacher {
    pub fn start(
        hooks: Vec<Hook>,
        done: tokio::sync::mpsc::UnboundedSender<Done>,
    ) -> io::Result<Attacher> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("netprobe-tcx".into())
            // It makes syscalls and formats a few lines: no deep stack.
            .stack_size(256 * 1024)
            .spawn(move || run(&hooks, &rx, &done))?;
        Ok(Attacher {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn attach(&self, index: u32, name: &str) {
        self.send(Job::Attach(index, name.to_string()));
    }

    pub fn detach(&self, index: u32) {
        self.send(Job::Detach(index));
    }

    fn send(&self, job: Job) {
        if let Some(tx) = &self.jobs {
            // The thread ends only when this sender is dropped.
            let _ = tx.send(job);
        }
    }

    /// Unlinks everything and waits for the thread.
    pub fn stop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Attacher {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(hooks: &[Hook], rx: &mpsc::Receiver<Job>, done: &tokio::sync::mpsc::UnboundedSender<Done>) {
    let mut links: HashMap<u32, (String, Vec<OwnedFd>)> = HashMap::new();
    let mut batch = Vec::with_capacity(BATCH);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Interfaces detached later in this batch: no link is made for
        // them (a pod veth that came and went while we were busy).
        let gone: HashSet<u32> = batch
            .iter()
            .filter_map(|j| match j {
                Job::Detach(i) => Some(*i),
                Job::Attach(..) => None,
            })
            .collect();
        for job in batch.drain(..) {
            let out = match job {
                Job::Attach(index, name) if gone.contains(&index) => Done::Detached { index, name },
                Job::Attach(index, name) => {
                    if links.contains_key(&index) {
                        continue;
                    }
                    match attach(hooks, index) {
                        Ok(fds) => {
                            let report = report(hooks, index, &name);
                            links.insert(index, (name.clone(), fds));
                            Done::Attached {
                                index,
                                name,
                                report,
                            }
                        }
                        Err(error) => Done::Failed { index, name, error },
                    }
                }
                Job::Detach(index) => match links.remove(&index) {
                    // Closing the fds unlinks (cheap when the interface
                    // is already gone: the kernel unlinked it then).
                    Some((name, fds)) => {
                        drop(fds);
                        Done::Detached { index, name }
                    }
                    None => continue,
                },
            };
            if done.send(out).is_err() {
                // Nobody listens any more: the session is ending.
                break;
            }
        }
    }
    // Sender dropped: the session ends; closing every fd unlinks.
    drop(links);
}

/// Links every hook of one interface; on failure nothing stays linked.
fn attach(hooks: &[Hook], index: u32) -> Result<Vec<OwnedFd>, String> {
    let mut fds = Vec::with_capacity(hooks.len());
    for h in hooks {
        match link_first(h.fd.as_fd(), index, h.kernel_type()) {
            Ok(fd) => fds.push(fd),
            Err(e) => return Err(format!("attaching {}: {e}", h.prog)),
        }
    }
    Ok(fds)
}

/// One line per hook netprobe shares with other programs: one query per
/// hook, names only when someone else is there.
fn report(hooks: &[Hook], index: u32, name: &str) -> Vec<String> {
    hooks
        .iter()
        .filter_map(|h| {
            let ids = hook_ids(index, h.kernel_type()).ok()?;
            if ids.len() < 2 {
                return None;
            }
            let chain = crate::kernel::probes::tcx_chain(name, h.attach_type).ok()?;
            let desc = crate::kernel::probes::describe_chain(&chain, h.id)?;
            Some(format!(
                "{name} {}: {desc}",
                crate::kernel::probes::direction(h.attach_type)
            ))
        })
        .collect()
}
