//! `cargo xtask setup`: each step checks first and acts only when needed, so
//! a second run changes nothing.

use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::util::{self, probe};

/// Build needs (LLVM for bpf-linker) and lab tools the tests drive.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "iproute2",
    "nftables",
    "conntrack",
    "tcpdump",
    "tshark",
    "openssl",
    "curl",
    "iputils-arping",
    "ndisc6",
    "iperf3",
    // The bench's peer for start-up and memory (a tracepoint script).
    "bpftrace",
    "bpftool",
    // The metrics lab test scrapes netprobe with the real Prometheus and
    // lints the text with promtool (same package).
    "prometheus",
    "libcap2-bin",
    "util-linux",
    // tests/tests/dist.rs: what `file` says of the static binary.
    "file",
    "tmux",
    "procps",
    // The CRI lab test runs a private containerd (its CRI plugin) with runc
    // and the CNI bridge and host-local plugins (/usr/lib/cni).
    "containerd",
    "runc",
    "containernetworking-plugins",
    // The kernel matrix (crate::kernels::PACKAGES): QEMU, and udev for
    // virtme-ng's guest init, kmod for depmod on the unpacked modules and
    // busybox for the initramfs that loads Debian's virtio modules.
    "qemu-system-x86",
    "udev",
    "kmod",
    "busybox-static",
    "debian-archive-keyring",
];
/// bpf-linker must use the same LLVM major as the rustc compiling the eBPF crate.
const LLVM_MAJOR: u32 = 22;
const BPF_LINKER_VERSION: &str = "0.13.0";
const TRACEFS: &str = "/sys/kernel/tracing";

pub fn setup() -> Result<()> {
    let started = Instant::now();
    packages()?;
    let toolchain = rust_src()?;
    rustc_llvm(&toolchain)?;
    musl_target(&toolchain)?;
    bpf_linker()?;
    tracefs()?;
    crate::kernels::fetch()?;
    eprintln!(
        "==> setup: all ok ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn ok(step: &str) {
    eprintln!("setup: {step}: ok");
}

/// Fails with the command to rerun when a step must act and we are not root.
fn need_root(what: &str) -> Result<()> {
    ensure!(
        util::is_root(),
        "{what} needs root; rerun as root: sudo -E env \"PATH=$PATH\" cargo xtask setup"
    );
    Ok(())
}

fn packages() -> Result<()> {
    let step = format!("{} Debian packages", PACKAGES.len());
    let missing = missing_packages()?;
    if !missing.is_empty() {
        let list = missing.join(" ");
        eprintln!("setup: {step}: missing {list}");
        need_root(&format!("installing {list}"))?;
        util::run(
            "refreshing apt lists",
            Command::new("apt-get").arg("update"),
        )?;
        if missing.contains(&"tshark") {
            // Otherwise wireshark-common asks whether non-root may capture.
            util::run_with_input(
                "preseeding wireshark-common",
                &mut Command::new("debconf-set-selections"),
                "wireshark-common wireshark-common/install-setuid boolean false\n",
            )?;
        }
        util::run(
            "installing Debian packages",
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "--no-install-recommends"])
                .args(&missing),
        )?;
        if missing.contains(&"prometheus") && Path::new("/run/systemd/system").exists() {
            // The lab test runs its own Prometheus on a lab namespace's
            // loopback; the package's service would listen on *:9090.
            util::run(
                "stopping the packaged prometheus service",
                Command::new("systemctl").args(["disable", "--now", "prometheus.service"]),
            )?;
        }
        if missing.contains(&"containerd") && Path::new("/run/systemd/system").exists() {
            // The lab test runs its own containerd in a lab namespace with
            // its own root and socket; the packaged service is not used.
            util::run(
                "stopping the packaged containerd service",
                Command::new("systemctl").args(["disable", "--now", "containerd.service"]),
            )?;
        }
        let still = missing_packages()?;
        ensure!(
            still.is_empty(),
            "still missing after apt-get install: {}",
            still.join(" ")
        );
    }
    ok(&step);
    Ok(())
}

fn missing_packages() -> Result<Vec<&'static str>> {
    let mut missing = Vec::new();
    for &pkg in PACKAGES {
        let status = probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
            .context("dpkg-query failed to start: setup supports Debian only")?;
        if status.as_deref() != Some("install ok installed") {
            missing.push(pkg);
        }
    }
    Ok(missing)
}

/// rust-src on the active toolchain: the eBPF crate rebuilds `core` from it.
/// Returns the active toolchain's name.
fn rust_src() -> Result<String> {
    let active = probe(Command::new("rustup").args(["show", "active-toolchain"]))
        .context(
            "rustup not found: it is needed to add rust-src (install it from https://rustup.rs)",
        )?
        .context("`rustup show active-toolchain` failed: is a toolchain installed?")?;
    let toolchain = active
        .split_whitespace()
        .next()
        .context("rustup names no active toolchain")?;
    let step = format!("rust-src on {toolchain}");
    if !has_rust_src(toolchain)? {
        eprintln!("setup: {step}: missing");
        util::run(
            &format!("adding {step}"),
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", toolchain]),
        )?;
        ensure!(
            has_rust_src(toolchain)?,
            "rust-src still missing on {toolchain} after adding it"
        );
    }
    ok(&step);
    Ok(toolchain.to_owned())
}

/// The musl target's standard library: `cargo xtask dist` builds the static
/// binary with it (self-contained: no musl-gcc needed, netprobe has no C).
fn musl_target(toolchain: &str) -> Result<()> {
    let target = crate::dist::TARGET;
    let step = format!("{target} on {toolchain}");
    let installed = |t: &str| -> Result<bool> {
        let list = probe(Command::new("rustup").args([
            "target",
            "list",
            "--installed",
            "--toolchain",
            t,
        ]))?
        .context("`rustup target list` failed")?;
        Ok(list.lines().any(|l| l.trim() == target))
    };
    if !installed(toolchain)? {
        eprintln!("setup: {step}: missing");
        util::run(
            &format!("adding {step}"),
            Command::new("rustup").args(["target", "add", target, "--toolchain", toolchain]),
        )?;
        ensure!(
            installed(toolchain)?,
            "{step} still missing after adding it"
        );
    }
    ok(&step);
    Ok(())
}

fn has_rust_src(toolchain: &str) -> Result<bool> {
    let list = probe(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        toolchain,
    ]))?
    .context("`rustup component list` failed")?;
    Ok(list.lines().any(|l| l.trim() == "rust-src"))
}

/// Fails early when the active rustc's LLVM is not the one bpf-linker uses,
/// instead of leaving an obscure link error for the build.
fn rustc_llvm(toolchain: &str) -> Result<()> {
    let info = probe(Command::new("rustc").arg("-vV"))?.context("`rustc -vV` failed")?;
    let major = info
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next()?.parse::<u32>().ok())
        .context("`rustc -vV` reports no LLVM version")?;
    ensure!(
        major == LLVM_MAJOR,
        "rustc on {toolchain} uses LLVM {major}, but bpf-linker is built for LLVM {LLVM_MAJOR}; \
         switch to a toolchain with LLVM {LLVM_MAJOR} (e.g. stable 1.95)"
    );
    ok(&format!("rustc uses LLVM {LLVM_MAJOR}"));
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let step = format!("bpf-linker {BPF_LINKER_VERSION} on LLVM {LLVM_MAJOR}");
    if let Err(why) = bpf_linker_state() {
        eprintln!("setup: {step}: {why}");
        util::run(
            &format!("installing {step} (a minute or so)"),
            util::cargo()
                .env("LLVM_PREFIX", format!("/usr/lib/llvm-{LLVM_MAJOR}"))
                .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
                // --force: a stale or wrongly linked copy of this same version
                // would otherwise be kept as "already installed".
                .args(["--locked", "--force", "--no-default-features", "--features"])
                .arg(format!("llvm-{LLVM_MAJOR}")),
        )?;
        if let Err(why) = bpf_linker_state() {
            bail!(
                "bpf-linker still unusable after installing it: {why} (is ~/.cargo/bin shadowed on PATH?)"
            );
        }
    }
    ok(&step);
    Ok(())
}

/// Why the bpf-linker on PATH will not do, if it will not.
fn bpf_linker_state() -> Result<(), String> {
    let bin = util::which("bpf-linker").ok_or("not found on PATH")?;
    let version = probe(Command::new(&bin).arg("--version"))
        .ok()
        .flatten()
        .ok_or_else(|| format!("{} --version failed", bin.display()))?;
    if version.split_whitespace().nth(1) != Some(BPF_LINKER_VERSION) {
        return Err(format!("found {}", version.trim()));
    }
    // Debian's LLVM is a shared library, so ldd tells which major it uses.
    let libs = probe(Command::new("ldd").arg(&bin))
        .ok()
        .flatten()
        .ok_or("ldd failed on it")?;
    let llvm = libs
        .split_whitespace()
        .find(|w| w.starts_with("libLLVM"))
        .ok_or("not linked to a shared libLLVM")?;
    // Names seen: libLLVM.so.22.1 (Debian today), libLLVM-14.so.1 (older).
    let wanted = [
        format!("libLLVM.so.{LLVM_MAJOR}"),
        format!("libLLVM-{LLVM_MAJOR}"),
    ];
    if !wanted.iter().any(|w| llvm.starts_with(w.as_str())) {
        return Err(format!("linked to {llvm}"));
    }
    Ok(())
}

/// The lab and bpftool read tracepoint formats from tracefs.
fn tracefs() -> Result<()> {
    let step = format!("tracefs at {TRACEFS}");
    if !Path::new(TRACEFS).join("events").is_dir() {
        eprintln!("setup: {step}: not mounted");
        need_root("mounting tracefs")?;
        util::run(
            "mounting tracefs",
            Command::new("mount").args(["-t", "tracefs", "tracefs", TRACEFS]),
        )?;
    }
    ok(&step);
    Ok(())
}
