//! Helpers shared by the broker integration tests: where each broker is
//! (from the environment, with the defaults scripts/brokers.sh provides),
//! a loud failure when it is unreachable (never a silent skip), unique
//! names so tests can run in parallel, and bounded polling.

#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// `var` from the environment, else `default`.
pub fn env_or(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// Panic with a clear message when nothing listens on `host:port`.
pub fn require_reachable(what: &str, host_port: &str, var: &str) {
    let addr: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(host_port)
        .map(|a| a.collect())
        .unwrap_or_default();
    let ok = addr
        .iter()
        .any(|a| std::net::TcpStream::connect_timeout(a, Duration::from_secs(2)).is_ok());
    assert!(
        ok,
        "{what} is not reachable at {host_port} (set {var} to change it); \
         start it with scripts/brokers.sh"
    );
}

/// A name no other test (or test run) uses: `prefix-<pid>-<n>-<millis>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() % 1_000_000_000)
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{millis}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Call `f` until it returns `Some`, every `every`, for at most `limit`;
/// then panic with the last thing seen.
pub async fn poll_until<T, F, Fut>(limit: Duration, every: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        match f().await {
            Ok(v) => return v,
            Err(seen) => last = seen,
        }
        tokio::time::sleep(every).await;
    }
    panic!("{what}: not reached within {limit:?}; last seen: {last}");
}
