//! The bus's own Redis connection: RESP3, with pushes (shard messages, disconnection) sent to
//! a channel; one Redis, or a Redis Cluster when several seed URLs are configured. Built from
//! `RedisConn::nodes()`, apart from the command connection (caches, limits, presence).

use std::collections::HashMap;

use futures::future::join_all;
use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, IntoConnectionInfo, ProtocolVersion, PushInfo, RedisResult};
use tokio::sync::mpsc;

#[derive(Clone)]
pub enum Link {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Link {
    /// Connects to `nodes` (several: a cluster's seeds); pushes go to `pushes`.
    pub async fn open(
        nodes: &[String],
        pushes: mpsc::UnboundedSender<PushInfo>,
    ) -> RedisResult<Self> {
        if let [single] = nodes {
            let info = single.as_str().into_connection_info()?;
            let resp3 = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            let client = redis::Client::open(info.set_redis_settings(resp3))?;
            let config = AsyncConnectionConfig::new().set_push_sender(pushes);
            let conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            Ok(Link::Single(conn))
        } else {
            let client = ClusterClientBuilder::new(nodes.to_vec())
                .use_protocol(ProtocolVersion::RESP3)
                .push_sender(pushes)
                .build()?;
            Ok(Link::Cluster(client.get_async_connection().await?))
        }
    }

    /// Resolves once Redis confirmed the subscription: messages published from then on arrive.
    pub async fn ssubscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Link::Cluster(c) => c.ssubscribe(channel).await,
            // one channel per command: its one confirmation is the command's reply
            Link::Single(c) => redis::cmd("SSUBSCRIBE")
                .arg(channel)
                .query_async::<redis::Value>(c)
                .await
                .map(drop),
        }
    }

    pub async fn sunsubscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Link::Cluster(c) => c.sunsubscribe(channel).await,
            Link::Single(c) => redis::cmd("SUNSUBSCRIBE")
                .arg(channel)
                .query_async::<redis::Value>(c)
                .await
                .map(drop),
        }
    }

    pub async fn ping(&mut self) -> RedisResult<()> {
        let ping = redis::cmd("PING");
        match self {
            Link::Cluster(c) => ping.query_async::<redis::Value>(c).await.map(drop),
            Link::Single(c) => ping.query_async::<redis::Value>(c).await.map(drop),
        }
    }

    /// SPUBLISHes every `(channel, payload)`: one pipeline per channel (a cluster pipeline must
    /// stay in one slot), all sent at once, so a batch costs one round trip and each channel
    /// keeps the batch's order. The receivers of each, in `batch` order (`None`: not sent).
    pub async fn spublish(&self, batch: &[(String, String)]) -> Vec<Option<usize>> {
        let mut by_channel: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, (channel, _)) in batch.iter().enumerate() {
            by_channel.entry(channel).or_default().push(i);
        }
        let by_channel: Vec<_> = by_channel.into_iter().collect();
        let sends = by_channel.iter().map(|(channel, idx)| {
            let mut pipe = redis::pipe();
            for &i in idx {
                pipe.cmd("SPUBLISH").arg(*channel).arg(&batch[i].1);
            }
            let mut link = self.clone();
            async move {
                let sent: RedisResult<Vec<i64>> = match &mut link {
                    Link::Cluster(c) => pipe.query_async(c).await,
                    Link::Single(c) => pipe.query_async(c).await,
                };
                sent
            }
        });
        let mut out = vec![None; batch.len()];
        for ((_, idx), sent) in by_channel.iter().zip(join_all(sends).await) {
            match sent {
                Ok(counts) => {
                    for (&i, n) in idx.iter().zip(counts) {
                        out[i] = Some(n.max(0) as usize);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "bus: SPUBLISH pipeline failed"),
            }
        }
        out
    }
}
