//! The sensor events of PROTOCOL.md §6.1: `reading`, `subscribe`, `unsubscribe`. Run in the
//! session's worker like every event; a durable reading is answered from a task of its own once
//! committed, so the socket's next events are not held behind the flush.

use std::sync::Arc;

use serde_json::{Value, json};

use super::Gateway;
use super::events::reply;
use super::session::Session;
use crate::domain::{Reading, SensorId};
use crate::error::{ApiError, ApiResult};

pub async fn reading(
    gw: &Arc<Gateway>,
    session: &Arc<Session>,
    sensor: SensorId,
    reading: Reading,
    durable: bool,
    ack: Option<i64>,
) {
    let sensors = &gw.app.sensors;
    let accepted = sensors
        .accept(&session.who(), &sensor, vec![reading], durable)
        .await;
    match accepted {
        Err(e) => reply(session, ack, Err(e.into())),
        Ok(a) => match a.durable {
            None => reply(session, ack, Ok(json!({ "durable": false }))),
            Some(generation) => {
                let (session, sensors) = (session.clone(), sensors.clone());
                gw.replies.spawn(async move {
                    let result = sensors
                        .wait_durable(generation)
                        .await
                        .map(|()| json!({ "durable": true }))
                        .map_err(ApiError::from);
                    reply(&session, ack, result);
                });
            }
        },
    }
}

/// Subscribes first, then reads the newest readings: a reading accepted meanwhile may arrive
/// twice (in `last` and live), never not at all.
pub async fn subscribe(
    gw: &Arc<Gateway>,
    session: &Arc<Session>,
    sensor: SensorId,
) -> ApiResult<Option<Value>> {
    gw.app.sensors.check_read(&session.who(), &sensor).await?;
    if session.subscribe(sensor.as_str()) {
        gw.hub.live.subscribe(sensor.as_str(), session.clone());
    }
    let last = match gw.app.sensors.last(&session.who(), &sensor).await {
        Ok(last) => last,
        Err(e) => {
            unsubscribe_locally(gw, session, &sensor);
            return Err(e.into());
        }
    };
    // The connection may have closed meanwhile; its teardown could not see this sensor.
    if session.is_closed() {
        unsubscribe_locally(gw, session, &sensor);
    }
    Ok(Some(json!({ "last": last })))
}

pub async fn unsubscribe(
    gw: &Arc<Gateway>,
    session: &Arc<Session>,
    sensor: SensorId,
) -> ApiResult<Option<Value>> {
    if !unsubscribe_locally(gw, session, &sensor) {
        // like `leave`: of a sensor never subscribed, ok; of one that does not exist, not_found
        gw.app
            .sensors
            .check_exists(&sensor)
            .await
            .map_err(ApiError::from)?;
    }
    Ok(Some(json!({})))
}

fn unsubscribe_locally(gw: &Gateway, session: &Session, sensor: &SensorId) -> bool {
    gw.hub.live.unsubscribe(sensor.as_str(), &session.sid);
    session.unsubscribe(sensor.as_str())
}
