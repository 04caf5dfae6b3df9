//! Token buckets per key: per client address for login and registration, per account for the
//! password confirmations of user-interactive authentication.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{Error, Result};

/// Buckets beyond this many are pruned of the ones that refilled completely.
const MAX_TRACKED: usize = 10_000;

/// Allows `capacity` attempts per key at once and refills `capacity` per minute.
pub struct RateLimiter<K = IpAddr> {
    capacity: f64,
    per_second: f64,
    #[allow(clippy::disallowed_types)] // in-memory only
    buckets: Mutex<BTreeMap<K, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl<K: Ord> RateLimiter<K> {
    pub fn per_minute(capacity: u32) -> Self {
        let capacity = f64::from(capacity.max(1));
        Self { capacity, per_second: capacity / 60.0, buckets: Mutex::default() }
    }

    /// Takes one attempt for `key`, or says how long to wait (`M_LIMIT_EXCEEDED`).
    pub fn check(&self, key: K) -> Result<()> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > MAX_TRACKED {
            let (capacity, rate) = (self.capacity, self.per_second);
            buckets.retain(|_, b| refill(*b, now, rate, capacity).tokens < capacity);
        }
        let bucket = buckets.entry(key).or_insert(Bucket { tokens: self.capacity, updated: now });
        *bucket = refill(*bucket, now, self.per_second, self.capacity);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - bucket.tokens) / self.per_second;
        Err(Error::limit_exceeded(Duration::from_secs_f64(wait)))
    }
}

fn refill(bucket: Bucket, now: Instant, per_second: f64, capacity: f64) -> Bucket {
    let elapsed = now.duration_since(bucket.updated).as_secs_f64();
    Bucket { tokens: (bucket.tokens + elapsed * per_second).min(capacity), updated: now }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_empties_then_refuses() {
        let limiter = RateLimiter::per_minute(3);
        let ip = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..3 {
            limiter.check(ip).unwrap();
        }
        assert!(limiter.check(ip).is_err());
        // Another address has its own bucket.
        limiter.check(IpAddr::from([10, 0, 0, 2])).unwrap();
    }
}
