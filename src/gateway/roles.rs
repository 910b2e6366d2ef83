//! Role changes on open sockets: every event already runs with the role the user has now
//! (`events::handle` reads it through the users cache), but rooms joined as an admin would keep
//! delivering to a socket whose admin rights were taken away. So sockets acting as admins are
//! re-checked every [`SWEEP`] (and at each of their events); one that lost the role is
//! disconnected (`Session::set_who`; the transport is closed, as for a slow consumer): the
//! official client reconnects by itself and its joins are checked again.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Gateway;

/// How often admin sockets are re-checked: the bound on a demoted admin's joined rooms.
pub const SWEEP: Duration = Duration::from_secs(2);

/// Runs until the app shuts down or the gateway is gone. Only admin sockets are looked at (a
/// users-cache hit each), so the sweep costs next to nothing however many sockets are open.
pub fn watch_demotions(gw: Weak<Gateway>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(gw) = gw.upgrade() else { return };
            if gw.app.shutdown.is_cancelled() {
                return;
            }
            sweep(&gw).await;
        }
    });
}

async fn sweep(gw: &Arc<Gateway>) {
    for session in gw.hub.all_sessions() {
        if !session.who().admin {
            continue;
        }
        // a lookup that fails leaves the socket as it is: the next sweep tries again
        let Ok(now) = gw.app.users.effective(&session.identity).await else {
            continue;
        };
        if !now.admin {
            session.set_who(now); // disconnects it
        }
    }
}
