//! The integration tests, in one crate (one link of the world, not six): each module starts real
//! tsunagi servers on port 0 with fresh databases (`common`) and talks to them as clients do.
//! With `TSUNAGI_TEST_PG` set, the same tests run on PostgreSQL; `postgres` holds the scale-out
//! tests against a real streaming replica (ignored unless asked for: scripts/test runs them last,
//! one at a time, because they stop and start the primary).

mod binary;
mod common;

mod across_instances;
mod archive;
mod check_config;
mod commit_bounds;
mod hostile;
mod http_api;
mod openapi;
mod postgres;
mod realtime;
mod sensors;
mod storage;
mod tls;
mod users;
