//! tsunagi: a realtime and data backend in one binary — Socket.IO rooms with durable, ordered,
//! recoverable history, over SQLite by default.
//!
//! Layout:
//! - `config` (PROTOCOL.md §1), `auth` (§2), `domain` (the contract's shapes), `error` (the one
//!   error type and its mapping to ack codes and HTTP statuses), `payload` (field rules of §5);
//! - `store` (SQL: the `Store` trait, SQLite), `bus` (fan-out), `shared_state` (rate limits,
//!   presence): each a trait with its in-process implementation;
//! - `services` (rooms, messages, the group committer), `gateway` (Socket.IO), `http` (§4);
//! - `server` (wiring and shutdown), `client` (a small Socket.IO client for tests and the bench).

pub mod auth;
pub mod bus;
pub mod cache;
pub mod client;
pub mod config;
pub mod domain;
pub mod error;
pub mod gateway;
pub mod http;
pub mod password;
pub mod payload;
pub mod redis_conn;
pub mod server;
pub mod services;
pub mod shared_state;
pub mod store;
