//! The operations dashboard's figures (`GET /api/v1/admin/dashboard`, the page at `/admin`):
//! one sample every 2 s, the last five minutes kept in a ring buffer, so the page shows history
//! as soon as it opens.
//!
//! Each sample is computed from the app's own Prometheus text (`Telemetry::render`) — counter
//! deltas, histogram bucket deltas turned into quantiles the way Prometheus' `histogram_quantile`
//! does — so the dashboard shows exactly what operators scrape at `/metrics`. The bus state comes
//! from the admin figures (`AdminService::backplane`), because the in-process bus sets no gauge.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::error::{ServiceError, ServiceResult};
use crate::auth::Identity;

/// How often a sample is taken.
pub const EVERY: Duration = Duration::from_secs(2);
/// How many samples are kept: five minutes.
pub const KEEP: usize = 150;

/// A line of Prometheus text that could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {why}")]
pub struct ParseError {
    pub line: usize,
    pub why: &'static str,
}

/// One series of the text format: name, labels (sorted), value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text exposition format (comments skipped). A small parser rather than
/// a crate: it reads only what our own exporter writes (no timestamps needed, no exemplars), and
/// the crates.io parsers (`prometheus-parse`) bring regex and chrono for these forty lines.
pub fn parse(text: &str) -> Result<Vec<Series>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |why| ParseError { line: i + 1, why };
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or(err("no value"))?;
        let name = line[..name_end].to_owned();
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let end = loop {
                while chars.next_if(|(_, c)| *c == ',' || *c == ' ').is_some() {}
                match chars.peek() {
                    Some((j, '}')) => break *j,
                    None => return Err(err("unclosed labels")),
                    _ => {}
                }
                let mut key = String::new();
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key.push(c);
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(err("label value not quoted"));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => return Err(err("unclosed label value")),
                        },
                        Some((_, c)) => value.push(c),
                        None => return Err(err("unclosed label value")),
                    }
                }
                labels.insert(key.trim().to_owned(), value);
            };
            rest = &body[end + 1..];
        }
        let value = rest.split_whitespace().next().ok_or(err("no value"))?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| err("value is not a number"))?,
        };
        out.push(Series {
            name,
            labels,
            value,
        });
    }
    Ok(out)
}

/// The series of one scrape, looked up by name and labels.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    series: Vec<Series>,
}

impl Scrape {
    pub fn new(series: Vec<Series>) -> Self {
        Scrape { series }
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        want: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Series> + 'a {
        self.series.iter().filter(move |s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The sum of the series named `name` with these labels (0 when there is none).
    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.matching(name, want).map(|s| s.value).sum()
    }

    /// The distinct values of label `label` among the series named `name`.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .matching(name, &[])
            .filter_map(|s| s.labels.get(label).cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The cumulative buckets `(le, count)` of histogram `name`, sorted by `le`.
    pub fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut b: Vec<(f64, f64)> = self
            .matching(&bucket, &[])
            .filter_map(|s| {
                let le = s.labels.get("le")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, s.value))
            })
            .collect();
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        b
    }
}

/// How much a counter grew; a counter that went down was reset, and counts from zero.
pub fn counter_delta(now: f64, before: f64) -> f64 {
    if now >= before { now - before } else { now }
}

/// The growth of each cumulative bucket between two scrapes of a histogram (same bounds).
pub fn bucket_deltas(now: &[(f64, f64)], before: &[(f64, f64)]) -> Vec<(f64, f64)> {
    now.iter()
        .map(|&(le, n)| {
            let b = before
                .iter()
                .find(|(l, _)| *l == le)
                .map_or(0.0, |(_, c)| *c);
            (le, counter_delta(n, b))
        })
        .collect()
}

/// The `q` quantile of cumulative buckets, as Prometheus' `histogram_quantile`: the bucket where
/// the rank falls, interpolated linearly inside it (from 0 for the first bucket); a rank in the
/// `+Inf` bucket answers the highest finite bound. `None` with no observations.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 || !q.is_finite() {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            if count == below {
                return Some(le);
            }
            return Some(lower + (le - lower) * (rank - below) / (count - below));
        }
        lower = le;
        below = count;
    }
    Some(lower)
}

/// A pool's connections at the moment of a sample.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PoolFigures {
    pub in_use: f64,
    pub idle: f64,
    pub waiting: f64,
}

/// One point of every chart.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sample {
    /// Unix milliseconds.
    pub t: u64,
    pub sockets: f64,
    /// Sends committed per second.
    pub messages_in_per_s: f64,
    /// Message events delivered to sockets per second.
    pub messages_out_per_s: f64,
    /// Send → commit over the interval, in milliseconds (`null` when nothing was committed).
    pub commit_p50_ms: Option<f64>,
    pub commit_p99_ms: Option<f64>,
    pub pools: BTreeMap<String, PoolFigures>,
    /// Hits / lookups over the interval, keyed `cache/layer` (`null` with no lookups).
    pub cache_hit_ratio: BTreeMap<String, Option<f64>>,
    pub bus_connected: bool,
    pub slow_consumer_disconnects_per_s: f64,
    pub slow_consumer_disconnects_total: f64,
    /// Requests and events refused `rate_limited`, per second.
    pub rate_limited_per_s: f64,
}

const COMMIT: &str = "tsunagi_send_commit_seconds";

/// One sample from two scrapes `elapsed` apart (`before` is `None` for the very first one, whose
/// rates are zero).
pub fn sample(
    t: u64,
    now: &Scrape,
    before: Option<&Scrape>,
    elapsed: Duration,
    bus_connected: bool,
) -> Sample {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = |name: &str, want: &[(&str, &str)]| match before {
        Some(b) => counter_delta(now.sum(name, want), b.sum(name, want)) / secs,
        None => 0.0,
    };
    let commits = bucket_deltas(
        &now.buckets(COMMIT),
        &before.map(|b| b.buckets(COMMIT)).unwrap_or_default(),
    );
    let (p50, p99) = if before.is_some() {
        let ms = |q| quantile(q, &commits).map(|s| (s * 1000.0 * 100.0).round() / 100.0);
        (ms(0.5), ms(0.99))
    } else {
        (None, None)
    };
    let pools = now
        .label_values("tsunagi_db_pool_connections", "pool")
        .into_iter()
        .map(|p| {
            let figures = PoolFigures {
                in_use: now.sum(
                    "tsunagi_db_pool_connections",
                    &[("pool", &p), ("state", "in_use")],
                ),
                idle: now.sum(
                    "tsunagi_db_pool_connections",
                    &[("pool", &p), ("state", "idle")],
                ),
                waiting: now.sum("tsunagi_db_pool_waiting", &[("pool", &p)]),
            };
            (p, figures)
        })
        .collect();
    let mut cache_hit_ratio = BTreeMap::new();
    for cache in now.label_values("tsunagi_cache_requests_total", "cache") {
        for layer in ["l1", "l2"] {
            let count = |result| {
                let want = [
                    ("cache", cache.as_str()),
                    ("layer", layer),
                    ("result", result),
                ];
                let n = now.sum("tsunagi_cache_requests_total", &want);
                counter_delta(
                    n,
                    before.map_or(0.0, |b| b.sum("tsunagi_cache_requests_total", &want)),
                )
            };
            let (hits, misses) = (count("hit"), count("miss"));
            let ratio = (hits + misses > 0.0).then(|| hits / (hits + misses));
            cache_hit_ratio.insert(format!("{cache}/{layer}"), ratio);
        }
    }
    Sample {
        t,
        sockets: now.sum("tsunagi_sockets_connected", &[]),
        // a committed send is one observation of the send → commit histogram
        messages_in_per_s: rate("tsunagi_send_commit_seconds_count", &[]),
        messages_out_per_s: rate("tsunagi_events_out_total", &[("event", "message")]),
        commit_p50_ms: p50,
        commit_p99_ms: p99,
        pools,
        cache_hit_ratio,
        bus_connected,
        slow_consumer_disconnects_per_s: rate("tsunagi_slow_consumer_disconnects_total", &[]),
        slow_consumer_disconnects_total: now.sum("tsunagi_slow_consumer_disconnects_total", &[]),
        rate_limited_per_s: rate("tsunagi_rate_limited_total", &[]),
    }
}

/// What one tick reads: the Prometheus text and the admin figures (`None` once the app is gone).
pub type Source = Box<dyn Fn() -> Option<(String, Value)> + Send + Sync>;

/// The ring buffer of samples, and what the page needs besides.
pub struct Dashboard {
    samples: Mutex<VecDeque<Sample>>,
    keep: usize,
    /// The bus kind and whether Redis is configured (fixed for the process).
    backplane: Mutex<Value>,
}

impl Default for Dashboard {
    fn default() -> Self {
        Dashboard::new(KEEP)
    }
}

impl Dashboard {
    pub fn new(keep: usize) -> Self {
        Dashboard {
            samples: Mutex::new(VecDeque::with_capacity(keep)),
            keep: keep.max(1),
            backplane: Mutex::new(Value::Null),
        }
    }

    fn push(&self, s: Sample) {
        let mut q = self.samples.lock();
        while q.len() >= self.keep {
            q.pop_front();
        }
        q.push_back(s);
    }

    /// The samples kept, oldest first (admins only).
    pub fn view(&self, who: &Identity) -> ServiceResult<Value> {
        if !who.admin {
            return Err(ServiceError::forbidden("admins only"));
        }
        let samples: Vec<Sample> = self.samples.lock().iter().cloned().collect();
        Ok(serde_json::json!({
            "interval_ms": EVERY.as_millis() as u64,
            "window_s": (EVERY * self.keep as u32).as_secs(),
            "backplane": self.backplane.lock().clone(),
            "samples": samples,
        }))
    }

    /// Samples every [`EVERY`] until `stop`; the first at once, so the page has a baseline.
    pub fn start(self: Arc<Self>, source: Source, stop: CancellationToken) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut before: Option<(Scrape, tokio::time::Instant)> = None;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some((text, figures)) = source() else {
                    return;
                };
                let scrape = match parse(&text) {
                    Ok(series) => Scrape::new(series),
                    Err(e) => {
                        tracing::warn!(error = %e, "dashboard: the metrics text could not be read");
                        continue;
                    }
                };
                let bus = &figures["bus"];
                // the in-process bus always delivers; the Redis one says whether it is connected
                let connected = bus["connected"].as_bool().unwrap_or(bus["kind"] == "local");
                *self.backplane.lock() = serde_json::json!({
                    "bus": bus["kind"].clone(),
                    "redis_configured": figures["redis"]["configured"].clone(),
                });
                let now = tokio::time::Instant::now();
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let s = match &before {
                    Some((b, at)) => sample(t, &scrape, Some(b), now - *at, connected),
                    None => sample(t, &scrape, None, EVERY, connected),
                };
                self.push(s);
                before = Some((scrape, now));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The text format of `series → value`.
    fn by_labels(m: &HashMap<&str, f64>) -> String {
        m.iter().map(|(k, v)| format!("{k} {v}\n")).collect()
    }

    const TEXT: &str = r#"# HELP tsunagi_send_commit_seconds time
# TYPE tsunagi_send_commit_seconds histogram
tsunagi_send_commit_seconds_bucket{le="0.001"} 10
tsunagi_send_commit_seconds_bucket{le="0.002"} 30
tsunagi_send_commit_seconds_bucket{le="0.005"} 40
tsunagi_send_commit_seconds_bucket{le="+Inf"} 40
tsunagi_send_commit_seconds_sum 0.05
tsunagi_send_commit_seconds_count 40
tsunagi_events_out_total{event="message"} 100
tsunagi_events_out_total{event="typing"} 7
tsunagi_db_pool_connections{pool="writer",state="idle"} 1
tsunagi_db_pool_connections{pool="writer",state="in_use"} 0
tsunagi_db_pool_waiting{pool="writer"} 2
tsunagi_cache_requests_total{cache="users",layer="l1",result="hit"} 9
tsunagi_cache_requests_total{cache="users",layer="l1",result="miss"} 1
tsunagi_sockets_connected 3
odd{a="x\"y\\z",b="1"} 2.5
"#;

    #[test]
    fn parses_names_labels_escapes_and_values() {
        let s = parse(TEXT).unwrap();
        let odd = s.iter().find(|s| s.name == "odd").unwrap();
        assert_eq!(odd.labels["a"], "x\"y\\z");
        assert_eq!(odd.labels["b"], "1");
        assert_eq!(odd.value, 2.5);
        let inf = s
            .iter()
            .find(|s| s.labels.get("le").map(String::as_str) == Some("+Inf"))
            .unwrap();
        assert_eq!(inf.value, 40.0);
        assert!(parse("x{a=\"1\" 2").is_err());
        assert!(parse("x{a=1} 2").is_err());
        assert!(parse("x nope").is_err());
    }

    #[test]
    fn quantile_interpolates_like_histogram_quantile() {
        let b = [
            (0.001, 10.0),
            (0.002, 30.0),
            (0.005, 40.0),
            (f64::INFINITY, 40.0),
        ];
        // rank 20 falls in (0.001, 0.002], 10 of its 20: halfway
        assert!((quantile(0.5, &b).unwrap() - 0.0015).abs() < 1e-12);
        // rank 39.6 falls in (0.002, 0.005], 9.6 of its 10
        assert!((quantile(0.99, &b).unwrap() - 0.00488).abs() < 1e-12);
        // the first bucket interpolates from 0
        assert!((quantile(0.1, &b).unwrap() - 0.0004).abs() < 1e-12);
        // a rank in +Inf answers the highest finite bound
        let over = [(0.001, 1.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(0.99, &over), Some(0.001));
        assert_eq!(quantile(0.5, &[(0.001, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.5, &[]), None);
    }

    #[test]
    fn deltas_count_from_zero_after_a_reset() {
        assert_eq!(counter_delta(15.0, 10.0), 5.0);
        assert_eq!(counter_delta(3.0, 10.0), 3.0);
        let d = bucket_deltas(&[(0.001, 12.0), (f64::INFINITY, 50.0)], &[(0.001, 10.0)]);
        assert_eq!(d, vec![(0.001, 2.0), (f64::INFINITY, 50.0)]);
    }

    #[test]
    fn a_sample_is_rates_over_the_interval() {
        let before = Scrape::new(parse(TEXT).unwrap());
        let mut later: HashMap<&str, f64> = HashMap::new();
        later.insert("tsunagi_send_commit_seconds_bucket{le=\"0.001\"}", 10.0);
        later.insert("tsunagi_send_commit_seconds_bucket{le=\"0.002\"}", 30.0);
        later.insert("tsunagi_send_commit_seconds_bucket{le=\"0.005\"}", 50.0);
        later.insert("tsunagi_send_commit_seconds_bucket{le=\"+Inf\"}", 60.0);
        later.insert("tsunagi_send_commit_seconds_count", 60.0);
        later.insert("tsunagi_events_out_total{event=\"message\"}", 140.0);
        later.insert(
            "tsunagi_cache_requests_total{cache=\"users\",layer=\"l1\",result=\"hit\"}",
            12.0,
        );
        later.insert(
            "tsunagi_cache_requests_total{cache=\"users\",layer=\"l1\",result=\"miss\"}",
            2.0,
        );
        later.insert(
            "tsunagi_db_pool_connections{pool=\"writer\",state=\"in_use\"}",
            1.0,
        );
        later.insert("tsunagi_db_pool_waiting{pool=\"writer\"}", 0.0);
        later.insert("tsunagi_slow_consumer_disconnects_total", 4.0);
        let now = Scrape::new(parse(&by_labels(&later)).unwrap());
        let s = sample(1, &now, Some(&before), Duration::from_secs(2), true);
        assert_eq!(s.messages_in_per_s, 10.0);
        assert_eq!(s.messages_out_per_s, 20.0);
        // the 20 new commits: 10 in (0.002, 0.005], 10 above: p50 is the bucket's top
        assert_eq!(s.commit_p50_ms, Some(5.0));
        assert_eq!(s.commit_p99_ms, Some(5.0));
        assert_eq!(s.cache_hit_ratio["users/l1"], Some(0.75));
        assert_eq!(s.cache_hit_ratio["users/l2"], None);
        assert_eq!(s.pools["writer"].in_use, 1.0);
        assert_eq!(s.slow_consumer_disconnects_per_s, 2.0);
        assert!(s.bus_connected);
        let first = sample(1, &before, None, EVERY, false);
        assert_eq!(first.messages_in_per_s, 0.0);
        assert_eq!(first.commit_p50_ms, None);
        assert_eq!(first.sockets, 3.0);
        assert_eq!(first.pools["writer"].waiting, 2.0);
    }

    #[test]
    fn the_ring_keeps_the_newest() {
        let d = Dashboard::new(3);
        for t in 0..5 {
            d.push(sample(t, &Scrape::default(), None, EVERY, true));
        }
        let q = d.samples.lock();
        assert_eq!(q.iter().map(|s| s.t).collect::<Vec<_>>(), vec![2, 3, 4]);
    }
}
