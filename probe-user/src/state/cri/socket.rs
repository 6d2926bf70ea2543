//! Which runtime socket to ask: `--cri-socket PATH`, else the environment
//! (`NETPROBE_CRI_SOCKET`), else containerd's or CRI-O's default path,
//! whichever exists. `none` turns the runtime look-ups off.

use std::path::{Path, PathBuf};

pub const ENV: &str = "NETPROBE_CRI_SOCKET";
pub const CONTAINERD: &str = "/run/containerd/containerd.sock";
pub const CRIO: &str = "/var/run/crio/crio.sock";

/// The socket to use, or `None` when turned off. A default path that does
/// not exist yet is still returned (the runtime may start later).
pub fn choose(
    flag: Option<&str>,
    env: Option<&str>,
    exists: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    if let Some(given) = flag.or(env).filter(|s| !s.is_empty()) {
        return (given != "none")
            .then(|| PathBuf::from(given.strip_prefix("unix://").unwrap_or(given)));
    }
    let crio = Path::new(CRIO);
    if !exists(Path::new(CONTAINERD)) && exists(crio) {
        return Some(crio.to_path_buf());
    }
    Some(PathBuf::from(CONTAINERD))
}

/// [`choose`] on this machine.
pub fn from_flag(flag: Option<&str>) -> Option<PathBuf> {
    let env = std::env::var(ENV).ok();
    choose(flag, env.as_deref(), |p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_then_env_then_defaults() {
        let none = |_: &Path| false;
        let crio_only = |p: &Path| p == Path::new(CRIO);
        assert_eq!(
            choose(Some("/x.sock"), Some("/y"), none),
            Some("/x.sock".into())
        );
        assert_eq!(
            choose(None, Some("unix:///y.sock"), none),
            Some("/y.sock".into())
        );
        assert_eq!(choose(Some("none"), None, none), None);
        assert_eq!(choose(None, None, none), Some(CONTAINERD.into()));
        assert_eq!(choose(None, None, crio_only), Some(CRIO.into()));
    }
}
