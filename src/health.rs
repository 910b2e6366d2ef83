//! Health checks: every part the configuration builds hands one back with it, and `/readyz`
//! runs them all (a part that is not reachable makes the instance not ready).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

#[derive(Clone)]
pub struct HealthCheck {
    /// The key in `/readyz`'s `checks` (`database`, `redis`, `bus`).
    pub name: &'static str,
    probe: Probe,
}

impl HealthCheck {
    pub fn new<F, Fut>(name: &'static str, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        HealthCheck {
            name,
            probe: Arc::new(move || Box::pin(probe())),
        }
    }

    /// Runs the probe; one that takes longer than `limit` has failed.
    pub async fn run(&self, limit: Duration) -> Result<(), String> {
        tokio::time::timeout(limit, (self.probe)())
            .await
            .unwrap_or_else(|_| Err("timed out".to_owned()))
    }
}
