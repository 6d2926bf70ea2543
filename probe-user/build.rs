//! Builds the eBPF object (probe-ebpf) with the same toolchain as this crate,
//! via aya-build. RUSTC_BOOTSTRAP is set here, for the inner eBPF build only,
//! so `-Z build-std=core` works on stable without unstable features reaching
//! the userspace crates.
use anyhow::{Context as _, anyhow};

/// Set by `cargo xtask fuzz`: the fuzz targets exercise parsers only, so
/// their (nightly, sanitizer) build gets an empty object instead of a
/// second eBPF build that would need rust-src and bpf-linker for nightly.
const SKIP_EBPF: &str = "NETPROBE_SKIP_EBPF";

fn main() -> anyhow::Result<()> {
    commit();
    println!("cargo:rerun-if-env-changed={SKIP_EBPF}");
    if std::env::var_os(SKIP_EBPF).is_some_and(|v| v == "1") {
        let out = std::env::var("OUT_DIR").context("OUT_DIR")?;
        std::fs::write(std::path::Path::new(&out).join("probe"), b"")
            .context("writing the empty eBPF object")?;
        return Ok(());
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "probe-ebpf")
        .ok_or_else(|| anyhow!("probe-ebpf package not found"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    if which_bpf_linker().is_none() {
        return Err(anyhow!(
            "bpf-linker not found on PATH: run `cargo xtask setup` (it builds bpf-linker against LLVM 22)"
        ));
    }
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".to_string());
    // SAFETY: single-threaded build script, before any child is spawned.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "probe-ebpf",
            root_dir: root.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("bpf-linker"))
        .find(|p| p.is_file())
}

/// `NETPROBE_COMMIT` for `netprobe --version` and the `start` record: the
/// short hash of HEAD, `NETPROBE_COMMIT` from the environment when building
/// outside a git checkout (a source tarball), else `unknown`. Reruns when
/// HEAD moves (the HEAD file, the branch it names, packed refs).
fn commit() {
    println!("cargo:rerun-if-env-changed=NETPROBE_COMMIT");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let commit = std::env::var("NETPROBE_COMMIT")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&["rev-parse", "--short=7", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Some(common) = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]) {
            let common = std::path::Path::new(&common);
            println!(
                "cargo:rerun-if-changed={}",
                common.join("packed-refs").display()
            );
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                println!("cargo:rerun-if-changed={}", common.join(branch).display());
            }
        }
    }
    println!("cargo:rustc-env=NETPROBE_COMMIT={commit}");
}
