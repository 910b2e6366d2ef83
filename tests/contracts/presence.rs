//! The [`Presence`] contract (`src/shared_state/mod.rs`), on `LocalPresence` and on
//! `RedisPresence`.
//!
//! A factory hands out two instances on one shared presence: two `RedisPresence` on two
//! connections under one prefix (two tsunagi instances), or the same `LocalPresence` twice. The
//! suites join and leave through both and read through both, so a Redis instance that answered
//! from its own process (what it does when Redis fails) would disagree and fail here.
//!
//! Neither engine has a timer these suites could drive with paused Tokio time: the local one
//! has none, and the Redis one's expiry runs on Redis's clock (its heartbeat is a Tokio interval,
//! but paused time and real network I/O do not mix: the auto-advance fires every timeout).

use std::sync::Arc;

use futures::future::BoxFuture;
use tsunagi::shared_state::Presence;
use tsunagi::shared_state::local::LocalPresence;
use tsunagi::shared_state::redis_presence::RedisPresence;

use crate::helpers;

/// Two instances on one shared presence.
pub trait PresenceFactory: Sync {
    fn instances(&self) -> BoxFuture<'_, [Arc<dyn Presence>; 2]>;
}

pub struct Local;

impl PresenceFactory for Local {
    fn instances(&self) -> BoxFuture<'_, [Arc<dyn Presence>; 2]> {
        let one: Arc<dyn Presence> = Arc::new(LocalPresence::default());
        Box::pin(async move { [one.clone(), one] })
    }
}

pub struct Redis;

impl PresenceFactory for Redis {
    fn instances(&self) -> BoxFuture<'_, [Arc<dyn Presence>; 2]> {
        Box::pin(async move {
            let prefix = helpers::unique("tsunagi-contract-presence");
            let a: Arc<dyn Presence> = RedisPresence::start(helpers::redis_conn(&prefix).await);
            let b: Arc<dyn Presence> = RedisPresence::start(helpers::redis_conn(&prefix).await);
            [a, b]
        })
    }
}

on_engines!([local: Local, redis: Redis] [
    online_from_the_first_connection_to_the_last,
    online_is_sorted_and_per_room,
    leaving_what_was_not_joined_changes_nothing,
]);

/// What both instances answer for `room` (they must agree).
async fn online(instances: &[Arc<dyn Presence>; 2], room: &str) -> Vec<String> {
    let [a, b] = instances;
    let (here, there) = (a.online(room).await, b.online(room).await);
    assert_eq!(here, there, "both instances see the same users in {room}");
    here
}

async fn online_from_the_first_connection_to_the_last(engine: &impl PresenceFactory) {
    let both = engine.instances().await;
    let [a, b] = &both;
    assert!(a.join("r", "alice", "c1").await, "alice's first connection");
    assert!(
        !a.join("r", "alice", "c2").await,
        "a second one, same instance"
    );
    assert!(
        !b.join("r", "alice", "c3").await,
        "a third one, another instance"
    );
    assert!(b.join("r", "bob", "c4").await, "bob's first connection");
    assert_eq!(online(&both, "r").await, ["alice", "bob"]);
    assert!(!a.leave("r", "alice", "c1").await, "alice still has two");
    assert!(!b.leave("r", "alice", "c3").await, "and one");
    assert_eq!(online(&both, "r").await, ["alice", "bob"]);
    assert!(a.leave("r", "alice", "c2").await, "alice's last connection");
    assert!(
        !a.leave("r", "alice", "c2").await,
        "leaving twice is not a second offline"
    );
    assert_eq!(online(&both, "r").await, ["bob"]);
    assert!(
        a.join("r", "alice", "c5").await,
        "back online: first connection again"
    );
    assert!(b.leave("r", "bob", "c4").await);
    assert_eq!(online(&both, "r").await, ["alice"]);
}

async fn online_is_sorted_and_per_room(engine: &impl PresenceFactory) {
    let both = engine.instances().await;
    let [a, b] = &both;
    assert!(a.join("r1", "carol", "c1").await);
    assert!(b.join("r1", "alice", "c2").await);
    assert!(a.join("r1", "bob", "c3").await);
    // The same connection in another room is a presence of its own.
    assert!(b.join("r2", "dave", "c4").await);
    assert!(
        a.join("r2", "carol", "c1").await,
        "first connection of carol in r2"
    );
    assert_eq!(online(&both, "r1").await, ["alice", "bob", "carol"]);
    assert_eq!(online(&both, "r2").await, ["carol", "dave"]);
    assert!(online(&both, "r3").await.is_empty());
    assert!(a.leave("r2", "carol", "c1").await);
    assert_eq!(online(&both, "r2").await, ["dave"]);
    assert_eq!(online(&both, "r1").await, ["alice", "bob", "carol"]);
}

async fn leaving_what_was_not_joined_changes_nothing(engine: &impl PresenceFactory) {
    let both = engine.instances().await;
    let [a, b] = &both;
    assert!(!a.leave("r", "ghost", "c0").await, "nobody was online");
    assert!(a.join("r", "alice", "c1").await);
    assert!(
        !b.leave("r", "alice", "not-hers").await,
        "not one of her connections"
    );
    assert!(
        !a.leave("elsewhere", "alice", "c1").await,
        "not in that room"
    );
    assert_eq!(online(&both, "r").await, ["alice"]);
    assert!(a.leave("r", "alice", "c1").await, "her one connection");
    assert!(online(&both, "r").await.is_empty());
}
