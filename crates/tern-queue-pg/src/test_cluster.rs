//! A private PostgreSQL cluster for tests (feature `test-util`).
//!
//! [`TestCluster::start`] runs `initdb` into a temporary directory and
//! starts `postgres` on it, listening on 127.0.0.1 at a free port and on a
//! Unix socket in that directory only, with `fsync = on` and
//! `synchronous_commit = on` — never the system's cluster. PostgreSQL
//! refuses to run as root, so when the tests run as root both programs run
//! through `setpriv` as the `postgres` user (or `nobody`), which then owns
//! the directory. Dropping the cluster stops the server (fast shutdown) and
//! removes the directory.
//!
//! The binaries are looked up in `$TERN_PG_BIN` when it is set, else in
//! `/usr/lib/postgresql/{17,16,15}/bin` (Debian's `postgresql-15`). When
//! none is there, [`start`](TestCluster::start) prints why and returns
//! `Ok(None)`: the caller skips its test — unless `TERN_PG_REQUIRED=1` is
//! set (CI), which makes a missing PostgreSQL an error.
//!
//! Use from another crate's tests:
//!
//! ```toml
//! [dev-dependencies]
//! tern-queue-pg = { workspace = true, features = ["test-util"] }
//! ```
//!
//! ```no_run
//! # async fn t() -> Result<(), tern_queue_pg::test_cluster::ClusterError> {
//! use tern_queue_pg::test_cluster::TestCluster;
//! let Some(cluster) = TestCluster::start().await? else { return Ok(()) };
//! let url = cluster.create_database("three_nodes").await?;
//! // PgStore::connect(&PgConfig { url, password: None, pool_size: 4, node: "a".into() }) …
//! # let _ = url; Ok(()) }
//! ```
//!
//! What this module must never do: touch a cluster it did not create, or
//! listen on anything but loopback.

use std::fs;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a test cluster could not start.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A file operation or a program start failed.
    #[error("test cluster: {op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A program exited unsuccessfully.
    #[error("test cluster: {program} failed ({status}): {output}")]
    Failed {
        /// Which program.
        program: &'static str,
        /// Its exit status.
        status: String,
        /// What it printed.
        output: String,
    },
    /// The server did not accept connections in time.
    #[error("test cluster: the server did not start within {0:?}; log: {1}")]
    Timeout(Duration, String),
    /// PostgreSQL is not installed and `TERN_PG_REQUIRED` is set.
    #[error("test cluster: {0}")]
    Missing(String),
    /// A statement on the new cluster failed.
    #[error("test cluster: {0}")]
    Database(#[source] tokio_postgres::Error),
}

fn io_err(op: impl Into<String>) -> impl FnOnce(io::Error) -> ClusterError {
    let op = op.into();
    move |source| ClusterError::Io { op, source }
}

/// A running private cluster; stopped and deleted when dropped.
#[derive(Debug)]
pub struct TestCluster {
    dir: tempfile::TempDir,
    server: Child,
    port: u16,
    bin: PathBuf,
    user: Option<(u32, u32)>,
}

/// The superuser the cluster is created with (trust authentication).
pub const USER: &str = "tern";

/// The directory holding `initdb` and `postgres`, if installed.
/// `$TERN_PG_BIN` when set (and only it), else the first of Debian's.
pub fn bin_dir() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("TERN_PG_BIN") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => ["17", "16", "15"]
            .iter()
            .map(|v| PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")))
            .collect(),
    };
    candidates
        .into_iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
}

/// Whether this process runs as root (from `/proc/self/status`).
fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Uid and gid of the first of `names` in `/etc/passwd`.
fn unprivileged_user() -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    ["postgres", "nobody"].iter().find_map(|name| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() > 3 && fields[0] == *name)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
    })
}

/// `program` run as `user` when given (through `setpriv`), else directly.
fn command(program: &Path, user: Option<(u32, u32)>) -> Command {
    match user {
        Some((uid, gid)) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("--")
                .arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn free_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("find a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io_err("find a free port"))?
        .port())
}

fn chown_tree(path: &Path, (uid, gid): (u32, u32)) -> Result<(), ClusterError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(io_err(format!("chown {}", path.display())))
}

impl TestCluster {
    /// Create and start a cluster with the installed PostgreSQL
    /// ([`bin_dir`]); `Ok(None)` (after printing why) when it is not
    /// installed and `TERN_PG_REQUIRED` is not `1`.
    pub async fn start() -> Result<Option<TestCluster>, ClusterError> {
        TestCluster::start_with(bin_dir()).await
    }

    /// [`start`](Self::start) with the binaries in `bin` (`None`: not
    /// installed).
    pub async fn start_with(bin: Option<PathBuf>) -> Result<Option<TestCluster>, ClusterError> {
        let Some(bin) = bin else {
            let why = "PostgreSQL binaries not found ($TERN_PG_BIN, /usr/lib/postgresql/*/bin): \
                       install postgresql-15";
            if std::env::var_os("TERN_PG_REQUIRED").is_some_and(|v| v == "1") {
                return Err(ClusterError::Missing(why.to_owned()));
            }
            eprintln!("SKIP: {why}; skipping the PostgreSQL tests");
            return Ok(None);
        };
        let user = if running_as_root() {
            Some(unprivileged_user().ok_or_else(|| {
                ClusterError::Missing("running as root and no postgres or nobody user".into())
            })?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("tern-pg-")
            .tempdir()
            .map_err(io_err("create a temporary directory"))?;
        if let Some(user) = user {
            chown_tree(dir.path(), user)?;
        }
        let data = dir.path().join("data");
        let out = command(&bin.join("initdb"), user)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(io_err("run initdb"))?;
        if !out.status.success() {
            return Err(ClusterError::Failed {
                program: "initdb",
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned(),
            });
        }
        // A port taken between our probe and the server's bind: try again.
        let mut last = None;
        for _ in 0..3 {
            let port = free_port()?;
            let mut server = spawn_server(&bin, user, dir.path(), port)?;
            match wait_ready(&mut server, dir.path(), port).await {
                Ok(()) => {
                    return Ok(Some(TestCluster {
                        dir,
                        server,
                        port,
                        bin,
                        user,
                    }));
                }
                Err(e) => {
                    stop(&mut server, "-INT");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("three attempts"))
    }

    /// Kill the server the way a crash would (immediate shutdown, SIGQUIT:
    /// no checkpoint; the next start replays the WAL). Clients' connections
    /// break.
    pub fn crash(&mut self) {
        stop(&mut self.server, "-QUIT");
    }

    /// Start the server again on the same data and port (after
    /// [`crash`](Self::crash) or [`stop`](Self::stop)).
    pub async fn restart(&mut self) -> Result<(), ClusterError> {
        stop(&mut self.server, "-INT");
        self.server = spawn_server(&self.bin, self.user, self.dir.path(), self.port)?;
        wait_ready(&mut self.server, self.dir.path(), self.port).await
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection string for database `dbname` on this cluster.
    pub fn url(&self, dbname: &str) -> String {
        url(self.port, dbname)
    }

    /// Create database `name` (letters, digits, `_`) and return its
    /// connection string.
    pub async fn create_database(&self, name: &str) -> Result<String, ClusterError> {
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "a plain database name"
        );
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                .await
                .map_err(ClusterError::Database)?;
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(ClusterError::Database)?;
        drop(client);
        let _ = driver.await;
        Ok(self.url(name))
    }

    /// Stop the server now (fast shutdown: connections are closed), as a
    /// crash of the database would look to clients. Idempotent.
    pub fn stop(&mut self) {
        stop(&mut self.server, "-INT");
    }

    /// The cluster's directory (data in `data/`, the server's log and
    /// socket beside it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn url(port: u16, dbname: &str) -> String {
    format!("host=127.0.0.1 port={port} user={USER} dbname={dbname} connect_timeout=10")
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("server.log")
}

/// Start `postgres` on `dir/data`, logging to `dir/server.log`.
fn spawn_server(
    bin: &Path,
    user: Option<(u32, u32)>,
    dir: &Path,
    port: u16,
) -> Result<Child, ClusterError> {
    let log_path = log_path(dir);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_err("open the server log"))?;
    if let Some(user) = user {
        chown_tree(&log_path, user)?;
    }
    command(&bin.join("postgres"), user)
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-k")
        .arg(dir)
        .args(["-p", &port.to_string(), "-h", "127.0.0.1"])
        .args(["-c", "fsync=on", "-c", "synchronous_commit=on"])
        .args(["-c", "max_connections=60", "-c", "shared_buffers=16MB"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io_err("open the server log"))?)
        .stderr(log)
        .spawn()
        .map_err(io_err("start postgres"))
}

/// Wait until the server accepts connections.
async fn wait_ready(server: &mut Child, dir: &Path, port: u16) -> Result<(), ClusterError> {
    const LIMIT: Duration = Duration::from_secs(60);
    let started = Instant::now();
    loop {
        if tokio_postgres::connect(&url(port, "postgres"), tokio_postgres::NoTls)
            .await
            .is_ok()
        {
            return Ok(());
        }
        let exited = server.try_wait().ok().flatten().is_some();
        if exited || started.elapsed() > LIMIT {
            return Err(ClusterError::Timeout(
                LIMIT,
                fs::read_to_string(log_path(dir)).unwrap_or_default(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Send `signal` (`-INT`: fast shutdown, `-QUIT`: immediate), then
/// SIGKILL after 20 s; reaps the process.
fn stop(server: &mut Child, signal: &str) {
    if server.try_wait().ok().flatten().is_some() {
        return;
    }
    let _ = Command::new("kill")
        .args([signal, &server.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if server.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = server.kill();
    let _ = server.wait();
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
