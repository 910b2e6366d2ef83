//! What every load of the bench makes of its rounds: each figure is the median over the rounds
//! (the machine's noise spread over them), each failure count the sum (a failure in any round
//! is reported, never outvoted by the others).

use std::collections::BTreeMap;

/// One target's runs, one per round.
pub struct Rounds<'a, F>(pub &'a [F]);

impl<F> Rounds<'_, F> {
    /// The median of `figure` over the rounds; see [`median_of`].
    pub fn median(&self, figure: impl Fn(&F) -> f64) -> f64 {
        median_of(self.0.iter().map(figure).collect())
    }

    /// The sum of a count over the rounds.
    pub fn sum(&self, count: impl Fn(&F) -> u64) -> u64 {
        self.0.iter().map(count).sum()
    }

    /// Counts per code (errors by kind), summed over the rounds.
    pub fn sum_codes(&self, codes: impl Fn(&F) -> &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        let mut sum = BTreeMap::new();
        for (code, n) in self.0.iter().flat_map(codes) {
            *sum.entry(code.clone()).or_default() += n;
        }
        sum
    }
}

/// The median of `v` (the mean of the middle two for an even count). NaN when `v` is empty or
/// holds a NaN: a round without the figure (no answer in its window) makes the median unknown
/// rather than being hidden by the other rounds.
fn median_of(mut v: Vec<f64>) -> f64 {
    if v.is_empty() || v.iter().any(|x| x.is_nan()) {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median_of(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_of(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median_of(vec![]).is_nan());
        assert!(median_of(vec![1.0, f64::NAN, 2.0]).is_nan());
    }

    #[test]
    fn counts_are_summed_over_rounds() {
        let runs = [
            (1.0, 2, BTreeMap::from([("timeout".to_owned(), 2)])),
            (5.0, 0, BTreeMap::new()),
            (
                3.0,
                1,
                BTreeMap::from([("timeout".to_owned(), 1), ("500".to_owned(), 1)]),
            ),
        ];
        let r = Rounds(&runs);
        assert_eq!(r.median(|x| x.0), 3.0);
        assert_eq!(r.sum(|x| x.1), 3);
        let codes = r.sum_codes(|x| &x.2);
        assert_eq!(
            codes,
            BTreeMap::from([("timeout".to_owned(), 3), ("500".to_owned(), 1)])
        );
    }
}
