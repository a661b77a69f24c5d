//! Bandwidth cap: a token bucket over relay frame bytes (sans-IO, `now` passed in).

use std::time::{Duration, Instant};

/// A token bucket: `rate` bytes per second on average, with bursts of up to `burst` bytes.
///
/// A send larger than the burst is allowed once the bucket is full and leaves it in debt, so a
/// batch bigger than the burst still goes out and the long-run rate still holds.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilling at `rate` bytes per second (at least 1) holding up to `burst`
    /// bytes (at least 1).
    pub fn new(rate: u64, burst: u64, now: Instant) -> TokenBucket {
        let burst = burst.max(1) as f64;
        TokenBucket {
            rate: rate.max(1) as f64,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// The configured rate in bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate as u64
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now.max(self.last);
    }

    /// Takes `bytes` if the bucket allows it now; otherwise returns how long to wait before
    /// asking again.
    pub fn try_take(&mut self, bytes: u64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let need = (bytes as f64).min(self.burst);
        if self.tokens >= need {
            self.tokens -= bytes as f64;
            return Ok(());
        }
        let wait = (need - self.tokens) / self.rate;
        // Round up to a whole microsecond so the next call finds the tokens there.
        Err(Duration::from_micros((wait * 1e6).ceil() as u64 + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_rate_over_time() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1_000_000, 64_000, start);
        let mut now = start;
        let mut sent = 0u64;
        // Send 16 KB chunks as fast as allowed for ten simulated seconds.
        while now < start + Duration::from_secs(10) {
            match bucket.try_take(16_000, now) {
                Ok(()) => sent += 16_000,
                Err(wait) => now += wait,
            }
        }
        let rate = sent as f64 / 10.0;
        assert!((rate - 1_000_000.0).abs() < 20_000.0, "rate {rate}");
    }

    #[test]
    fn oversized_send_goes_when_full_and_leaves_debt() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000, 100, start);
        assert_eq!(bucket.try_take(500, start), Ok(()));
        let wait = bucket.try_take(1, start).expect_err("in debt");
        // 400 bytes of debt plus 1 byte at 1000 B/s.
        assert!(
            wait >= Duration::from_millis(401) && wait < Duration::from_millis(403),
            "{wait:?}"
        );
        assert_eq!(bucket.try_take(1, start + wait), Ok(()));
    }
}
