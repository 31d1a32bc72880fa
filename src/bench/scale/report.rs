//! What a scale run reports: the figures, their text and markdown renderings, and the
//! reading of serin's reconcile histogram.

use std::collections::BTreeMap;

/// The figures of one run.
#[derive(Debug, Default)]
pub struct Report {
    pub canaries: usize,
    /// The window the releases started in (zero: all at once).
    pub spread_seconds: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    /// Of the RSS: anonymous memory (the heap, stacks) and file-backed pages (the binary).
    pub rss_anon_mib: f64,
    pub rss_file_mib: f64,
    pub cpu_seconds: f64,
    pub release_seconds: f64,
    /// Releases rolled back (healthy releases: none expected).
    pub failed: usize,
    pub release_requests: BTreeMap<String, usize>,
    pub idle_seconds: f64,
    pub idle_requests: BTreeMap<String, usize>,
    pub writes_per_release: f64,
    pub prometheus_queries_per_second: f64,
    pub detection: Percentiles,
    pub lateness: Percentiles,
    /// CPU seconds each process used during the releases (serin, the simulator and the
    /// local control plane's), highest first.
    pub release_cpu: Vec<(String, f64)>,
    /// serin's reconcile durations over the whole run, from its own histogram.
    pub reconcile: Percentiles,
    /// How late serin ran its analysis ticks, by its own clock (its histogram): the
    /// lateness above, less the time the status took to reach the benchmark's watch.
    pub tick_lateness: Percentiles,
    /// How long reconciles waited for a slot (`--concurrency`): due analysis ticks, and
    /// the others (its histogram, by lane).
    pub slot_wait_tick: Percentiles,
    pub slot_wait_other: Percentiles,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub count: usize,
}

impl Percentiles {
    pub fn of(mut values: Vec<f64>) -> Percentiles {
        if values.is_empty() {
            return Percentiles::default();
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let i = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
            values[i]
        };
        Percentiles {
            p50: at(0.50),
            p99: at(0.99),
            count: values.len(),
        }
    }
}

const WRITES: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

pub(super) fn writes(requests: &BTreeMap<String, usize>) -> usize {
    WRITES.iter().filter_map(|v| requests.get(*v)).sum()
}

/// Requests other than watches and the leader Lease (none in this run).
fn non_watch(requests: &BTreeMap<String, usize>) -> usize {
    requests
        .iter()
        .filter(|(v, _)| *v != "watch")
        .map(|(_, n)| n)
        .sum()
}

impl Report {
    pub fn render_text(&self) -> String {
        let verbs = |m: &BTreeMap<String, usize>| {
            m.iter()
                .map(|(v, n)| format!("{v} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "canaries: {}, releases started {}\n\
             controller RSS: {:.1} MiB (peak {:.1} MiB; anonymous {:.1}, file {:.1}), CPU: {:.1} s\n\
             releases: {:.0} s ({} rolled back), API requests by verb: {}\n\
             write requests per release: {:.1}\n\
             idle {:.0} s, API requests by verb: {} ({} other than watches)\n\
             Prometheus queries/s during releases: {:.2}\n\
             detection (target change -> Progressing): p50 {:.2} s, p99 {:.2} s (n={})\n\
             step lateness (behind the interval): p50 {:.2} s, p99 {:.2} s (n={})\n\
             serin's reconciles: p50 <= {} s, p99 <= {} s (n={}, bucket bounds)\n\
             serin's tick lateness (its own clock): p50 <= {} s, p99 <= {} s (n={}, bucket bounds)\n\
             serin's wait for a slot: ticks p50 <= {} s, p99 <= {} s (n={}); others p50 <= {} s, p99 <= {} s (n={})\n\
             CPU during the releases ({:.0} s on {} cores): {}\n",
            self.canaries,
            self.started(),
            self.rss_mib,
            self.peak_rss_mib,
            self.rss_anon_mib,
            self.rss_file_mib,
            self.cpu_seconds,
            self.release_seconds,
            self.failed,
            verbs(&self.release_requests),
            self.writes_per_release,
            self.idle_seconds,
            verbs(&self.idle_requests),
            non_watch(&self.idle_requests),
            self.prometheus_queries_per_second,
            self.detection.p50,
            self.detection.p99,
            self.detection.count,
            self.lateness.p50,
            self.lateness.p99,
            self.lateness.count,
            self.reconcile.p50,
            self.reconcile.p99,
            self.reconcile.count,
            self.tick_lateness.p50,
            self.tick_lateness.p99,
            self.tick_lateness.count,
            self.slot_wait_tick.p50,
            self.slot_wait_tick.p99,
            self.slot_wait_tick.count,
            self.slot_wait_other.p50,
            self.slot_wait_other.p99,
            self.slot_wait_other.count,
            self.release_seconds,
            cores(),
            self.release_cpu
                .iter()
                .map(|(name, s)| format!(
                    "{name} {s:.1} s ({:.0}%)",
                    100.0 * s / (self.release_seconds * cores() as f64).max(1.0)
                ))
                .collect::<Vec<_>>()
                .join(", "),
        )
    }

    fn started(&self) -> String {
        if self.spread_seconds > 0.0 {
            format!("evenly over {:.0} s", self.spread_seconds)
        } else {
            "all at once".to_string()
        }
    }

    /// One row of the table in docs/benchmarks.md.
    pub fn render_row(&self) -> String {
        format!(
            "| {} | {:.1} | {:.1} | {} | {:.1} | {} | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |",
            if self.spread_seconds > 0.0 {
                format!(
                    "{} (releases over {:.0} s)",
                    self.canaries, self.spread_seconds
                )
            } else {
                self.canaries.to_string()
            },
            self.rss_mib,
            self.cpu_seconds,
            writes(&self.release_requests),
            self.writes_per_release,
            non_watch(&self.idle_requests),
            self.prometheus_queries_per_second,
            self.detection.p50,
            self.detection.p99,
            self.lateness.p50,
            self.lateness.p99,
        )
    }
}

pub const TABLE_HEADER: &str = "| canaries | RSS MiB | CPU s | writes in releases | writes/release | idle requests (non-watch) | Prometheus queries/s | detection p50 / p99 s | step lateness p50 / p99 s |\n|---|---|---|---|---|---|---|---|---|";

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Nearest-bucket p50 and p99 of a Prometheus text-format histogram: the upper bound of
/// the first bucket holding that share of the observations.
pub(super) fn histogram_percentiles(text: &str, name: &str) -> Percentiles {
    labelled_percentiles(text, name, "")
}

/// [`histogram_percentiles`] of the series with the label `label` (such as
/// `lane="tick"`; prometheus-client writes it after `le`).
pub(super) fn labelled_percentiles(text: &str, name: &str, label: &str) -> Percentiles {
    let prefix = format!("{name}_bucket{{");
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(label))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    let at = |q: f64| {
        buckets
            .iter()
            .find(|(_, n)| *n >= q * total)
            .map_or(0.0, |(le, _)| *le)
    };
    Percentiles {
        p50: at(0.5),
        p99: at(0.99),
        count: total as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_are_the_upper_bounds_of_the_buckets_that_hold_them() {
        let text = "# TYPE serin_reconcile_duration_seconds histogram\n\
            serin_reconcile_duration_seconds_sum 12.5\n\
            serin_reconcile_duration_seconds_count 100\n\
            serin_reconcile_duration_seconds_bucket{le=\"0.01\"} 40\n\
            serin_reconcile_duration_seconds_bucket{le=\"0.1\"} 90\n\
            serin_reconcile_duration_seconds_bucket{le=\"1.0\"} 98\n\
            serin_reconcile_duration_seconds_bucket{le=\"10.0\"} 100\n\
            serin_reconcile_duration_seconds_bucket{le=\"+Inf\"} 100\n";
        let p = histogram_percentiles(text, "serin_reconcile_duration_seconds");
        assert_eq!((p.p50, p.p99, p.count), (0.1, 10.0, 100));
        let none = histogram_percentiles("", "serin_reconcile_duration_seconds");
        assert_eq!(none.count, 0);
    }

    #[test]
    fn a_labelled_histogram_is_read_series_by_series() {
        let text = "serin_reconcile_slot_wait_seconds_bucket{le=\"0.1\",lane=\"tick\"} 99\n\
            serin_reconcile_slot_wait_seconds_bucket{le=\"1.0\",lane=\"tick\"} 100\n\
            serin_reconcile_slot_wait_seconds_bucket{le=\"+Inf\",lane=\"tick\"} 100\n\
            serin_reconcile_slot_wait_seconds_bucket{le=\"0.1\",lane=\"other\"} 1\n\
            serin_reconcile_slot_wait_seconds_bucket{le=\"1.0\",lane=\"other\"} 10\n\
            serin_reconcile_slot_wait_seconds_bucket{le=\"+Inf\",lane=\"other\"} 10\n";
        let name = "serin_reconcile_slot_wait_seconds";
        let tick = labelled_percentiles(text, name, "lane=\"tick\"");
        assert_eq!((tick.p50, tick.p99, tick.count), (0.1, 0.1, 100));
        let other = labelled_percentiles(text, name, "lane=\"other\"");
        assert_eq!((other.p50, other.p99, other.count), (1.0, 1.0, 10));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p99, p.count), (50.0, 99.0, 100));
        let one = Percentiles::of(vec![3.0]);
        assert_eq!((one.p50, one.p99), (3.0, 3.0));
        assert_eq!(Percentiles::of(vec![]).count, 0);
    }

    #[test]
    fn writes_count_every_verb_that_changes_an_object() {
        let counts: BTreeMap<String, usize> =
            [("patch", 3), ("create", 2), ("get", 5), ("watch", 4)]
                .into_iter()
                .map(|(v, n)| (v.to_string(), n))
                .collect();
        assert_eq!(writes(&counts), 5);
        assert_eq!(non_watch(&counts), 10);
    }
}
