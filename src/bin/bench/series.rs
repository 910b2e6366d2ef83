//! Figures per second of the measured window, for `--plot` and the JSON document: each receiver
//! and sender sorts its latency samples into one-second buckets ([`Buckets`]), a run merges them
//! into one [`Second`] per bucket ([`merge`]), and the rounds of a target are folded into the
//! median of each second ([`median_series`]), as the bench does with its other figures.
//!
//! Buckets hold the raw samples (the same memory as one sorted vector of the run, which the
//! overall percentiles need anyway) and percentiles come from the bench's own `percentile_ms`:
//! a histogram crate would only add a dependency for the same numbers.

use serde_json::{Value, json};

use super::{Rounds, Window, percentile_ms, round};

const SECOND_NS: u64 = 1_000_000_000;

/// Samples (µs) of the window, by the second of the window they were taken in.
#[derive(Default, Debug)]
pub struct Buckets(Vec<Vec<u32>>);

impl Buckets {
    /// Records `v` taken at `t`, which must lie in `w`.
    pub fn push(&mut self, w: Window, t: u64, v: u32) {
        let i = (t.saturating_sub(w.from) / SECOND_NS) as usize;
        if self.0.len() <= i {
            self.0.resize_with(i + 1, Vec::new);
        }
        self.0[i].push(v);
    }
}

/// One second of a run (or the median of that second over the rounds).
#[derive(Debug, Clone, Default)]
pub struct Second {
    /// Middle of the bucket, in seconds from the window's start.
    pub t_s: f64,
    pub delivered_per_s: f64,
    pub acked_sends_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Second {
    pub fn to_json(&self) -> Value {
        json!({
            "t_s": round(self.t_s),
            "delivered_per_s": round(self.delivered_per_s),
            "acked_sends_per_s": round(self.acked_sends_per_s),
            "p50_ms": round(self.p50_ms), "p90_ms": round(self.p90_ms),
            "p99_ms": round(self.p99_ms), "max_ms": round(self.max_ms),
        })
    }
}

pub fn to_json(series: &[Second]) -> Value {
    series.iter().map(Second::to_json).collect()
}

/// A run's samples merged: its seconds, and every sample of the window sorted (for the
/// run's overall percentiles).
pub struct Merged {
    pub seconds: Vec<Second>,
    pub lat_us: Vec<u32>,
    pub ack_lat_us: Vec<u32>,
}

/// Merges the receivers' delivery latencies and the senders' ack latencies of one run. A bucket's
/// count is its deliveries (acks); the last bucket of a window that is not a whole number of
/// seconds is divided by its own width.
pub fn merge(
    w: Window,
    deliveries: impl IntoIterator<Item = Buckets>,
    acks: impl IntoIterator<Item = Buckets>,
) -> Merged {
    let n = (w.to - w.from).div_ceil(SECOND_NS) as usize;
    let mut by_second: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut acked = vec![0usize; n];
    let mut ack_lat_us = Vec::new();
    for b in deliveries {
        for (i, v) in b.0.into_iter().enumerate().take(n) {
            by_second[i].extend(v);
        }
    }
    for b in acks {
        for (i, v) in b.0.into_iter().enumerate().take(n) {
            acked[i] += v.len();
            ack_lat_us.extend(v);
        }
    }
    let mut lat_us = Vec::with_capacity(by_second.iter().map(Vec::len).sum());
    let mut seconds = Vec::with_capacity(n);
    for (i, mut v) in by_second.into_iter().enumerate() {
        let from = i as u64 * SECOND_NS;
        let width = ((w.to - w.from).min(from + SECOND_NS) - from) as f64 / 1e9;
        v.sort_unstable();
        seconds.push(Second {
            t_s: from as f64 / 1e9 + width / 2.0,
            delivered_per_s: v.len() as f64 / width,
            acked_sends_per_s: acked[i] as f64 / width,
            p50_ms: percentile_ms(&v, 0.50),
            p90_ms: percentile_ms(&v, 0.90),
            p99_ms: percentile_ms(&v, 0.99),
            max_ms: v.last().map_or(f64::NAN, |&m| f64::from(m) / 1e3),
        });
        lat_us.extend(v);
    }
    lat_us.sort_unstable();
    ack_lat_us.sort_unstable();
    Merged {
        seconds,
        lat_us,
        ack_lat_us,
    }
}

/// Second by second, the median over the rounds (rounds have the same window, so the same
/// seconds; a second missing from a round is left out of that second's median).
pub fn median_series(rounds: &[Vec<Second>]) -> Vec<Second> {
    let n = rounds.iter().map(Vec::len).max().unwrap_or(0);
    (0..n)
        .map(|i| {
            let at: Vec<&Second> = rounds.iter().filter_map(|r| r.get(i)).collect();
            let r = Rounds(&at);
            Second {
                t_s: at[0].t_s,
                delivered_per_s: r.median(|s| s.delivered_per_s),
                acked_sends_per_s: r.median(|s| s.acked_sends_per_s),
                p50_ms: r.median(|s| s.p50_ms),
                p90_ms: r.median(|s| s.p90_ms),
                p99_ms: r.median(|s| s.p99_ms),
                max_ms: r.median(|s| s.max_ms),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(w: Window, samples: &[(u64, u32)]) -> Buckets {
        let mut b = Buckets::default();
        for &(t, v) in samples {
            b.push(w, w.from + t, v);
        }
        b
    }

    #[test]
    fn samples_land_in_their_second_and_a_short_last_second_is_scaled() {
        // a 2.5 s window: seconds [0,1), [1,2) and the half second [2,2.5)
        let w = Window {
            from: 7 * SECOND_NS,
            to: 7 * SECOND_NS + 2_500_000_000,
        };
        let a = buckets(w, &[(0, 1000), (999_999_999, 3000), (2_100_000_000, 500)]);
        let b = buckets(w, &[(100, 2000), (1_500_000_000, 4000)]);
        let acks = buckets(w, &[(10, 100), (2_400_000_000, 100)]);
        let m = merge(w, [a, b], [acks]);
        assert_eq!(m.seconds.len(), 3);
        let s0 = &m.seconds[0];
        assert_eq!(
            (s0.t_s, s0.delivered_per_s, s0.acked_sends_per_s),
            (0.5, 3.0, 1.0)
        );
        assert_eq!((s0.p50_ms, s0.max_ms), (2.0, 3.0));
        assert_eq!(m.seconds[1].delivered_per_s, 1.0);
        assert!(m.seconds[1].p50_ms == 4.0);
        // half a second with one delivery and one ack: 2 per second
        let s2 = &m.seconds[2];
        assert_eq!(
            (s2.t_s, s2.delivered_per_s, s2.acked_sends_per_s),
            (2.25, 2.0, 2.0)
        );
        assert_eq!(m.lat_us, vec![500, 1000, 2000, 3000, 4000]);
        assert_eq!(m.ack_lat_us, vec![100, 100]);
    }

    #[test]
    fn an_empty_second_has_no_percentiles_and_the_median_is_per_second() {
        let w = Window {
            from: 0,
            to: 2 * SECOND_NS,
        };
        let quiet = merge(w, [buckets(w, &[(1_200_000_000, 9000)])], []);
        assert_eq!(quiet.seconds[0].delivered_per_s, 0.0);
        assert!(quiet.seconds[0].p99_ms.is_nan());
        let runs: Vec<Vec<Second>> = [1.0, 5.0, 3.0]
            .iter()
            .map(|&x| {
                vec![Second {
                    t_s: 0.5,
                    delivered_per_s: x * 10.0,
                    p99_ms: x,
                    ..Second::default()
                }]
            })
            .collect();
        let m = median_series(&runs);
        assert_eq!((m[0].delivered_per_s, m[0].p99_ms), (30.0, 3.0));
    }
}
