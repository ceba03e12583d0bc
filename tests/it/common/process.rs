//! A `rollcall serve` child process, for tests and benchmarks that need
//! the server's own file descriptors, RSS and CPU time (read from
//! /proc/PID) apart from the clients', more sockets than one process may
//! open, signals, or several nodes of a cluster (see [`super::cluster`]).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{API_KEY, SECRET, http};

/// A `rollcall serve` process on 127.0.0.1:0 with the test secret and API
/// key, its log in a temporary file of its own; killed when dropped.
pub struct ServerProcess {
    /// None once killed or exited.
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub log: PathBuf,
    /// Who it is in failure messages.
    pub who: String,
}

impl ServerProcess {
    /// Starts the binary this crate built with `extra` arguments; `name`
    /// names its log file. Panics, with the log, when no banner comes
    /// within 15 s (e.g. a flag this build does not know).
    pub fn start(name: &str, extra: &[&str]) -> ServerProcess {
        Self::start_binary(env!("CARGO_BIN_EXE_rollcall"), name, extra)
    }

    /// [`ServerProcess::start`] with another build of the binary (e.g.
    /// target/release/rollcall for a benchmark).
    pub fn start_binary(binary: &str, name: &str, extra: &[&str]) -> ServerProcess {
        // ROLLCALL_TEST_LOG (a RUST_LOG filter) raises the servers' log
        // level when a test needs looking into.
        let filter = std::env::var("ROLLCALL_TEST_LOG").unwrap_or_else(|_| "rollcall=info".into());
        Self::spawn(binary, name, extra, &filter)
    }

    /// Starts `binary serve` on 127.0.0.1:0 with the test secret and API
    /// key, then `args`, logging at `rust_log` to a file of its own.
    pub fn spawn(binary: &str, name: &str, args: &[&str], rust_log: &str) -> ServerProcess {
        // One test process runs every test: the counter keeps two servers
        // (of one test or of tests running side by side) off one log file.
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let log = log_dir().join(format!(
            "{name}-{}-{}.log",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let log_file = std::fs::File::create(&log).expect("create the server log");
        let mut child = Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--jwt-secret", SECRET, "--api-key", API_KEY])
            .args(args)
            // SIGTERM stops at once unless a test asks for a drain (a
            // flag in `args` wins over the environment).
            .env("ROLLCALL_DRAIN_GRACE", "0s")
            .env("ROLLCALL_DRAIN_SPREAD", "0s")
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("start rollcall serve");
        let who = format!("{name} ({binary})");
        let addr = wait_for_banner(&mut child, &log, &who);
        ServerProcess {
            child: Some(child),
            addr,
            log,
            who,
        }
    }

    /// The process id (0 once it is gone).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL: no goodbye, no cleanup.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (graceful shutdown) without waiting.
    pub fn send_term(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
    }

    /// Waits (at most 10 s, then SIGKILL and panic) for the process to exit.
    pub fn wait_exit(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not exit within 10 s of SIGTERM", self.who);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait for the process to exit.
    pub fn terminate(&mut self) {
        self.send_term();
        self.wait_exit();
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running, and the end of its log: for
    /// failure messages.
    pub fn status(&mut self) -> String {
        let alive = self.alive();
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(20);
        format!(
            "server process alive: {alive}; its log {}:\n{}",
            self.log.display(),
            lines[from..].join("\n")
        )
    }

    /// Open file descriptors of the server process.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Resident memory of the server process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.pid())
    }

    /// CPU seconds (user + system) the server process has used.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    /// An HTTP API request with the test API key.
    pub async fn http(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        http(self.addr, method, path, body, Some(API_KEY)).await
    }

    /// `GET path`, asserting 200.
    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.http("GET", path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }
}

/// Reads a starting `rollcall serve`'s stdout until its banner says where
/// it listens, and keeps draining it (so the server never blocks on a full
/// pipe). Kills it and panics with its log (`log`) when no banner comes
/// within 15 s, e.g. for a flag this build does not know.
pub fn wait_for_banner(child: &mut Child, log: &Path, who: &str) -> SocketAddr {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening on ").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(rest.trim().to_string());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(15)) {
        Ok(a) => a.parse().expect("banner address"),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(log).unwrap_or_default();
            // "not a front end of this build": the binary was built
            // without a feature (e.g. by another cargo build in the
            // same target directory since this test's build).
            panic!("{who} printed no banner within 15 s; its log:\n{text}");
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where test server processes write their logs.
pub fn log_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("rollcall-test-servers");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Resident memory of process `pid` in bytes (VmRSS of /proc/PID/status).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    kib * 1024
}

/// CPU seconds (user + system) process `pid` has used so far, from
/// /proc/PID/stat (Linux clock ticks, 100 per second).
pub fn cpu_seconds(pid: u32) -> f64 {
    let (user, system) = cpu_times(pid);
    user + system
}

/// CPU seconds process `pid` has used so far in user space and in the
/// kernel, from /proc/PID/stat (Linux clock ticks, 100 per second).
pub fn cpu_times(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // utime and stime are fields 14 and 15; what follows the command
    // name's ')' starts at field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let seconds = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0) as f64
            / 100.0
    };
    (seconds(11), seconds(12))
}
