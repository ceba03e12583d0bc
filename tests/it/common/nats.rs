//! A private `nats-server` with JetStream (for the privacy store) on a
//! free port of 127.0.0.1, its storage in a temp dir of its own; it can
//! be stopped and started again on the same port and storage (an outage),
//! and is killed when its guard drops.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::free_port;

pub struct Nats {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Certificate and key when it speaks only TLS.
    tls: Option<(PathBuf, PathBuf)>,
    /// More nats-server flags (e.g. `--auth TOKEN`).
    extra: Vec<String>,
}

impl Nats {
    /// Starts nats-server on a free port and waits until it greets.
    pub fn start() -> Nats {
        let mut n = Nats::not_running();
        n.spawn();
        n
    }

    /// Starts nats-server requiring TLS of its clients (`tls://`), with
    /// this certificate and key (clients need no certificate).
    pub fn start_tls(cert: &Path, key: &Path) -> Nats {
        let mut n = Nats::not_running();
        n.tls = Some((cert.to_path_buf(), key.to_path_buf()));
        n.spawn();
        n
    }

    /// Starts nats-server with more flags (e.g. `--auth TOKEN`).
    pub fn start_with(extra: &[&str]) -> Nats {
        let mut n = Nats::not_running();
        n.extra = extra.iter().map(|s| s.to_string()).collect();
        n.spawn();
        n
    }

    /// A nats-server that is not running (yet), on a free port.
    pub fn not_running() -> Nats {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("rollcall-nats-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the nats-server temp dir");
        Nats {
            port,
            dir,
            child: None,
            tls: None,
            extra: Vec::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port and storage.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "nats-server already running");
        let log = std::fs::File::create(
            super::process::log_dir().join(format!("nats-{}.log", self.port)),
        )
        .expect("create the nats-server log");
        let mut cmd = Command::new(nats_server());
        cmd.args([
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-js",
            "-sd",
        ])
        .arg(&self.dir);
        cmd.args(&self.extra);
        if let Some((cert, key)) = &self.tls {
            cmd.args(["--tls", "--tlscert"])
                .arg(cert)
                .arg("--tlskey")
                .arg(key);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run nats-server ({e}); install it (apt-get install nats-server)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.greets() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not greet on port {} within 5 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True when the server sends its INFO line (in plain text, before
    /// any TLS handshake).
    fn greets(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).is_ok() && &buf == b"INFO"
    }

    /// SIGKILL, as if the machine running NATS died (its storage stays).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Nats {
    /// Deletes its storage (JetStream streams, the privacy bucket), as if
    /// it came back on a new disk. Only while it is not running.
    pub fn wipe(&mut self) {
        assert!(self.child.is_none(), "stop nats-server before wiping it");
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).expect("create the nats-server temp dir");
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `nats-server` on the PATH, or where Debian's package puts it.
fn nats_server() -> &'static str {
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("nats-server").is_file())
    });
    if on_path {
        "nats-server"
    } else {
        "/usr/sbin/nats-server"
    }
}
