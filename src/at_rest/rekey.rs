//! `tsunagi rekey`: every stored value not under the current key (plaintext ones too) is
//! re-encrypted under it, table by table, in batches of short transactions, each row
//! compare-and-set (safe while servers run). When no value is left under another key, those
//! key ids are unregistered and may then be removed from `TSUNAGI_ENCRYPTION_KEYS`.

use tokio_util::sync::CancellationToken;

use super::{SealError, Sealer};
use crate::store::Store;
use crate::store::StoreError;
use crate::store::sealed::{Reseal, ResealStore, RowId, SealedTable};

#[derive(Debug, thiserror::Error)]
pub enum RekeyError {
    #[error("rekey needs TSUNAGI_ENCRYPTION_KEYS: there is no current key to encrypt under")]
    NoCurrentKey,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// What one table's pass did.
#[derive(Debug, Clone, Default)]
pub struct TableReport {
    pub table: &'static str,
    pub resealed: u64,
    /// Rows changed (or moved) by someone else between read and write: left as they are.
    pub skipped: u64,
}

#[derive(Debug, Clone, Default)]
pub struct RekeyReport {
    pub current: String,
    pub tables: Vec<TableReport>,
    pub batches: u64,
    /// Rows still not under the current key at the end (written meanwhile by an instance with an
    /// older current key, or skipped); their keys stay registered.
    pub remaining: i64,
    pub unregistered: Vec<String>,
}

/// How many values a pass would re-encrypt (for the progress bar).
pub async fn count(store: &dyn Store, current: &str) -> Result<i64, StoreError> {
    let mut total = 0;
    for table in SealedTable::ALL {
        total += on(store, table).count_stale(table, current).await?;
    }
    Ok(total)
}

/// Cold messages live in cold storage, the rest in the primary.
fn on(store: &dyn Store, table: SealedTable) -> &dyn ResealStore {
    match table {
        SealedTable::ColdMessages => &**store.cold(),
        _ => store,
    }
}

pub async fn run(
    store: &dyn Store,
    sealer: &Sealer,
    batch: u32,
    stop: &CancellationToken,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<RekeyReport, RekeyError> {
    let current = sealer.current().ok_or(RekeyError::NoCurrentKey)?.to_owned();
    // registered before the first value is written under it
    store.register_key(&current).await?;
    let mut report = RekeyReport {
        current: current.clone(),
        ..RekeyReport::default()
    };
    let mut done = 0u64;
    for table in SealedTable::ALL {
        let target = on(store, table);
        let mut t = TableReport {
            table: table.name(),
            ..TableReport::default()
        };
        let mut after: Option<RowId> = None;
        while !stop.is_cancelled() {
            let rows = target
                .stale_rows(table, after.as_ref(), &current, batch)
                .await?;
            let Some(last) = rows.last() else { break };
            after = Some(last.row.clone());
            let mut reseals = Vec::with_capacity(rows.len());
            for old in rows {
                let plain = sealer.open(
                    old.row.binding(),
                    old.stored.key_id.as_deref(),
                    old.stored.text.clone(),
                )?;
                let new = sealer.seal(old.row.binding(), &plain);
                reseals.push(Reseal { old, new });
            }
            let changed = target.reseal(table, &reseals).await?;
            t.resealed += changed;
            t.skipped += reseals.len() as u64 - changed;
            done += reseals.len() as u64;
            report.batches += 1;
            progress(done);
        }
        report.tables.push(t);
    }
    if stop.is_cancelled() {
        return Ok(report);
    }
    report.remaining = count(store, &current).await?;
    if report.remaining == 0 {
        report.unregistered = store.unregister_keys_except(&current).await?;
    }
    Ok(report)
}
