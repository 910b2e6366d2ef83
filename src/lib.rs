//! tsunagi: a realtime and data backend in one binary — Socket.IO rooms with durable, ordered,
//! recoverable history, accounts, caches and metrics, over SQLite by default and PostgreSQL +
//! Redis when one machine is not enough.
//!
//! Layout, bottom up (a module imports only those above it in this list; docs/architecture.md
//! has the picture):
//! - `config` (settings), `client_addr` (who the client is behind trusted proxies), `domain` (the contract's shapes and ids), `error` (the contract's
//!   failure kinds), `payload` (field rules of §5), `health` (health checks), `telemetry`,
//!   `io_stats` (bytes each connection wrote);
//! - engines, each a trait with an embedded and a scale-out implementation: `store` (SQL:
//!   SQLite | PostgreSQL), `bus` (fan-out: in process | Redis, and the ordered feed on top),
//!   `shared_state` (rate limits, presence), `cache` (L1 moka + L2 Redis); `backplane` and
//!   `redis_conn` say where shared state lives; `hot_window` (the newest messages of recently
//!   read rooms in memory, for join and sync) and `state_cache` (their room state, for join and
//!   state_get, on one instance), both kept by `room_lru` (recency within a byte budget);
//! - `auth`, `password`; `services` (rooms, messages and the group committer, presence,
//!   accounts, admin): the rules, for both edges;
//! - `app` (builds every part from config, with its health check);
//! - the edges: `gateway` (Socket.IO) and `http` (§4), the only places that speak ack codes and
//!   HTTP statuses; `http_server` (the HTTP/1.1 loop: header timeout, size limit, connection cap);
//!   `tls` (HTTPS/WSS on the listener, reloaded on SIGHUP); `server` (serves the edges and
//!   drains);
//! - `client` (a small Socket.IO client for tests and the bench).

pub mod app;
pub mod at_rest;
pub mod auth;
pub mod backplane;
pub mod bus;
pub mod cache;
pub mod client;
pub mod client_addr;
pub mod config;
pub mod domain;
pub mod error;
pub mod gateway;
pub mod health;
pub mod hot_window;
pub mod http;
pub mod http_server;
pub mod io_stats;
pub mod password;
pub mod payload;
pub mod redis_conn;
pub mod room_lru;
pub mod server;
pub mod services;
pub mod session_routing;
pub mod shared_state;
pub mod state_cache;
pub mod store;
pub mod telemetry;
pub mod tls;
