//! Shared helpers: the environment, paths, and running commands visibly.

use std::{
    env,
    ffi::OsString,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

/// Workspace root: xtask sits one directory below it.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
}

/// Puts cargo's bin directory on PATH (fresh shells and CI often lack it, and
/// `cargo install` puts bpf-linker there) and runs from the workspace root.
/// Call before any thread is spawned.
pub fn init_env() -> Result<()> {
    let cargo_bin = match env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home).join("bin"),
        None => PathBuf::from(env::var_os("HOME").context("HOME is not set")?).join(".cargo/bin"),
    };
    let path = env::var_os("PATH").unwrap_or_default();
    if !env::split_paths(&path).any(|p| p == cargo_bin) {
        let joined = env::join_paths(std::iter::once(cargo_bin).chain(env::split_paths(&path)))
            .context("cannot build PATH")?;
        // SAFETY: called at the top of main, before any thread exists.
        unsafe { env::set_var("PATH", joined) };
    }
    env::set_current_dir(root()).context("cannot enter the workspace root")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// First executable called `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Cargo's target directory (CARGO_TARGET_DIR or `target/`; a target-dir set
/// in a config file is not honoured, and this workspace sets none).
pub fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), |d| root().join(d))
}

/// The cargo that started us, so every step uses one toolchain.
pub fn cargo() -> Command {
    Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// `cmd` as a shell-like line for logs and errors.
pub fn show(cmd: &Command) -> String {
    let mut words: Vec<OsString> = vec![cmd.get_program().into()];
    words.extend(cmd.get_args().map(Into::into));
    words
        .iter()
        .map(|w| w.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints `==> what: command`, runs it with inherited stdio and fails unless
/// it exits 0.
pub fn run(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("==> {what}: {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", show(cmd)))?;
    if !status.success() {
        bail!("{what} failed: `{}` ended with {status}", show(cmd));
    }
    Ok(())
}

/// Like [`run`], with `input` fed to the command's stdin.
pub fn run_with_input(what: &str, cmd: &mut Command, input: &str) -> Result<()> {
    eprintln!("==> {what}: {}", show(cmd));
    let mut child = cmd
        .stdin(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", show(cmd)))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("{what} failed: `{}` ended with {status}", show(cmd));
    }
    Ok(())
}

/// Quietly runs a probe command: Ok(Some(stdout)) if it exits 0, Ok(None) if
/// it runs but fails, Err if it cannot start at all.
pub fn probe(cmd: &mut Command) -> Result<Option<String>> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{}`", show(cmd)))?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}
