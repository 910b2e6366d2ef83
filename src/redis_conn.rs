//! The Redis connection shared by the L2 cache, the bus, presence and rate limits: one
//! multiplexed, self-reconnecting connection for commands (on a Redis Cluster, the cluster client:
//! a connection per primary, MOVED and ASK followed by the crate), every call bounded by a
//! timeout so a Redis outage costs a request milliseconds, never a hang.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, RedisFuture, Value};

/// Why a Redis call did not answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// A call failed a moment ago: not tried again until the breaker closes.
    #[error("Redis is unavailable (recent failure)")]
    Breaker,
    #[error("Redis did not answer in time")]
    Timeout,
    /// The subscription connection closed or stopped answering its pings.
    #[error("Redis subscription lost")]
    Lost,
    #[error("Redis: {0}")]
    Command(#[from] redis::RedisError),
    /// A primary of the Redis Cluster answered but does not report `cluster_state:ok` (some
    /// hash slots have no reachable owner).
    #[error("Redis Cluster: {node} reports the cluster not ok")]
    ClusterNotOk { node: String },
}

/// The command connection handed to `run` and `call`: the same type on one Redis and on a
/// cluster, so every caller works on both. Cheap to clone (both share their connections).
#[derive(Clone)]
pub enum RedisLink {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for RedisLink {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisLink::Single(c) => c.req_packed_command(cmd),
            RedisLink::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisLink::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisLink::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisLink::Single(c) => c.get_db(),
            RedisLink::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisLink {
    /// The primaries a command must visit to see every key: one Redis, or each primary of the
    /// cluster (as the cluster client's slot map knows them).
    async fn primaries(&mut self) -> redis::RedisResult<Vec<Node>> {
        let RedisLink::Cluster(c) = self else {
            return Ok(vec![Node::Only]);
        };
        let answers = c
            .route_command(
                redis::cmd("PING"),
                RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
            )
            .await?;
        Ok(node_answers(answers)
            .into_iter()
            .filter_map(|(address, _)| {
                let (host, port) = address.rsplit_once(':')?;
                Some(Node::At {
                    host: host.to_owned(),
                    port: port.parse().ok()?,
                })
            })
            .collect())
    }

    /// Runs `cmd` on `node` (commands that are about one node's keys, not one key: SCAN).
    async fn on_node(&mut self, cmd: Cmd, node: &Node) -> redis::RedisResult<Value> {
        match (self, node) {
            (RedisLink::Cluster(c), Node::At { host, port }) => {
                let at = SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                };
                c.route_command(cmd, RoutingInfo::SingleNode(at)).await
            }
            (link, _) => cmd.query_async(link).await,
        }
    }

    /// Ready means: one Redis answers PING; on a cluster, every primary answers and reports
    /// `cluster_state:ok` (every hash slot has a reachable owner).
    async fn ready(&mut self) -> Result<(), RedisError> {
        let RedisLink::Cluster(c) = self else {
            redis::cmd("PING").query_async::<String>(self).await?;
            return Ok(());
        };
        let mut info = redis::cmd("CLUSTER");
        info.arg("INFO");
        let answers = c
            .route_command(
                info,
                RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
            )
            .await?;
        let answers = node_answers(answers);
        if answers.is_empty() {
            return Err(RedisError::ClusterNotOk {
                node: "every node".to_owned(),
            });
        }
        for (node, answer) in answers {
            let text: String = redis::from_redis_value(answer).map_err(redis::RedisError::from)?;
            if !text.lines().any(|l| l.trim() == "cluster_state:ok") {
                return Err(RedisError::ClusterNotOk { node });
            }
        }
        Ok(())
    }
}

/// A node commands can be sent to: the only one, or a cluster primary by address.
#[derive(Debug, Clone)]
enum Node {
    Only,
    At { host: String, port: u16 },
}

/// The per-node answers of a command sent to several cluster nodes: (`host:port`, answer).
fn node_answers(answers: Value) -> Vec<(String, Value)> {
    let Value::Map(pairs) = answers else {
        return Vec::new();
    };
    pairs
        .into_iter()
        .filter_map(|(node, answer)| Some((redis::from_redis_value::<String>(node).ok()?, answer)))
        .collect()
}

/// A SCAN over every primary (`RedisConn::scan_page`): which primary, and where on it.
pub struct KeyScan {
    pattern: String,
    nodes: Option<Vec<Node>>,
    at: usize,
    cursor: u64,
}

impl KeyScan {
    /// The keys matching `pattern` (a SCAN MATCH pattern).
    pub fn new(pattern: String) -> Self {
        KeyScan {
            pattern,
            nodes: None,
            at: 0,
            cursor: 0,
        }
    }
}

/// How many keys one SCAN step looks at.
const SCAN_COUNT: u32 = 1000;

pub struct RedisConn {
    client: redis::Client,
    /// The URLs `TSUNAGI_REDIS_URL` lists: one Redis, or several seed nodes of a Redis Cluster.
    nodes: Vec<String>,
    /// The app's metrics, for everything built on this connection.
    telemetry: crate::telemetry::Telemetry,
    link: RedisLink,
    prefix: String,
    timeout: Duration,
    /// A circuit breaker: after a failed call, calls fail at once until this instant (ms since
    /// `epoch`), so an outage costs each request nothing instead of a timeout per Redis call.
    open_until_ms: AtomicU64,
    epoch: Instant,
}

/// How long the breaker stays open after a failure; `/readyz` and the bus's own connection
/// notice the recovery meanwhile.
const BREAKER_OPEN: Duration = Duration::from_millis(1000);

impl RedisConn {
    /// Connects lazily: tsunagi starts (and serves from the store) while Redis is down. Several
    /// comma-separated URLs are the seed nodes of a Redis Cluster.
    pub fn open(url: &str, prefix: &str, timeout: Duration) -> anyhow::Result<Self> {
        let nodes: Vec<String> = url
            .split(',')
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        let client = redis::Client::open(nodes.first().map(String::as_str).unwrap_or(url))?;
        let link = if nodes.len() > 1 {
            let config = ClusterConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout);
            // few retries: each call is bounded by `timeout` anyway, and MOVED/ASK need only one
            let cluster = ClusterClient::builder(nodes.clone()).retries(3).build()?;
            RedisLink::Cluster(cluster.get_pending_async_connection_with_config(config))
        } else {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(2));
            RedisLink::Single(ConnectionManager::new_lazy_with_config(
                client.clone(),
                config,
            )?)
        };
        Ok(RedisConn {
            client,
            nodes,
            telemetry: crate::telemetry::Telemetry::detached(),
            link,
            prefix: prefix.to_owned(),
            timeout,
            open_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Records what is built on this connection into `telemetry` (an app's).
    pub fn with_telemetry(mut self, telemetry: crate::telemetry::Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    pub fn telemetry(&self) -> &crate::telemetry::Telemetry {
        &self.telemetry
    }

    /// The configured node URLs (several: the seed nodes of a Redis Cluster).
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Several URLs were given: Redis Cluster mode (PROTOCOL §7).
    pub fn is_cluster(&self) -> bool {
        self.nodes.len() > 1
    }

    /// A client of the first node (on a cluster, only a seed: build per-node clients from
    /// `nodes()`).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `<prefix>:<rest>`: several deployments (or test runs) can share one Redis. Keys one
    /// command or script uses together must share a hash tag in `rest` (`{room}`) so they land in
    /// one cluster slot; the prefix holds no braces (config), so the tag in `rest` is the one Redis
    /// sees.
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Runs `f` on the shared connection, giving up after the configured timeout; fails at once
    /// while the breaker is open.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(RedisLink) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.now_ms() < self.open_until_ms.load(Ordering::Relaxed) {
            return Err(RedisError::Breaker);
        }
        self.call(f).await
    }

    /// Like `run`, past the breaker: for what must be tried every time (the bus's publishes of
    /// invalidations, whose loss would leave other instances stale).
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(RedisLink) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let result = match tokio::time::timeout(self.timeout, f(self.link.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RedisError::Command(e)),
            Err(_) => Err(RedisError::Timeout),
        };
        self.note(result.is_ok());
        result
    }

    /// Opens the breaker after a failure, closes it after a success.
    fn note(&self, ok: bool) {
        let until = if ok {
            0
        } else {
            self.now_ms() + BREAKER_OPEN.as_millis() as u64
        };
        self.open_until_ms.store(until, Ordering::Relaxed);
    }

    /// Redis answered on another connection (the bus subscribed again): close the breaker.
    pub fn reachable(&self) {
        self.open_until_ms.store(0, Ordering::Relaxed);
    }

    /// For `/readyz`: always asks Redis (past the breaker), and closes the breaker on success.
    /// On a cluster: every primary answers and reports `cluster_state:ok`.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let checked = tokio::time::timeout(self.timeout, async {
            let mut link = self.link.clone();
            link.ready().await
        })
        .await
        .unwrap_or(Err(RedisError::Timeout));
        self.note(checked.is_ok());
        checked
    }

    /// The next page of a SCAN over every primary: `None` once every primary is done. Each
    /// step is one bounded call (breaker included); keys may repeat, as SCAN's may.
    pub async fn scan_page(&self, scan: &mut KeyScan) -> Result<Option<Vec<String>>, RedisError> {
        let nodes = match &scan.nodes {
            Some(nodes) => nodes.clone(),
            None => {
                let nodes = self.run(|mut c| async move { c.primaries().await }).await?;
                scan.nodes = Some(nodes.clone());
                nodes
            }
        };
        let Some(node) = nodes.get(scan.at).cloned() else {
            return Ok(None);
        };
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(scan.cursor)
            .arg("MATCH")
            .arg(&scan.pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let (next, keys): (u64, Vec<String>) = self
            .run(|mut c| async move {
                let answer = c.on_node(cmd, &node).await?;
                redis::from_redis_value(answer).map_err(redis::RedisError::from)
            })
            .await?;
        if next == 0 {
            scan.at += 1;
        }
        scan.cursor = next;
        Ok(Some(keys))
    }
}
