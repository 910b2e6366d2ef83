//! The operator's reads: the audit log and the figures of every part, for admins only.

use std::sync::Arc;

use serde_json::{Value, json};

use super::error::{ServiceError, ServiceResult};
use crate::auth::Identity;
use crate::bus::Bus;
use crate::cache::Invalidate;
use crate::store::Store;
pub use crate::store::users::{AuditEntry, AuditQuery};

pub struct AdminService {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    caches: Vec<Arc<dyn Invalidate>>,
    redis_configured: bool,
}

fn require_admin(who: &Identity) -> ServiceResult<()> {
    if who.admin {
        Ok(())
    } else {
        Err(ServiceError::forbidden("admins only"))
    }
}

impl AdminService {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        caches: Vec<Arc<dyn Invalidate>>,
        redis_configured: bool,
    ) -> Self {
        AdminService {
            store,
            bus,
            caches,
            redis_configured,
        }
    }

    pub async fn audit(&self, who: &Identity, q: &AuditQuery) -> ServiceResult<Vec<AuditEntry>> {
        require_admin(who)?;
        Ok(self.store.audit_log(q).await?)
    }

    /// Pools, caches (hits, misses, hit ratio per layer), sockets (`connected`, from the
    /// gateway), bus.
    pub fn stats(&self, who: &Identity, sockets_connected: usize) -> ServiceResult<Value> {
        require_admin(who)?;
        let caches: serde_json::Map<String, Value> = self
            .caches
            .iter()
            .map(|c| (c.name().to_owned(), c.stats()))
            .collect();
        Ok(json!({
            "pools": self.store.pool_stats(),
            "caches": caches,
            "sockets": { "connected": sockets_connected },
            "bus": self.bus.stats(),
            "redis": { "configured": self.redis_configured },
        }))
    }

    /// The bus and Redis parts of [`AdminService::stats`], without the caller check: for the
    /// dashboard's sampler, which runs inside the app and shows them to admins only.
    pub fn backplane(&self) -> Value {
        json!({
            "bus": self.bus.stats(),
            "redis": { "configured": self.redis_configured },
        })
    }
}
