//! A server's CPU time over a measurement window (user + system, all threads, from
//! /proc/PID/stat), so CPU per delivery is a figure of the run and not a guess from totals.
//! The process is named by pid, or found as the one listening on the URL's port on this host.

use std::time::Instant;

use anyhow::Context;

/// CPU seconds (user + system, all threads) a process has used so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    // fields after the command name (which may hold spaces): state is the 3rd, utime the 14th
    let after = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / hz)
}

/// The CPU seconds `pid` uses between `from` and `to` (read at both instants).
pub async fn over_window(pid: u32, from: Instant, to: Instant) -> anyhow::Result<f64> {
    tokio::time::sleep_until(from.into()).await;
    let before = cpu_seconds(pid)?;
    tokio::time::sleep_until(to.into()).await;
    Ok(cpu_seconds(pid)? - before)
}

/// The process listening on `url`'s port, when the URL is on this host: the socket's inode from
/// /proc/net/tcp{,6}, then the process holding a descriptor on it. `None` when it cannot tell
/// (another host, or the process belongs to a user this one may not look into).
pub fn listening_pid(url: &str) -> Option<u32> {
    let url = url::Url::parse(url).ok()?;
    let local = match url.host()? {
        url::Host::Domain(d) => d == "localhost",
        url::Host::Ipv4(a) => a.is_loopback() || a.is_unspecified(),
        url::Host::Ipv6(a) => a.is_loopback(),
    };
    if !local {
        return None;
    }
    let inode = listening_inode(url.port_or_known_default()?)?;
    let target = format!("socket:[{inode}]");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
        let pid: u32 = p.file_name().to_str()?.parse().ok()?;
        let fds = std::fs::read_dir(p.path().join("fd")).ok()?;
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == &*target))
            .then_some(pid)
    })
}

/// The inode of the socket in LISTEN state on `port`.
fn listening_inode(port: u16) -> Option<u64> {
    const LISTEN: &str = "0A";
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            text.lines().skip(1).find_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let local_port = f.get(1)?.rsplit_once(':')?.1;
                (u16::from_str_radix(local_port, 16).ok()? == port && *f.get(3)? == LISTEN)
                    .then(|| f.get(9)?.parse().ok())
                    .flatten()
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process_by_its_listening_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let pid = listening_pid(&format!("http://127.0.0.1:{port}"));
        assert_eq!(pid, Some(std::process::id()));
        assert!(listening_pid("http://192.0.2.1:80").is_none());
    }

    #[test]
    fn reads_this_process_cpu_time() {
        let before = cpu_seconds(std::process::id()).unwrap();
        // spin until the clock ticks (10 ms at 100 Hz): the reading moves with the work done
        let start = Instant::now();
        while cpu_seconds(std::process::id()).unwrap() <= before {
            assert!(start.elapsed().as_secs() < 10, "CPU time never moved");
        }
    }
}
