//! The processes of a scale run: starting them, finding a wrapped controller, stopping
//! it, and reading their memory and CPU from `/proc`.

use std::{path::Path, process::Stdio, time::Duration};

use tokio::process::{Child, Command};

use super::{Error, Result};

pub(super) fn spawn(program: &Path, args: &[&str], log: &Path) -> Result<Child> {
    let io = |e| Error::Io(log.display().to_string(), e);
    let file = std::fs::File::create(log).map_err(io)?;
    let err = file.try_clone().map_err(io)?;
    Command::new(program)
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Io(program.display().to_string(), e))
}

pub(super) fn proc_status(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

/// User and system CPU seconds of `pid` (clock ticks of 1/100 s).
pub(super) fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

/// The processes whose CPU the report shows: `named` and every process of the local
/// control plane (`cluster.sh` records one pid per process in its `pids` directory).
pub(super) fn processes<'a>(
    pids: &Path,
    named: impl IntoIterator<Item = (&'a str, u32)>,
) -> Vec<(String, u32)> {
    let mut all: Vec<(String, u32)> = named.into_iter().map(|(n, p)| (n.to_string(), p)).collect();
    if let Ok(entries) = std::fs::read_dir(pids) {
        for entry in entries.flatten() {
            let pid = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|s| s.trim().parse().ok());
            if let Some(pid) = pid {
                all.push((entry.file_name().to_string_lossy().into_owned(), pid));
            }
        }
    }
    all
}

/// Sends SIGTERM to a process when dropped.
pub(super) struct Stop(pub(super) Option<u32>);

impl Drop for Stop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

/// The pid of the serin process a wrapper (a profiler) started: a descendant of
/// `wrapper` whose name is `serin`.
pub(super) async fn serin_under(wrapper: u32) -> Result<u32> {
    let parent_of = |pid: u32| -> Option<(String, u32)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (head, rest) = stat.rsplit_once(')')?;
        let name = head.split_once('(')?.1.to_string();
        Some((name, rest.split_whitespace().nth(1)?.parse().ok()?))
    };
    for _ in 0..100 {
        let found = std::fs::read_dir("/proc")
            .map_err(|e| Error::Io("/proc".into(), e))?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                let Some((name, mut parent)) = parent_of(*pid) else {
                    return false;
                };
                if name != "serin" {
                    return false;
                }
                while parent > 1 {
                    if parent == wrapper {
                        return true;
                    }
                    parent = parent_of(parent).map_or(0, |(_, p)| p);
                }
                false
            });
        if let Some(pid) = found {
            return Ok(pid);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(Error::Timeout(
        Duration::from_secs(10),
        "the wrapped serin process".into(),
    ))
}
