//! Summaries of repeated measurements. This machine is shared and noisy, so
//! every figure is a median of interleaved repetitions with its spread, and
//! comparisons are ratios of medians taken in the same run.

use serde::Serialize;

/// The summary of one measured quantity.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Every sample, in the order taken.
    pub samples: Vec<f64>,
}

impl Summary {
    /// `None` for no samples (a figure that could not be measured is left
    /// out of the report, never shown as zero).
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() || samples.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        };
        Some(Summary {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            samples: samples.to_vec(),
        })
    }

    /// The spread as a fraction of the median: (max - min) / median.
    pub fn spread(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) / self.median
        }
    }
}

/// `a / b` of two medians, for "x times faster" figures.
pub fn ratio(a: &Summary, b: &Summary) -> Option<f64> {
    (b.median != 0.0).then(|| a.median / b.median)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(Summary::of(&[3.0, 1.0, 2.0]).unwrap().median, 2.0);
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
    }

    #[test]
    fn spread_and_ratio() {
        let a = Summary::of(&[9.0, 10.0, 11.0]).unwrap();
        assert!((a.spread() - 0.2).abs() < 1e-9);
        let b = Summary::of(&[5.0]).unwrap();
        assert_eq!(ratio(&a, &b), Some(2.0));
        assert_eq!(a.samples, vec![9.0, 10.0, 11.0]);
    }

    #[test]
    fn nothing_measured_is_no_figure() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[1.0, f64::NAN]), None);
    }
}
