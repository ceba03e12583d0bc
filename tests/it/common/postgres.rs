//! A private PostgreSQL server for tests: `initdb` into a fresh directory,
//! `postgres` on a free port of 127.0.0.1 (trust authentication, no fsync),
//! killed when its guard drops. PostgreSQL refuses to run as root: as
//! root the server runs as the `postgres` user of the Debian package.
//! It can be stopped and started again on the same port and data (an
//! outage).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::free_port;

/// Where the server binaries are: where Debian puts them (its PATH has
/// only version wrappers, if anything), else on the PATH.
fn bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    versions.sort();
    let debian = versions
        .into_iter()
        .rev()
        .map(|v| v.join("bin").join(name))
        .find(|p| p.exists());
    if let Some(path) = debian {
        return path;
    }
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or_else(|| {
            panic!("{name} not found; install the postgresql package (scripts/test does)")
        })
}

/// The uid and gid to run the server as: the `postgres` user when this
/// process is root, else none (run as ourselves).
fn server_user() -> Option<(u32, u32)> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !root {
        return None;
    }
    let id = |flag: &str| -> u32 {
        Command::new("id")
            .args([flag, "postgres"])
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .expect("a postgres user (from the postgresql package) to run the server as")
    };
    Some((id("-u"), id("-g")))
}

/// A private PostgreSQL.
pub struct Postgres {
    pub port: u16,
    dir: PathBuf,
    user: Option<(u32, u32)>,
    child: Option<Child>,
    /// Server settings (`-c name=value`) beyond the defaults.
    settings: Vec<String>,
}

impl Postgres {
    /// Creates a cluster in a fresh directory and starts it on a free
    /// port; waits until it accepts connections.
    pub fn start() -> Postgres {
        Self::start_with(|_| Vec::new())
    }

    /// [`Postgres::start`] speaking TLS too (plain connections are still
    /// accepted) with this certificate and key.
    pub fn start_tls(cert: &Path, key: &Path) -> Postgres {
        Self::start_with(|pg| {
            let (cert_copy, key_copy) = (pg.dir.join("server.pem"), pg.dir.join("server.key"));
            std::fs::copy(cert, &cert_copy).expect("copy the certificate");
            std::fs::copy(key, &key_copy).expect("copy the key");
            // PostgreSQL wants its key private to the server's user.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_copy, std::fs::Permissions::from_mode(0o600))
                .expect("chmod the key");
            if let Some((uid, gid)) = pg.user {
                for f in [&cert_copy, &key_copy] {
                    std::os::unix::fs::chown(f, Some(uid), Some(gid)).expect("chown");
                }
            }
            vec![
                "ssl=on".into(),
                format!("ssl_cert_file={}", cert_copy.display()),
                format!("ssl_key_file={}", key_copy.display()),
            ]
        })
    }

    fn start_with(settings: impl FnOnce(&Postgres) -> Vec<String>) -> Postgres {
        let dir = std::env::temp_dir().join(format!(
            "rollcall-pg-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the data directory");
        let user = server_user();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the data directory");
        }
        let mut initdb = Command::new(bin("initdb"));
        initdb
            .args(["-D"])
            .arg(dir.join("data"))
            .args(["-A", "trust", "-U", "rollcall", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = user {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres {
            port: free_port(),
            dir,
            user,
            child: None,
            settings: Vec::new(),
        };
        pg.settings = settings(&pg);
        pg.spawn();
        pg
    }

    /// The `--bus` URL (plain TCP, user rollcall, database postgres).
    pub fn url(&self) -> String {
        format!(
            "postgres://rollcall@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(bin("postgres"));
        cmd.arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(&self.dir)
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .args(self.settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(log_path(&self.dir)).expect("the server log"),
            ));
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        self.child = Some(cmd.spawn().expect("start postgres"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = Command::new(bin("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                std::fs::read_to_string(log_path(&self.dir)).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server at once (its clients see their connections end).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT: fast shutdown, connections are cut.
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts it again after [`Postgres::stop`].
    pub fn resume(&mut self) {
        self.spawn();
    }
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("server.log")
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
