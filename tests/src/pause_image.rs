//! A pod image built here, from nothing a registry serves: a static binary
//! compiled with `gcc -static` from the C below, packed as a docker-archive
//! tar (manifest, config with the layer's diff ID, one layer) that
//! `ctr images import` takes.
//!
//! The binary pauses until SIGTERM/SIGINT (a sandbox's pause process); with
//! `connect IP PORT` it connects to IP:PORT once a second instead, each
//! attempt bounded by the kernel's SYN retries (a container making traffic
//! from inside a pod, in the pod's cgroup).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::{self, DEFAULT_TIMEOUT};

pub const REF: &str = "netprobe.test/pause:1";

const SOURCE: &str = r#"
#include <arpa/inet.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void bye(int sig) { (void)sig; _exit(0); }

int main(int argc, char **argv) {
    signal(SIGTERM, bye);
    signal(SIGINT, bye);
    if (argc == 4 && strcmp(argv[1], "connect") == 0) {
        struct sockaddr_in to;
        memset(&to, 0, sizeof to);
        to.sin_family = AF_INET;
        to.sin_port = htons((unsigned short)atoi(argv[3]));
        if (inet_pton(AF_INET, argv[2], &to.sin_addr) != 1) return 2;
        for (int i = 0; i < 600; i++) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            if (fd >= 0) {
                connect(fd, (struct sockaddr *)&to, sizeof to);
                close(fd);
            }
            sleep(1);
        }
        return 0;
    }
    for (;;) pause();
}
"#;

/// Builds the archive in `dir` and returns its path.
pub fn build(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("creating the image rootfs");
    let src = dir.join("pause.c");
    std::fs::write(&src, SOURCE).expect("writing pause.c");
    cmd::run(
        Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(rootfs.join("pause"))
            .arg(&src),
        DEFAULT_TIMEOUT,
    );
    let layer = dir.join("layer.tar");
    cmd::run(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&layer)
            .arg("pause"),
        DEFAULT_TIMEOUT,
    );
    let sum = cmd::run(Command::new("sha256sum").arg(&layer), DEFAULT_TIMEOUT);
    let digest = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum prints a digest")
        .to_string();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Entrypoint": ["/pause"] },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{digest}")] },
    });
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": [REF],
        "Layers": ["layer.tar"],
    }]);
    std::fs::write(dir.join("config.json"), config.to_string()).expect("writing config.json");
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).expect("writing manifest.json");
    let archive = dir.join("image.tar");
    cmd::run(
        Command::new("tar")
            .arg("-C")
            .arg(dir)
            .arg("-cf")
            .arg(&archive)
            .args(["manifest.json", "config.json", "layer.tar"]),
        DEFAULT_TIMEOUT,
    );
    archive
}
