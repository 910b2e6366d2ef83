//! The real `tsunagi` binary as a child process (for what only a process shows: signals, a
//! descriptor limit, resident memory), on a database that outlives it, so a test can stop it
//! and start another on the same data.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::{SECRET, fresh_pg_database, test_pg};

/// A fresh database: a SQLite file in a temp dir, or (with `TSUNAGI_TEST_PG`) a PostgreSQL one.
pub struct Data {
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Data {
    pub async fn fresh() -> Data {
        let dir = tempfile::tempdir().unwrap();
        let url = match test_pg() {
            Some(base) => format!("{base}/{}", fresh_pg_database(&base).await),
            None => format!("sqlite://{}/t.db", dir.path().display()),
        };
        Data { url, _dir: dir }
    }

    /// Always SQLite, whatever the environment says.
    pub fn sqlite() -> Data {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db", dir.path().display());
        Data { url, _dir: dir }
    }
}

/// A serving `tsunagi serve` under `prlimit --nofile=<fds>`.
pub struct Binary {
    pub child: Child,
    pub addr: String,
    /// Everything it has logged so far (JSON lines).
    pub log: Arc<Mutex<String>>,
}

pub async fn spawn_binary(db: &str, fds: u32, env: &[(&str, &str)]) -> Binary {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={fds}:{fds}"))
        .arg(env!("CARGO_BIN_EXE_tsunagi"))
        .arg("serve")
        .env("TSUNAGI_DATABASE_URL", db)
        .env("TSUNAGI_JWT_SECRET", SECRET)
        .env("TSUNAGI_LISTEN", "127.0.0.1:0")
        .env("TSUNAGI_LOG_FORMAT", "json")
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("prlimit and the tsunagi binary run");
    let (addr, _url, log) = read_start(&mut child).await;
    let binary = Binary { child, addr, log };
    binary.ready().await;
    binary
}

/// Reads a started `tsunagi serve`'s JSON log (its stderr) up to the start line: the `listen`
/// and `url` fields; then keeps reading it (so it never blocks on a full pipe) into the log.
pub async fn read_start(child: &mut Child) -> (String, String, Arc<Mutex<String>>) {
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (listen, url) = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if let Some(listen) = v["fields"]["listen"].as_str() {
                let url = v["fields"]["url"].as_str().unwrap_or_default().to_owned();
                return (listen.to_owned(), url);
            }
        }
        panic!("tsunagi exited before serving");
    })
    .await
    .expect("tsunagi starts");
    let log = Arc::new(Mutex::new(String::new()));
    let kept = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut kept = kept.lock().unwrap();
            kept.push_str(&line);
            kept.push('\n');
        }
    });
    (listen, url, log)
}

impl Binary {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until migrations are done and requests are answered (the socket is bound first).
    async fn ready(&self) {
        let http = reqwest::Client::new();
        for _ in 0..400 {
            if let Ok(r) = http.get(format!("{}/readyz", self.url())).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("tsunagi did not become ready");
    }

    /// SIGTERM, then its exit status (within `within`).
    pub async fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        // prlimit execs tsunagi, so the child's pid is tsunagi's
        let pid = self.child.id().expect("still running") as i32;
        // SAFETY: kill(2) with a pid we started and a valid signal number
        unsafe { libc::kill(pid, libc::SIGTERM) };
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("tsunagi exits after SIGTERM")
            .unwrap()
    }

    /// Peak resident memory so far, in MiB.
    pub fn peak_rss_mib(&self) -> u64 {
        peak_rss_mib(self.child.id().expect("still running"))
    }
}

/// Peak resident memory of process `pid`, in MiB.
pub fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}
