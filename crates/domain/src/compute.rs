//! The reference CPU benchmark from the argument that courtside reproduces:
//! `total += sqrt(i)` for every `i < n`, in one sequential loop.
//!
//! The loop is kept sequential on purpose. The Node.js and Python peers run
//! the same loop, and summing in the same order keeps every system's result
//! bit-for-bit equal, so the load-test harness can check answers as well as
//! timings.

use std::fmt;

/// A validated loop size for [`sum_of_square_roots`]: at most the configured
/// maximum, so one request cannot occupy a pool thread for unbounded time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComputeSize(u64);

/// Why a loop size was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComputeSizeError {
    #[error("query parameter `n` is required")]
    Missing,
    #[error("`n` must be a non-negative integer, got {0:?}")]
    NotAnInteger(String),
    #[error("`n` must be at most {max}, got {value}")]
    TooLarge { value: u64, max: u64 },
}

impl ComputeSize {
    /// Parses `n` from text, as it arrives in a query string.
    pub fn parse(raw: Option<&str>, max: u64) -> Result<Self, ComputeSizeError> {
        let raw = raw.ok_or(ComputeSizeError::Missing)?;
        let value =
            raw.trim().parse::<u64>().map_err(|_| ComputeSizeError::NotAnInteger(truncate(raw, 32)))?;
        Self::new(value, max)
    }

    /// Accepts `value` if it is no larger than `max`.
    pub fn new(value: u64, max: u64) -> Result<Self, ComputeSizeError> {
        if value > max {
            return Err(ComputeSizeError::TooLarge { value, max });
        }
        Ok(Self(value))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ComputeSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The sum of `sqrt(i)` for `0 <= i < n`.
///
/// CPU-bound by design: call it on a CPU pool, never on an async runtime's
/// worker threads.
pub fn sum_of_square_roots(n: ComputeSize) -> f64 {
    let mut total = 0.0_f64;
    for i in 0..n.get() {
        // `as f64` is exact for every i below 2^53, far above any sane maximum.
        total += (i as f64).sqrt();
    }
    total
}

/// Keeps error messages short when a client sends a huge value.
fn truncate(raw: &str, max_chars: usize) -> String {
    raw.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 1_000_000;

    #[test]
    fn sums_square_roots_below_n() {
        let n = ComputeSize::new(5, MAX).expect("valid size");
        let expected = 0.0 + 1.0 + 2f64.sqrt() + 3f64.sqrt() + 2.0;
        assert_eq!(sum_of_square_roots(n), expected);
    }

    #[test]
    fn zero_terms_sum_to_zero() {
        let n = ComputeSize::new(0, MAX).expect("valid size");
        assert_eq!(sum_of_square_roots(n), 0.0);
    }

    #[test]
    fn large_sum_matches_the_integral_estimate() {
        // The sum of sqrt(i) for i < n is close to (2/3) n^1.5.
        let n = ComputeSize::new(1_000_000, MAX).expect("valid size");
        let estimate = 2.0 / 3.0 * 1e6_f64.powf(1.5);
        let relative = (sum_of_square_roots(n) - estimate).abs() / estimate;
        assert!(relative < 1e-5, "relative error {relative}");
    }

    #[test]
    fn parse_rejects_each_kind_of_bad_input_with_its_own_error() {
        assert_eq!(ComputeSize::parse(None, MAX), Err(ComputeSizeError::Missing));
        assert_eq!(ComputeSize::parse(Some("-3"), MAX), Err(ComputeSizeError::NotAnInteger("-3".into())));
        assert_eq!(ComputeSize::parse(Some("ten"), MAX), Err(ComputeSizeError::NotAnInteger("ten".into())));
        assert_eq!(
            ComputeSize::parse(Some("1000001"), MAX),
            Err(ComputeSizeError::TooLarge { value: 1_000_001, max: MAX })
        );
        assert_eq!(ComputeSize::parse(Some("42"), MAX).map(ComputeSize::get), Ok(42));
    }

    #[test]
    fn error_messages_name_the_parameter() {
        let err = ComputeSize::parse(Some("abc"), MAX).expect_err("not a number");
        assert_eq!(err.to_string(), "`n` must be a non-negative integer, got \"abc\"");
    }
}
