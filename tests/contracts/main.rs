//! Contract suites, one per swappable interface, each written once and run against every
//! engine through a factory (as centrifuge runs one broker suite on its memory and Redis
//! engines): a test is `<interface>::<engine>::<obligation>`.
//!
//! Layout: `helpers.rs` finds the servers (PostgreSQL only with `TSUNAGI_TEST_PG`; Redis always,
//! `TSUNAGI_TEST_REDIS`) and declares the per-engine tests; `store.rs` runs the `Store` contract
//! on SQLite and PostgreSQL, `sensors.rs` the `SensorStore` contract; `state.rs` the `StateStore` contract; `archive.rs` the
//! `ArchiveStore` and `ColdStore` contract (hot and cold history); `jobs.rs` the `JobStore`
//! and outbox contract; `rate_limiter.rs` and `presence.rs` run the shared-state contracts
//! on the in-process and the Redis engines; `cache.rs` the `RemoteCache` contract on the Redis L2.
//! With `TSUNAGI_TEST_REDIS_CLUSTER` every Redis engine runs on a Redis Cluster.

#[macro_use]
mod helpers;
mod cache;
mod presence;
mod rate_limiter;
#[macro_use]
mod store;
mod archive;
mod jobs;
mod sensors;
mod state;
