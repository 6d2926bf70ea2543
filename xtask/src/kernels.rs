//! The kernel matrix: Debian's own kernels, fetched as packages and booted
//! under QEMU with virtme-ng (the machine's file system as the guest's
//! root), each running `netprobe doctor` and a trace check.
//!
//! `fetch` (part of `cargo xtask setup`) gets each kernel with `apt-get
//! download` under a private apt configuration (lists and cache under
//! target/kernels/apt, the machine's own apt state untouched) and unpacks
//! it with `dpkg -x` into target/kernels/<label>: nothing is installed into
//! /boot or /lib/modules. `run` boots them one at a time (QEMU's TCG: the
//! KVM of these machines cannot boot a stock kernel).

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::util;

/// (label, Debian suite whose `linux-image-amd64` is the kernel).
pub const KERNELS: &[(&str, &str)] = &[
    ("5.10", "bullseye"),
    ("6.1", "bookworm"),
    ("6.12", "trixie"),
];

/// The virtme-ng release whose behaviour the runner was written against.
const VIRTME_NG: &str = "virtme-ng==1.42";
// The Debian packages the guests need on the host (QEMU, udev: virtme-ng's
// guest init finds its I/O ports through udev; without it the command runs
// on the console fallback and its exit code is lost) are in setup's list.
/// A guest that has not finished by then is stopped and counted as failed.
const GUEST_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Set to 0 to leave the kernel matrix out of `setup` and `test`.
pub const ENV_SWITCH: &str = "NETPROBE_KERNEL_MATRIX";

pub fn enabled() -> bool {
    std::env::var(ENV_SWITCH).map_or(true, |v| v != "0")
}

fn cache() -> PathBuf {
    util::target_dir().join("kernels")
}

/// The Debian mirror this machine's apt already uses (its sources name it:
/// the project names no host of its own).
fn mirror() -> Result<String> {
    let mut texts = Vec::new();
    for f in ["/etc/apt/sources.list"] {
        if let Ok(t) = fs::read_to_string(f) {
            texts.push(t);
        }
    }
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "sources" || x == "list")
                && let Ok(t) = fs::read_to_string(&p)
            {
                texts.push(t);
            }
        }
    }
    for t in &texts {
        for word in t.split_whitespace() {
            let w = word.trim_end_matches('/');
            if (w.starts_with("http://") || w.starts_with("https://")) && w.ends_with("/debian") {
                return Ok(w.to_string());
            }
        }
    }
    bail!("no Debian mirror (a URI ending in /debian) in this machine's apt sources")
}

/// apt options that keep every file of ours under `dir`.
fn apt_opts(dir: &Path) -> Vec<String> {
    let d = dir.display();
    vec![
        format!("-oDir::Etc::SourceList={d}/sources.list"),
        format!("-oDir::Etc::SourceParts={d}/sources.list.d"),
        format!("-oDir::Etc::Preferences={d}/preferences"),
        format!("-oDir::Etc::PreferencesParts={d}/preferences.d"),
        format!("-oDir::State={d}/state"),
        "-oDir::State::status=/dev/null".to_string(),
        format!("-oDir::Cache={d}/cache"),
        "-oDebug::NoLocking=1".to_string(),
        "-oAPT::Sandbox::User=root".to_string(),
    ]
}

/// One unpacked kernel: its image, and its release.
pub struct Unpacked {
    pub label: &'static str,
    pub vmlinuz: PathBuf,
    pub release: String,
}

fn unpacked(label: &'static str) -> Option<Unpacked> {
    let boot = cache().join(label).join("root/boot");
    let entry = fs::read_dir(&boot)
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))?;
    let release = entry
        .file_name()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_string();
    // Older packages ship modules under lib/, newer under usr/lib/; virtme-ng
    // finds either and runs depmod where the package left that to postinst.
    ["root/lib/modules", "root/usr/lib/modules"]
        .iter()
        .any(|m| {
            cache()
                .join(label)
                .join(m)
                .join(&release)
                .join("modules.order")
                .is_file()
        })
        .then(|| Unpacked {
            label,
            vmlinuz: entry.path(),
            release,
        })
}

/// `cargo xtask setup`'s step: the kernels and virtme-ng.
pub fn fetch() -> Result<()> {
    if !enabled() {
        eprintln!("setup: kernel matrix: skipped ({ENV_SWITCH}=0)");
        return Ok(());
    }
    virtme_ng()?;
    let missing: Vec<&(&str, &str)> = KERNELS
        .iter()
        .filter(|(l, _)| unpacked(l).is_none())
        .collect();
    if !missing.is_empty() {
        ensure!(
            util::is_root(),
            "fetching kernels needs root (apt-get); rerun setup as root"
        );
        let apt = cache().join("apt");
        for sub in [
            "sources.list.d",
            "preferences.d",
            "state/lists/partial",
            "cache/archives/partial",
        ] {
            fs::create_dir_all(apt.join(sub))?;
        }
        let mirror = mirror()?;
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        let sources: String = KERNELS
            .iter()
            .map(|(_, suite)| format!("deb [signed-by={keyring}] {mirror} {suite} main\n"))
            .collect();
        fs::write(apt.join("sources.list"), sources)?;
        util::run(
            "refreshing the kernel matrix's private apt lists",
            Command::new("apt-get").args(apt_opts(&apt)).arg("update"),
        )?;
        for (label, suite) in missing {
            fetch_one(&apt, label, suite)?;
        }
    }
    for (label, _) in KERNELS {
        let k = unpacked(label).with_context(|| format!("kernel {label} not unpacked"))?;
        eprintln!("setup: kernel {label}: {} ok", k.release);
    }
    Ok(())
}

fn fetch_one(apt: &Path, label: &str, suite: &str) -> Result<()> {
    let dl = cache().join("debs").join(label);
    let _ = fs::remove_dir_all(&dl);
    fs::create_dir_all(&dl)?;
    // The metapackage names the suite's current image package.
    util::run(
        &format!("downloading linux-image-amd64 of {suite}"),
        Command::new("apt-get")
            .args(apt_opts(apt))
            .args(["download", &format!("linux-image-amd64/{suite}")])
            .current_dir(&dl),
    )?;
    let meta = only_deb(&dl)?;
    let depends = util::probe(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&meta)
            .arg("Depends"),
    )?
    .context("dpkg-deb -f failed")?;
    let image = depends
        .split([',', '|'])
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .find(|d| d.starts_with("linux-image-"))
        .with_context(|| format!("no linux-image dependency in {depends:?}"))?
        .to_string();
    fs::remove_file(&meta)?;
    util::run(
        &format!("downloading {image} ({suite})"),
        Command::new("apt-get")
            .args(apt_opts(apt))
            .args(["download", &format!("{image}/{suite}")])
            .current_dir(&dl),
    )?;
    let deb = only_deb(&dl)?;
    let root = cache().join(label).join("root");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root)?;
    util::run(
        &format!("unpacking {image} into {}", root.display()),
        Command::new("dpkg").arg("-x").arg(&deb).arg(&root),
    )?;
    fs::remove_file(&deb)?;
    Ok(())
}

fn only_deb(dir: &Path) -> Result<PathBuf> {
    fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("no .deb downloaded into {}", dir.display()))
}

fn virtme_ng() -> Result<()> {
    if util::which("vng").is_some() {
        eprintln!("setup: virtme-ng: ok");
        return Ok(());
    }
    let python =
        util::which("python3").context("python3 not found (virtme-ng is a Python tool)")?;
    let mut pip = Command::new(&python);
    pip.args(["-m", "pip", "install", "--quiet", VIRTME_NG]);
    if util::run("installing virtme-ng from PyPI", &mut pip).is_err() {
        // Debian's own python refuses system-wide pip installs.
        util::run(
            "installing virtme-ng from PyPI (system python)",
            Command::new(&python).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--break-system-packages",
                VIRTME_NG,
            ]),
        )?;
    }
    ensure!(
        util::which("vng").is_some(),
        "virtme-ng installed but vng is not on PATH"
    );
    eprintln!("setup: virtme-ng: ok");
    Ok(())
}

/// What one guest did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub label: String,
    pub release: String,
    pub boot_and_run: Duration,
    /// key=value lines the guest script wrote.
    pub results: Vec<(String, String)>,
    /// (capability, on/off and why) from `doctor`.
    pub capabilities: Vec<(String, String)>,
    pub failures: Vec<String>,
}

impl Outcome {
    fn get(&self, key: &str) -> Option<&str> {
        self.results
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The guest's script: doctor, a trace to ready and a clean exit, the
/// clsact leftover check where the classifiers run on clsact, and the
/// silent-server lab where the classifiers run. Results as key=value lines
/// in $OUT/results.
const GUEST_SCRIPT: &str = r#"#!/bin/bash
set -u
OUT="$1"; BIN="$2"; LAB="$3"
R="$OUT/results"
: > "$R"
res() { echo "$1=$2" >> "$R"; }
res release "$(uname -r)"
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
# The socket hooks attach to the root of a cgroup v2 hierarchy.
grep -q ' - cgroup2 ' /proc/self/mountinfo || mount -t cgroup2 none /sys/fs/cgroup
ip link set lo up
# Debian builds these as modules; doctor checks ctnetlink.
modprobe -q nf_conntrack; modprobe -q nf_conntrack_netlink
# An interface for the classifiers: a veth pair in the root namespace of
# the guest (the guest is its own machine).
ip link add npm0 type veth peer name npm1 && ip link set npm0 up && ip link set npm1 up

t0=$(date +%s%N)
"$BIN" doctor > "$OUT/doctor.txt" 2> "$OUT/doctor.err"
res doctor_rc $?
res doctor_s "$(( ($(date +%s%N) - t0) / 1000000 ))ms"

ours='tcp_retransmit|tcp_retransmit_tp|tcp_retransmit_|tcp_receive_reset|tcp_receive_res|neigh_update|sock_state|skb_kfree|icmp_send|synack_retrans|tcp_send_reset|tc_ingress|tc_egress|sock_ingress|sock_egress'
progs() { bpftool prog show 2>/dev/null | grep -cE "name ($ours)( |$)"; }
filters() { for d in npm0 npm1; do tc filter show dev $d ingress; tc filter show dev $d egress; done 2>/dev/null | grep -cE 'tc_(ingress|egress)'; }
res progs_before "$(progs)"

# trace: ready, then SIGINT, then nothing left attached.
trace_check() {
  local tag="$1"; shift
  t0=$(date +%s%N)
  "$BIN" trace --port 6443 "$@" > "$OUT/trace-$tag.out" 2> "$OUT/trace-$tag.err" &
  local pid=$! ready=no
  for _ in $(seq 1 1200); do
    if grep -q 'netprobe: ready' "$OUT/trace-$tag.err"; then ready=yes; break; fi
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
  done
  res "${tag}_ready" "$ready"
  res "${tag}_ready_s" "$(( ($(date +%s%N) - t0) / 1000000 ))ms"
  res "${tag}_progs_running" "$(progs)"
  bpftool prog show > "$OUT/progs-$tag.txt" 2>&1
  res "${tag}_filters_running" "$(filters)"
  kill -INT $pid 2>/dev/null
  wait $pid
  res "${tag}_rc" $?
  res "${tag}_progs_after" "$(progs)"
  res "${tag}_filters_after" "$(filters)"
}
trace_check trace

# clsact leftovers: where the classifiers run on clsact, a SIGKILLed
# trace leaves its filters; the next one removes them and says so.
if grep -q 'no tcx on this kernel' "$OUT/doctor.txt" && grep -qE '^ok +tc classifier' "$OUT/doctor.txt"; then
  "$BIN" trace --port 6443 --iface npm0 > /dev/null 2> "$OUT/trace-killed.err" &
  pid=$!
  for _ in $(seq 1 1200); do grep -q 'netprobe: ready' "$OUT/trace-killed.err" && break; sleep 0.1; done
  kill -KILL $pid; wait $pid 2>/dev/null
  res killed_filters_left "$(filters)"
  trace_check again --iface npm0
  res again_removed "$(grep -c "removed netprobe's leftover clsact filter" "$OUT/trace-again.err")"
else
  res killed_filters_left skipped
fi

# The silent TLS server lab (server_not_responding), where the classifiers run.
if grep -qE '^ok +tc classifier' "$OUT/doctor.txt" && [ -x "$LAB" ]; then
  t0=$(date +%s%N)
  NETPROBE_SLOW_GUEST=1 NETPROBE_BIN="$BIN" "$LAB" --exact pod_behind_the_node_to_a_silent_server_is_the_server_not_the_neighbour --test-threads=1 > "$OUT/lab.out" 2>&1
  res lab_rc $?
  res lab_s "$(( ($(date +%s%N) - t0) / 1000000 ))ms"
else
  res lab_rc skipped
fi
res done yes
"#;

/// The test binary holding the silent-server lab, built for the host.
fn lab_binary() -> Result<PathBuf> {
    let out = util::cargo()
        .args([
            "test",
            "--release",
            "-p",
            "netprobe-tests",
            "--test",
            "trust",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("building the lab test binary")?;
    ensure!(out.status.success(), "building the lab test binary failed");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact"
            && v["target"]["name"] == "trust"
            && let Some(exe) = v["executable"].as_str()
        {
            return Ok(PathBuf::from(exe));
        }
    }
    bail!("cargo named no executable for the trust test")
}

/// Boots every kernel (or those in `only`) in turn; an error when any
/// guest failed. Prints a line per kernel and the capability table.
pub fn run(bin: &Path, only: &[String]) -> Result<Vec<Outcome>> {
    ensure!(
        util::is_root(),
        "the kernel matrix needs root (QEMU, eBPF in the guest)"
    );
    ensure!(
        util::which("vng").is_some(),
        "vng not found: run `cargo xtask setup`"
    );
    let lab = lab_binary()?;
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for (label, _) in KERNELS
        .iter()
        .filter(|(l, _)| only.is_empty() || only.iter().any(|o| o == l))
    {
        let k = unpacked(label)
            .with_context(|| format!("kernel {label} is not fetched: run `cargo xtask setup`"))?;
        let o = boot(&k, bin, &lab)?;
        println!(
            "kernel matrix: {} ({}) {} in {:.0} s{}",
            o.label,
            o.release,
            if o.failures.is_empty() {
                "ok"
            } else {
                "FAILED"
            },
            o.boot_and_run.as_secs_f64(),
            if o.failures.is_empty() {
                String::new()
            } else {
                format!(": {}", o.failures.join("; "))
            }
        );
        outcomes.push(o);
    }
    print_table(&outcomes);
    println!(
        "kernel matrix: {} kernel(s) in {:.0} s",
        outcomes.len(),
        started.elapsed().as_secs_f64()
    );
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.failures.is_empty())
        .map(|o| o.label.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("kernel matrix failed on {}", failed.join(", "));
    }
    Ok(outcomes)
}

fn boot(k: &Unpacked, bin: &Path, lab: &Path) -> Result<Outcome> {
    let dir = cache().join("run").join(k.label);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let script = dir.join("guest.sh");
    fs::write(&script, GUEST_SCRIPT)?;
    let exec = format!(
        "bash {} {} {} {}",
        script.display(),
        dir.display(),
        bin.display(),
        lab.display()
    );
    let mut cmd = Command::new("vng");
    cmd.arg("--run")
        .arg(&k.vmlinuz)
        .args(["--disable-kvm", "--cpus", "2", "--memory", "2G"])
        .arg(format!("--rwdir={}", dir.display()))
        .args(["--exec", &exec])
        .stdin(Stdio::null())
        // Pipes, not one file: QEMU reopens its stdout and stderr with
        // O_TRUNC, so one file for both would be overwritten.
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    println!(
        "==> kernel {} ({}): {}",
        k.label,
        k.release,
        util::show(&cmd)
    );
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting vng")?;
    let mut out = child.stdout.take().context("vng stdout")?;
    let err = child.stderr.take().context("vng stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            lines.push(l);
        }
        lines
    });
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if started.elapsed() > GUEST_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let console = out_reader.join().unwrap_or_default();
    let errs = err_reader.join().unwrap_or_default();
    fs::write(dir.join("console.out"), &console)?;
    fs::write(dir.join("console.err"), errs.join("\n"))?;
    let mut o = Outcome {
        label: k.label.to_string(),
        release: k.release.clone(),
        boot_and_run: started.elapsed(),
        ..Default::default()
    };
    match status {
        None => o
            .failures
            .push(format!("timed out after {} s", GUEST_TIMEOUT.as_secs())),
        Some(st) if !st.success() => o.failures.push(format!("vng exited {st}")),
        Some(_) => {}
    }
    let results = fs::read_to_string(dir.join("results")).unwrap_or_default();
    o.results = results
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let doctor = fs::read_to_string(dir.join("doctor.txt")).unwrap_or_default();
    o.capabilities = doctor_capabilities(&doctor);
    judge(&mut o);
    Ok(o)
}

/// Capability lines of `doctor`'s output: (name, "on ..."/"off ...").
pub fn doctor_capabilities(doctor: &str) -> Vec<(String, String)> {
    const NAMES: &[&str] = &[
        "retransmits",
        "neighbours",
        "socket owners",
        "resets received",
        "resets sent",
        "synack retransmits",
        "kernel drops",
        "icmp_send",
        "tc classifier",
        "tc attach",
        "verifier",
    ];
    doctor
        .lines()
        .filter_map(|l| {
            let (mark, rest) = l.split_at_checked(5)?;
            let name = NAMES
                .iter()
                .find(|n| rest.starts_with(**n) && rest[n.len()..].starts_with("  "))?;
            let detail = rest[name.len()..].trim();
            let text = match mark.trim() {
                "FAIL" => format!("FAIL {detail}"),
                _ => detail.to_string(),
            };
            Some((name.to_string(), text))
        })
        .collect()
}

/// What a guest must have done: booted and finished the script, doctor
/// exit 0, trace ready and exited 0 with none of netprobe's programs or
/// filters left; the leftover and lab checks where they ran.
fn judge(o: &mut Outcome) {
    let mut fail = |m: String| o.failures.push(m);
    let get = |k: &str| {
        o.results
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.clone())
    };
    if get("done").as_deref() != Some("yes") {
        fail("the guest script did not finish (see target/kernels/run/<label>/console.*)".into());
    }
    if get("doctor_rc").as_deref() != Some("0") {
        fail(format!(
            "doctor exited {}",
            get("doctor_rc").unwrap_or_default()
        ));
    }
    if get("trace_ready").as_deref() != Some("yes") {
        fail("trace never reached ready".into());
    }
    if get("trace_rc").as_deref() != Some("0") {
        fail(format!(
            "trace exited {}",
            get("trace_rc").unwrap_or_default()
        ));
    }
    for key in [
        "trace_progs_after",
        "trace_filters_after",
        "again_progs_after",
        "again_filters_after",
    ] {
        if let Some(v) = get(key)
            && v != "0"
        {
            fail(format!("{key}={v}: left attached after exit"));
        }
    }
    if let Some(v) = get("again_removed")
        && v == "0"
    {
        fail("a SIGKILLed trace's clsact filters were not removed by the next".into());
    }
    if let Some(v) = get("lab_rc")
        && v != "0"
        && v != "skipped"
    {
        fail(format!("silent-server lab exited {v}"));
    }
    let _ = o.get("release");
}

fn print_table(outcomes: &[Outcome]) {
    if outcomes.is_empty() {
        return;
    }
    let mut names: Vec<String> = Vec::new();
    for o in outcomes {
        for (n, _) in &o.capabilities {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    println!("kernel matrix: capability table");
    for o in outcomes {
        println!("-- {} ({}):", o.label, o.release);
        for n in &names {
            let v = o
                .capabilities
                .iter()
                .find(|(a, _)| a == n)
                .map_or("(not reported)", |(_, v)| v.as_str());
            println!("   {n}: {v}");
        }
        for key in [
            "doctor_s",
            "trace_ready_s",
            "trace_progs_running",
            "trace_filters_running",
            "killed_filters_left",
            "again_removed",
            "lab_rc",
            "lab_s",
        ] {
            if let Some(v) = o.get(key) {
                println!("   {key}: {v}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_capabilities_from_doctor() {
        let d = "ok   retransmits                on\noff  icmp_send                  off (no tracepoint icmp/icmp_send on 5.10.0-32-amd64): ICMP errors this node sends are not seen\nok   tc attach                  no tcx on this kernel\nok   resets sent                on (tcp/tcp_send_reset has no reason here: reset reasons not named)\n";
        let c = doctor_capabilities(d);
        assert_eq!(c[0], ("retransmits".into(), "on".into()));
        assert!(c[1].1.starts_with("off (no tracepoint"), "{:?}", c[1]);
        assert_eq!(c[2], ("tc attach".into(), "no tcx on this kernel".into()));
        assert_eq!(c.len(), 4);
    }
}
