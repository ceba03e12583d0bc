//! Rate limits: a token bucket that also tells sustained abuse apart from
//! one burst.

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket: `rate` tokens per second, a burst of `burst`. The
/// transport charges one per frame; a protocol that batches several
/// requests in one frame charges one more bucket per request; the core
/// charges membership changes.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    refused_in_a_row: u32,
    /// When the current run of refusals began: refusals with less than a
    /// second between them belong to one run.
    refusing_since: Option<Instant>,
    last_refusal: Option<Instant>,
}

impl RateLimiter {
    /// A full bucket of `rate` tokens per second, a burst of `rate`.
    pub fn new(rate: u32) -> Self {
        Self::with_burst(rate, rate)
    }

    /// A full bucket of `burst` tokens, refilled at `rate` per second.
    pub fn with_burst(rate: u32, burst: u32) -> Self {
        RateLimiter {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: Instant::now(),
            refused_in_a_row: 0,
            refusing_since: None,
            last_refusal: None,
        }
    }

    /// Takes a token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            true
        } else {
            self.refused_in_a_row += 1;
            let quiet = self
                .last_refusal
                .is_none_or(|t| now.saturating_duration_since(t) > Duration::from_secs(1));
            if quiet {
                self.refusing_since = Some(now);
            }
            self.last_refusal = Some(now);
            false
        }
    }

    /// True once refusals have gone on for two seconds without a quiet
    /// second between them: the client is not slowing down, close it
    /// (1008). One large batch is not enough.
    pub fn sustained_abuse(&self, now: Instant) -> bool {
        self.refusing_since
            .is_some_and(|since| now.saturating_duration_since(since) >= Duration::from_secs(2))
    }

    /// True once two seconds' worth of frames in a row were refused.
    pub fn flooding(&self) -> bool {
        self.refused_in_a_row > (self.rate as u32).saturating_mul(2)
    }
}
