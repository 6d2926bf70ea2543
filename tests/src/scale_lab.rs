//! Many interfaces at once, for the scale test and the bench: veth pairs
//! made with one `ip -batch` run.

use crate::cmd;
use crate::netns::Netns;
use crate::tmp::TempDir;

/// Runs `ip -n NS -batch FILE` with `lines`; panics on failure.
pub fn ip_batch(ns: &Netns, lines: &[String]) {
    let dir = TempDir::new();
    let file = dir.join("batch");
    std::fs::write(&file, lines.join("\n") + "\n").expect("writing the ip batch");
    let out = cmd::run_bounded(
        std::process::Command::new("ip")
            .args(["-n", ns.name(), "-batch"])
            .arg(&file),
        crate::secs(60.0),
    );
    assert!(out.success(), "ip -batch: {}", out.report());
}

/// `pairs` veth pairs `va{i}`/`vb{i}`, both ends in `ns` and up; returns
/// every name.
pub fn veth_pairs(ns: &Netns, pairs: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut names = Vec::new();
    for i in 0..pairs {
        lines.push(format!("link add va{i} up type veth peer name vb{i}"));
        lines.push(format!("link set vb{i} up"));
        names.extend([format!("va{i}"), format!("vb{i}")]);
    }
    if !lines.is_empty() {
        ip_batch(ns, &lines);
    }
    names
}

/// The interface count in netprobe's ready line ("N interface(s)").
pub fn ready_count(stderr: &str) -> Option<u32> {
    let line = stderr
        .lines()
        .find(|l| l.contains(crate::netprobe::READY_MARKER))?;
    let (count, _) = line.split_once("ready: ")?.1.split_once(' ')?;
    count.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ready_line_count() {
        let s = "x\nnetprobe: ready: 301 interface(s), TLS ports 443\n";
        assert_eq!(super::ready_count(s), Some(301));
        assert_eq!(super::ready_count("netprobe: starting"), None);
    }
}
