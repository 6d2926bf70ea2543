//! Small python3 programs run inside namespaces (peers that no stock tool
//! provides: ICMP echo, black holes, chunked senders, line clients).

use std::process::Command;
use std::sync::OnceLock;

use crate::netns::Netns;

/// The real interpreter behind `python3` (pyenv shims cost ~100 ms a start).
pub fn python() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "python3".to_string())
    })
}

/// `python3 -u -c SCRIPT args...` inside `ns` (unbuffered: output is read
/// line by line while it runs).
pub fn command(ns: &Netns, script: &str, args: &[String]) -> Command {
    let mut full = vec![
        python().to_string(),
        "-u".into(),
        "-c".into(),
        script.to_string(),
    ];
    full.extend(args.iter().cloned());
    ns.command(full)
}
