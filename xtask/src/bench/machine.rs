//! When and where the bench ran: date, kernel, cores, CPU model, and the
//! load average when it started (other work on the machine is noise).

use std::process::Command;

use serde_json::{Value, json};

use crate::util::probe;

pub struct Machine {
    /// UTC, e.g. 2026-11-21T12:00:00Z.
    pub date: String,
    pub kernel: String,
    pub nproc: usize,
    pub cpu: String,
    /// 1, 5 and 15 minute load averages when the bench started.
    pub load: String,
}

impl Machine {
    pub fn describe() -> Machine {
        let out = |cmd: &mut Command| {
            probe(cmd)
                .ok()
                .flatten()
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|| "unknown".into())
        };
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Machine {
            date: out(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])),
            kernel: out(Command::new("uname").arg("-r")),
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            load: std::fs::read_to_string("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|_| "unknown".into()),
        }
    }

    /// One line for the table's header.
    pub fn line(&self) -> String {
        format!(
            "{} · kernel {} · {} CPUs · {} · load {} at start",
            self.date, self.kernel, self.nproc, self.cpu, self.load
        )
    }

    pub fn to_json(&self) -> Value {
        json!({
            "kernel": self.kernel,
            "nproc": self.nproc,
            "cpu": self.cpu,
            "load_at_start": self.load,
        })
    }
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_name() {
        let info = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t: x\n";
        assert_eq!(cpu_model(info).as_deref(), Some("AMD EPYC"));
        assert_eq!(cpu_model("processor : 0\n"), None);
    }
}
