//! Services: the rules of rooms, messages and accounts, shared by the Socket.IO gateway and HTTP.
//!
//! Layout: `rooms.rs` (rooms, membership, access checks with a cache), `messages.rs` (send,
//! history, sync), `commit.rs` (the group committer every send goes through), `ryw.rs` (read-your-writes),
//! `users.rs` (accounts, read through the layered cache), `sensors/` (sensors, readings with
//! write-behind, series), `state.rs` (room state), `archive.rs` (the
//! archiver moving old messages to cold storage), `dashboard.rs` (the sampled figures of `/admin`).

pub mod admin;
pub mod archive;
pub mod commit;
pub mod dashboard;
pub mod error;
pub mod history_gate;
pub mod jobs;
pub mod messages;
pub mod presence;
pub mod rooms;
pub mod ryw;
pub mod sensors;
pub mod state;
pub mod users;
pub mod webhooks;
