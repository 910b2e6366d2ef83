//! Events a socket may send per second, unknown ones included (GCRA in one atomic: an idle
//! socket pays 8 bytes for it, not a map entry). Checked as each event arrives, before it is
//! queued, so a flood costs the server a comparison per event and nothing else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

pub struct EventBudget {
    /// Theoretical arrival time of the next event, in ns since `epoch`.
    tat: AtomicU64,
}

/// The rate every socket's budget is measured at; shared, so a session holds only its atomic.
#[derive(Clone, Copy)]
pub struct EventRate {
    /// ns between two events at the sustained rate; `None`: no limit.
    interval: Option<u64>,
    /// How far ahead of now the arrival time may run: burst × interval.
    tolerance: u64,
    epoch: Instant,
}

impl EventRate {
    pub fn new(per_second: f64, burst: u32) -> Self {
        let interval = (per_second > 0.0).then(|| (1e9 / per_second) as u64);
        EventRate {
            interval,
            tolerance: interval.unwrap_or(0) * u64::from(burst.max(1)),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

impl EventBudget {
    pub fn new() -> Self {
        EventBudget {
            tat: AtomicU64::new(0),
        }
    }

    /// Takes one event, or says how long to wait (ms, rounded up).
    pub fn take(&self, rate: &EventRate) -> Result<(), u64> {
        let Some(interval) = rate.interval else {
            return Ok(());
        };
        let now = rate.now();
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now) + interval;
            if next > now + rate.tolerance {
                let wait = Duration::from_nanos(next - now - rate.tolerance);
                return Err((wait.as_micros().div_ceil(1000) as u64).max(1));
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_sustained_rate() {
        let rate = EventRate::new(10.0, 5);
        let b = EventBudget::new();
        for _ in 0..5 {
            b.take(&rate).unwrap();
        }
        let wait = b.take(&rate).unwrap_err();
        assert!((1..=100).contains(&wait), "{wait}");
        tokio::time::advance(Duration::from_millis(wait)).await;
        b.take(&rate).expect("one more after the announced wait");
        assert!(b.take(&rate).is_err());
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..5 {
            b.take(&rate).unwrap();
        }
        assert!(b.take(&rate).is_err(), "refilled to the burst, no further");
        let off = EventRate::new(0.0, 1);
        for _ in 0..1000 {
            b.take(&off).unwrap();
        }
    }
}
