//! Rate limits: a token bucket that also tells sustained abuse apart from
//! one burst.

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket: `rate` tokens per second, a burst of `burst`. The
/// transport charges one per frame; a protocol that batches several
/// requests in one frame charges one more bucket per request; the core
/// charges membership changes.
///
/// Every connection holds two or three (its frames, its membership changes,
/// its user's): 48 bytes each, the refusal times boxed because only a
/// client that is being refused needs them (it was 80).
#[derive(Debug)]
pub struct RateLimiter {
    /// Exact for every integer rate up to 2^24 per second.
    rate: f32,
    burst: f32,
    refused_in_a_row: u32,
    tokens: f64,
    last: Instant,
    /// The current run of refusals, once there was one.
    refusals: Option<Box<Refusals>>,
}

/// When a run of refusals began, and the latest refusal: refusals with less
/// than a second between them belong to one run.
#[derive(Debug)]
struct Refusals {
    since: Instant,
    last: Instant,
}

impl RateLimiter {
    /// A full bucket of `rate` tokens per second, a burst of `rate`.
    pub fn new(rate: u32) -> Self {
        Self::with_burst(rate, rate)
    }

    /// A full bucket of `burst` tokens, refilled at `rate` per second.
    pub fn with_burst(rate: u32, burst: u32) -> Self {
        RateLimiter {
            rate: rate.max(1) as f32,
            burst: burst.max(1) as f32,
            refused_in_a_row: 0,
            tokens: f64::from(burst.max(1)),
            last: Instant::now(),
            refusals: None,
        }
    }

    /// Takes a token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * f64::from(self.rate)).min(f64::from(self.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            return true;
        }
        self.refused_in_a_row += 1;
        match &mut self.refusals {
            Some(run) => {
                if now.saturating_duration_since(run.last) > Duration::from_secs(1) {
                    run.since = now;
                }
                run.last = now;
            }
            None => {
                self.refusals = Some(Box::new(Refusals {
                    since: now,
                    last: now,
                }))
            }
        }
        false
    }

    /// True once refusals have gone on for two seconds without a quiet
    /// second between them: the client is not slowing down, close it
    /// (1008). One large batch is not enough.
    pub fn sustained_abuse(&self, now: Instant) -> bool {
        self.refusals
            .as_ref()
            .is_some_and(|run| now.saturating_duration_since(run.since) >= Duration::from_secs(2))
    }

    /// True once two seconds' worth of frames in a row were refused.
    pub fn flooding(&self) -> bool {
        self.refused_in_a_row > (self.rate as u32).saturating_mul(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_small() {
        assert!(std::mem::size_of::<RateLimiter>() <= 48);
    }

    #[test]
    fn a_burst_then_the_rate() {
        let start = Instant::now();
        let mut limiter = RateLimiter::with_burst(10, 3);
        assert!((0..3).all(|_| limiter.allow(start)));
        assert!(!limiter.allow(start));
        // A tenth of a second later: one more token.
        let later = start + Duration::from_millis(100);
        assert!(limiter.allow(later));
        assert!(!limiter.allow(later));
    }

    #[test]
    fn refusals_a_second_apart_are_one_run_and_become_abuse() {
        let start = Instant::now();
        let mut limiter = RateLimiter::with_burst(1, 1);
        assert!(limiter.allow(start));
        let mut now = start;
        // Twice the rate for three seconds: every other frame refused, the
        // refusals under a second apart, so one run.
        for _ in 0..6 {
            now += Duration::from_millis(500);
            limiter.allow(now);
        }
        assert!(limiter.sustained_abuse(now));
        assert!(!limiter.flooding(), "allowed frames came between");
        // A quiet second and more: a new run, not abuse yet.
        now += Duration::from_secs(3);
        assert!(limiter.allow(now));
        assert!(!limiter.allow(now));
        assert!(!limiter.sustained_abuse(now));
    }

    #[test]
    fn refusals_in_a_row_are_a_flood() {
        let now = Instant::now();
        let mut limiter = RateLimiter::with_burst(2, 2);
        let refused = (0..10).filter(|_| !limiter.allow(now)).count();
        assert_eq!(refused, 8);
        assert!(limiter.flooding());
    }
}
