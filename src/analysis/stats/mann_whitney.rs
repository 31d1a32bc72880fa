//! Mann-Whitney U test and the Hodges-Lehmann shift estimate with its confidence interval.
//!
//! The p-values follow the normal approximation with tie and continuity correction (SciPy's
//! `mannwhitneyu(method="asymptotic", use_continuity=True)`); the interval follows R's
//! `wilcox.test(conf.int = TRUE, correct = TRUE)` in the non-exact case, which is what
//! Kayenta's NetflixACAJudge ported. Shifts are always `x - y` (canary minus primary).

use statrs::distribution::{ContinuousCDF, Normal};

/// Why a statistic could not be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    /// One of the samples is empty (after NaN filtering): there is no data to judge.
    #[error("a sample is empty")]
    Empty,
    /// A sample holds NaN or an infinity; filter with [`filter_nan`] first.
    #[error("a sample holds a non-finite value")]
    NonFinite,
    /// Every observation is tied, so the rank statistic has no variance.
    #[error("all observations are tied")]
    AllTied,
    /// The confidence level is not strictly between 0 and 1.
    #[error("confidence level must be in (0, 1)")]
    InvalidConfidence,
}

/// Result alias for this module.
pub type Result<T, E = StatsError> = std::result::Result<T, E>;

/// What to do with NaN observations before a comparison (Kayenta's `nanStrategy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NanStrategy {
    /// Drop NaN values (Kayenta's `remove`); an all-NaN sample becomes empty, i.e. no data.
    #[default]
    Remove,
    /// Replace NaN with zero (Kayenta's `replace`), e.g. for error counts where no series means none.
    ReplaceWithZero,
}

/// Applies the NaN strategy and drops infinities, which no rank test can place sensibly.
pub fn filter_nan(values: &[f64], strategy: NanStrategy) -> Vec<f64> {
    values
        .iter()
        .filter_map(|&v| match (v.is_nan(), strategy) {
            (true, NanStrategy::Remove) => None,
            (true, NanStrategy::ReplaceWithZero) => Some(0.0),
            (false, _) if v.is_finite() => Some(v),
            _ => None,
        })
        .collect()
}

/// The alternative hypothesis, stated for `x` (the canary) against `y` (the primary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Alternative {
    /// The distributions differ in either direction.
    TwoSided,
    /// `x` is stochastically greater than `y`.
    Greater,
    /// `x` is stochastically less than `y`.
    Less,
}

/// Outcome of a Mann-Whitney U test.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct UTest {
    /// U statistic of `x`: the number of pairs with `x > y`, ties counting one half.
    pub u: f64,
    /// p-value of the normal approximation with tie and continuity correction.
    pub p_value: f64,
}

/// Midranks (ties get the average of their ranks) and the tie term `sum(t^3 - t)`.
fn midranks(values: &[f64]) -> (Vec<f64>, f64) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut ties = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && values[order[j]] == values[order[i]] {
            j += 1;
        }
        // Positions i..j (0-based) share ranks i+1..=j, whose mean is (i + 1 + j) / 2.
        let rank = (i + 1 + j) as f64 / 2.0;
        for &k in &order[i..j] {
            ranks[k] = rank;
        }
        let t = (j - i) as f64;
        ties += t * t * t - t;
        i = j;
    }
    (ranks, ties)
}

fn check(x: &[f64], y: &[f64]) -> Result<()> {
    if x.is_empty() || y.is_empty() {
        return Err(StatsError::Empty);
    }
    if x.iter().chain(y).any(|v| !v.is_finite()) {
        return Err(StatsError::NonFinite);
    }
    Ok(())
}

fn standard_normal() -> Normal {
    Normal::new(0.0, 1.0).expect("the standard normal is well defined")
}

/// Rank sum statistic of `x - shift` against `y`, centred at its null mean, and its
/// tie-corrected standard deviation (R's `dz` and `SIGMA.CI`).
fn centred_statistic(x: &[f64], y: &[f64], shift: f64) -> (f64, f64) {
    let (nx, ny) = (x.len() as f64, y.len() as f64);
    let combined: Vec<f64> = x
        .iter()
        .map(|v| v - shift)
        .chain(y.iter().copied())
        .collect();
    let (ranks, ties) = midranks(&combined);
    let rank_sum: f64 = ranks[..x.len()].iter().sum();
    let dz = rank_sum - nx * (nx + 1.0) / 2.0 - nx * ny / 2.0;
    let n = nx + ny;
    let sigma = ((nx * ny / 12.0) * ((n + 1.0) - ties / (n * (n - 1.0)))).sqrt();
    (dz, sigma)
}

/// Mann-Whitney U test of `x` (canary) against `y` (primary).
///
/// Uses the normal approximation with midranks, tie correction and continuity correction,
/// matching SciPy's `mannwhitneyu(x, y, use_continuity=True, method="asymptotic")`. When every
/// observation is tied the samples are indistinguishable and the p-value is 1.
pub fn mann_whitney_u(x: &[f64], y: &[f64], alternative: Alternative) -> Result<UTest> {
    check(x, y)?;
    let (dz, sigma) = centred_statistic(x, y, 0.0);
    let (nx, ny) = (x.len() as f64, y.len() as f64);
    let mu = nx * ny / 2.0;
    let u = dz + mu;
    if sigma == 0.0 {
        return Ok(UTest { u, p_value: 1.0 });
    }
    let normal = standard_normal();
    let upper_tail = |stat: f64| normal.sf((stat - mu - 0.5) / sigma);
    let p_value = match alternative {
        Alternative::TwoSided => (2.0 * upper_tail(u.max(nx * ny - u))).min(1.0),
        Alternative::Greater => upper_tail(u),
        Alternative::Less => upper_tail(nx * ny - u),
    };
    Ok(UTest { u, p_value })
}

/// All pairwise differences `x_i - y_j`.
fn pairwise_differences(x: &[f64], y: &[f64]) -> Vec<f64> {
    x.iter()
        .flat_map(|a| y.iter().map(move |b| a - b))
        .collect()
}

/// Hodges-Lehmann estimate of the shift `x - y`: the median of all pairwise differences.
pub fn hodges_lehmann(x: &[f64], y: &[f64]) -> Result<f64> {
    check(x, y)?;
    let mut diffs = pairwise_differences(x, y);
    let n = diffs.len();
    let mid = n / 2;
    let (_, upper, _) = diffs.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        return Ok(upper);
    }
    let lower = diffs[..mid]
        .iter()
        .copied()
        .max_by(f64::total_cmp)
        .expect("an even count above zero leaves a lower half");
    Ok((lower + upper) / 2.0)
}

/// Confidence interval of the shift `x - y` at `confidence`, as R's
/// `wilcox.test(x, y, conf.int = TRUE, correct = TRUE, exact = FALSE)` computes it.
///
/// R looks for the shifts at which the continuity-corrected standardized rank statistic
/// equals the normal quantiles `±z(1 - alpha/2)`, between `min(x) - max(y)` and
/// `max(x) - min(y)`, returning those ends when the statistic never crosses the quantile
/// (the flat ends). The statistic is a monotone step function of the shift that only jumps
/// at pairwise differences, so instead of a floating-point `uniroot` this binary-searches the
/// sorted pairwise differences for the jump where the sign changes. The result is the exact
/// point a bracketing root finder converges to, with no tolerance involved.
pub fn shift_confidence_interval(x: &[f64], y: &[f64], confidence: f64) -> Result<(f64, f64)> {
    check(x, y)?;
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(StatsError::InvalidConfidence);
    }
    let z = standard_normal().inverse_cdf(1.0 - (1.0 - confidence) / 2.0);
    let mut diffs = pairwise_differences(x, y);
    diffs.sort_by(f64::total_cmp);
    diffs.dedup();
    let lower = root(x, y, &diffs, z)?;
    let upper = root(x, y, &diffs, -z)?;
    Ok((lower, upper))
}

/// R's `wdiff`: the standardized, continuity-corrected statistic at `shift`, minus `zq`.
fn wdiff(x: &[f64], y: &[f64], shift: f64, zq: f64) -> Result<f64> {
    let (dz, sigma) = centred_statistic(x, y, shift);
    if sigma == 0.0 {
        return Err(StatsError::AllTied);
    }
    let correction = if dz > 0.0 {
        0.5
    } else if dz < 0.0 {
        -0.5
    } else {
        0.0
    };
    Ok((dz - correction) / sigma - zq)
}

/// R's `root(zq)` over the sorted distinct pairwise differences `diffs`.
fn root(x: &[f64], y: &[f64], diffs: &[f64], zq: f64) -> Result<f64> {
    let (mu_min, mu_max) = (diffs[0], diffs[diffs.len() - 1]);
    if wdiff(x, y, mu_min, zq)? <= 0.0 {
        return Ok(mu_min);
    }
    if wdiff(x, y, mu_max, zq)? >= 0.0 {
        return Ok(mu_max);
    }
    // Interval i is the open gap (diffs[i-1], diffs[i]); the function is constant there and
    // non-increasing in i. Find the first gap where it is negative: the sign changes at its
    // left end.
    let (mut lo, mut hi) = (1, diffs.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let probe = diffs[mid - 1] + (diffs[mid] - diffs[mid - 1]) / 2.0;
        if wdiff(x, y, probe, zq)? < 0.0 {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(diffs[lo - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midranks_average_ties() {
        let (ranks, ties) = midranks(&[3.0, 1.0, 3.0, 2.0]);
        assert_eq!(ranks, vec![3.5, 1.0, 3.5, 2.0]);
        assert_eq!(ties, 6.0);
    }

    #[test]
    fn empty_samples_are_an_error_not_a_panic() {
        assert_eq!(
            mann_whitney_u(&[], &[1.0], Alternative::TwoSided),
            Err(StatsError::Empty)
        );
        assert_eq!(hodges_lehmann(&[1.0], &[]), Err(StatsError::Empty));
        assert_eq!(
            shift_confidence_interval(&[], &[], 0.95),
            Err(StatsError::Empty)
        );
    }

    #[test]
    fn nan_is_rejected_unless_filtered() {
        let x = [1.0, f64::NAN, 3.0];
        assert_eq!(
            mann_whitney_u(&x, &[1.0], Alternative::Greater),
            Err(StatsError::NonFinite)
        );
        assert_eq!(filter_nan(&x, NanStrategy::Remove), vec![1.0, 3.0]);
        assert_eq!(
            filter_nan(&x, NanStrategy::ReplaceWithZero),
            vec![1.0, 0.0, 3.0]
        );
    }

    #[test]
    fn all_tied_samples_have_p_value_one_and_no_interval() {
        let t = mann_whitney_u(&[2.0, 2.0], &[2.0, 2.0, 2.0], Alternative::TwoSided).unwrap();
        assert_eq!(t.p_value, 1.0);
        assert_eq!(
            shift_confidence_interval(&[2.0, 2.0], &[2.0], 0.9),
            Err(StatsError::AllTied)
        );
    }

    #[test]
    fn hodges_lehmann_is_median_of_pairwise_differences() {
        assert_eq!(hodges_lehmann(&[10.0, 11.0], &[1.0]).unwrap(), 9.5);
        assert_eq!(hodges_lehmann(&[5.0], &[1.0, 2.0, 3.0]).unwrap(), 3.0);
    }

    #[test]
    fn interval_brackets_a_clear_shift() {
        let y: Vec<f64> = (0..30).map(|i| i as f64).collect();
        let x: Vec<f64> = y.iter().map(|v| v + 100.0).collect();
        let (lo, hi) = shift_confidence_interval(&x, &y, 0.95).unwrap();
        assert!(lo <= 100.0 && 100.0 <= hi && lo > 80.0 && hi < 120.0);
    }
}
