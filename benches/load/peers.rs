//! The servers under test: a release rollcall, or a Node peer from
//! `conformance/node/`, each a child process whose CPU time and RSS are
//! read from /proc (the generator shares the machine's cores).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::clients::{API_KEY, SECRET};

/// A server process and the address it listens on.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// A release rollcall with the generator's secret and API key, open
    /// `bench*` channels and no per-user, per-address or per-client rate
    /// limits in the way of the load (`extra` after them).
    pub fn rollcall(extra: &[&str]) -> Server {
        // ROLLCALL_BIN measures another build (an A/B comparison).
        let binary = std::env::var("ROLLCALL_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_rollcall").to_string());
        let mut command = Command::new(binary);
        // ROLLCALL_WORKERS sets the server's tokio worker threads (default:
        // one per core), e.g. to leave the generator a core.
        if let Ok(workers) = std::env::var("ROLLCALL_WORKERS") {
            command.env("TOKIO_WORKER_THREADS", workers);
        }
        let child = command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--jwt-secret", SECRET, "--api-key", API_KEY])
            .args(["--open-channels", "bench*,idle*"])
            .args(["--max-connections-per-address", "100000"])
            .args(["--max-connections-per-user", "100000"])
            .args(["--max-messages-per-second", "1000000"])
            .args(extra)
            .env("ROLLCALL_DRAIN_GRACE", "0s")
            .env("ROLLCALL_DRAIN_SPREAD", "0s")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start rollcall");
        Server::from_banner(child)
    }

    /// A Node peer: `conformance/node/<script>` with the generator's
    /// secret and API key (its modules pinned in
    /// conformance/package-lock.json; `cd conformance && npm ci`).
    pub fn node(script: &str) -> Server {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("conformance/node")
            .join(script);
        let child = Command::new("node")
            .arg(path)
            .args(["--port", "0", "--secret", SECRET, "--api-key", API_KEY])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node (install Node.js, then: cd conformance && npm ci)");
        Server::from_banner(child)
    }

    /// Reads the first line, "… listening on ADDR" (or "… on PORT"), and
    /// keeps draining stdout.
    fn from_banner(mut child: Child) -> Server {
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("banner");
        // Keep reading so the server never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let last = line.trim().rsplit(' ').next().unwrap_or_default();
        let addr = last
            .parse()
            .ok()
            .or_else(|| {
                last.parse::<u16>()
                    .ok()
                    .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            })
            .unwrap_or_else(|| panic!("unexpected banner {line:?}"));
        Server { child, addr }
    }

    /// The server process's CPU time and RSS now.
    pub fn usage(&self) -> Usage {
        usage_of(self.child.id())
    }

    /// Waits (at most 120 s) until the server uses under 5 % of a core
    /// over 250 ms.
    pub async fn wait_until_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut before = self.usage().cpu();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.usage().cpu();
            if now - before < 0.0125 {
                return;
            }
            before = now;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Process `pid`'s CPU time and RSS now (the generator's own: its pid).
pub fn usage_of(pid: u32) -> Usage {
    let (user, system) = crate::common::process::cpu_times(pid);
    Usage {
        user,
        system,
        rss: crate::common::process::rss_bytes(pid),
    }
}

/// A server's CPU seconds (in user space and in the kernel, which on
/// 127.0.0.1 includes the TCP receive processing of what it sends) and
/// resident memory.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub user: f64,
    pub system: f64,
    pub rss: u64,
}

impl Usage {
    pub fn cpu(self) -> f64 {
        self.user + self.system
    }
}

/// The machine's CPU ticks: (steal, total), from the `cpu` line of
/// /proc/stat. Steal is time the hypervisor gave another guest.
pub fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    (fields.get(7).copied().unwrap_or(0), fields.iter().sum())
}

/// Steal between two [`cpu_ticks`] readings, in percent of the window.
pub fn steal_percent(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1).max(1);
    after.0.saturating_sub(before.0) as f64 * 100.0 / total as f64
}
