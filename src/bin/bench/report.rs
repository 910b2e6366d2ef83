//! How a scenario of the bench shows what it measured: a progress bar on stderr while it runs,
//! its figures as an aligned table (targets side by side, with their ratio), or, with `--json`,
//! one JSON document on stdout holding every figure of the run, and with `--plot out.svg`
//! throughput and send→deliver percentiles per second of the window, one line per target.
//!
//! Adopting it in a scenario (the room load and `scale` do):
//! 1. put `#[command(flatten)] report: ReportArgs` in the scenario's clap args (`--json`,
//!    `--plot FILE`, `--quiet`);
//! 2. `let rep = Reporter::new(&args.report, runs, per_run)`, `runs` being rounds × targets and
//!    `per_run` the warm-up plus window; print every status line with `rep.line(…)` (a bare
//!    `eprintln!` would tear the bar);
//! 3. around each run, `let _live = rep.watch(index, label, start_ns, window, counter)`: moves the
//!    bar and shows the live deliveries/s read from `counter` until dropped;
//! 4. for plots, record samples in `series::Buckets`, `series::merge` them per run and
//!    `series::median_series` over the rounds; scenarios with nothing per second pass no series
//!    (then `--plot` is refused with an error, never silently ignored);
//! 5. end with `rep.finish(&doc, &table, plot)`: the table on stdout (on stderr beside `--json`,
//!    unless `--quiet`), the JSON document on stdout with `--json`, and the SVG with `--plot`.
//!    Keep a `"kind": "<scenario>_summary"` key in the document: bench/*.sh grep it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use super::plot::{self, Plot};
use super::{Window, now_ns};

/// The reporting flags every adopting scenario takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ReportArgs {
    /// One JSON document on stdout with every figure of the run (rounds, medians, per-second
    /// series), instead of the table (which then goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Draw throughput and send→deliver percentiles per second of the window into this SVG file.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// No progress bar and no status lines on stderr (errors and the result still show).
    #[arg(long, short)]
    pub quiet: bool,
}

pub struct Reporter {
    args: ReportArgs,
    bar: ProgressBar,
    per_run_ms: u64,
}

impl Reporter {
    /// A bar over `runs` runs of `per_run` each; hidden with --quiet or when stderr is no
    /// terminal (indicatif draws nothing there), so logs and pipes get plain lines only.
    pub fn new(args: &ReportArgs, runs: usize, per_run: Duration) -> Self {
        let per_run_ms = per_run.as_millis().max(1) as u64;
        let bar = if args.quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::with_draw_target(
                Some(runs as u64 * per_run_ms),
                ProgressDrawTarget::stderr_with_hz(4),
            )
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>18} [{bar:30}] {percent:>3}% eta {eta:>4}  {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        Self {
            args: args.clone(),
            bar,
            per_run_ms,
        }
    }

    /// A status line on stderr that does not tear the bar; nothing with --quiet.
    pub fn line(&self, s: impl AsRef<str>) {
        if !self.args.quiet {
            self.bar.suspend(|| eprintln!("{}", s.as_ref()));
        }
    }

    /// Shows run number `index` (from 0), which started loading at `start` (now_ns time) and
    /// measures over `w`, until the returned guard is dropped: position by the clock, and the
    /// deliveries/s of the last tick from `counter` (a running total).
    pub fn watch(
        &self,
        index: usize,
        label: &str,
        start: u64,
        w: Window,
        counter: impl Fn() -> u64 + Send + 'static,
    ) -> Live {
        let bar = self.bar.clone();
        let base = index as u64 * self.per_run_ms;
        let span = self.per_run_ms;
        bar.set_prefix(label.to_owned());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let (mut last_n, mut last_t) = (counter(), now_ns());
            loop {
                tick.tick().await;
                let (n, t) = (counter(), now_ns());
                let rate = (n - last_n) as f64 * 1e9 / (t - last_t).max(1) as f64;
                (last_n, last_t) = (n, t);
                bar.set_position(base + ((t.saturating_sub(start)) / 1_000_000).min(span));
                let phase = if t < w.from {
                    "warm-up"
                } else if t < w.to {
                    "measuring"
                } else {
                    "draining"
                };
                bar.set_message(format!("{phase}: {rate:>9.0} delivered/s"));
            }
        });
        Live {
            task,
            bar: self.bar.clone(),
            end: base + span,
        }
    }

    /// The result: the JSON document or the table on stdout, and the plot if asked for.
    pub fn finish(&self, doc: &Value, table: &Table, plot: Option<Plot>) -> anyhow::Result<()> {
        self.bar.finish_and_clear();
        if let Some(path) = &self.args.plot {
            let Some(plot) = plot else {
                bail!("this scenario has no per-second series to plot");
            };
            plot::draw(&plot, path).with_context(|| format!("drawing {}", path.display()))?;
            self.line(format!("plot: {}", path.display()));
        }
        if self.args.json {
            self.line(table.render());
            println!("{doc}");
        } else {
            print!("{}", table.render());
        }
        Ok(())
    }
}

/// While alive, the bar follows a run; dropped, it stops at the run's end.
pub struct Live {
    task: tokio::task::JoinHandle<()>,
    bar: ProgressBar,
    end: u64,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.task.abort();
        self.bar.set_position(self.end);
    }
}

/// How a row's figures are written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fmt {
    /// a whole number (rates); ratio shown
    Whole,
    /// one decimal; ratio shown
    Dec1,
    /// two decimals (milliseconds); ratio shown
    Dec2,
    /// failures and other counts: whole, no ratio (0/0 says nothing)
    Count,
}

/// A row of a scenario's table: label, format, and how to read it off a target's figures.
pub type Row<F> = (&'static str, Fmt, fn(&F) -> f64);

/// Figures as rows, targets as columns, and optionally one column with the ratio of two targets.
pub struct Table {
    title: String,
    targets: Vec<String>,
    ratio: Option<(usize, usize)>,
    rows: Vec<(String, Fmt, Vec<f64>)>,
}

impl Table {
    pub fn new(title: impl Into<String>, targets: Vec<String>) -> Self {
        Self {
            title: title.into(),
            targets,
            ratio: None,
            rows: Vec::new(),
        }
    }

    /// Adds the column `num/den` (both target names; no column when either is missing).
    pub fn ratio(mut self, num: &str, den: &str) -> Self {
        let ix = |n: &str| self.targets.iter().position(|t| t == n);
        self.ratio = ix(num).zip(ix(den)).filter(|(a, b)| a != b);
        self
    }

    /// A row: one value per target, in the targets' order.
    pub fn row(&mut self, label: impl Into<String>, fmt: Fmt, values: Vec<f64>) {
        debug_assert_eq!(values.len(), self.targets.len());
        self.rows.push((label.into(), fmt, values));
    }

    pub fn render(&self) -> String {
        let cell = |fmt: Fmt, v: f64| match fmt {
            _ if v.is_nan() => "-".to_owned(),
            Fmt::Whole | Fmt::Count => format!("{v:.0}"),
            Fmt::Dec1 => format!("{v:.1}"),
            Fmt::Dec2 => format!("{v:.2}"),
        };
        let mut head = vec![String::new()];
        head.extend(self.targets.iter().cloned());
        if let Some((a, b)) = self.ratio {
            head.push(format!("{}/{}", self.targets[a], self.targets[b]));
        }
        let mut lines = vec![head];
        for (label, fmt, values) in &self.rows {
            let mut l = vec![label.clone()];
            l.extend(values.iter().map(|&v| cell(*fmt, v)));
            if let Some((a, b)) = self.ratio {
                let r = values[a] / values[b];
                l.push(if *fmt == Fmt::Count || !r.is_finite() {
                    String::new()
                } else {
                    format!("×{r:.2}")
                });
            }
            lines.push(l);
        }
        let cols = lines[0].len();
        let width: Vec<usize> = (0..cols)
            .map(|c| {
                lines
                    .iter()
                    .map(|l| l[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = format!("{}\n", self.title);
        for l in &lines {
            let mut s = format!("{:<w$}", l[0], w = width[0]);
            for c in 1..cols {
                s.push_str(&format!("  {:>w$}", l[c], w = width[c]));
            }
            out.push_str(s.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A scenario's per-target series, ready for `finish` (None when nothing was recorded).
pub fn plot_of(title: String, series: Vec<(String, Vec<super::series::Second>)>) -> Option<Plot> {
    let series: Vec<_> = series.into_iter().filter(|(_, s)| !s.is_empty()).collect();
    (!series.is_empty()).then_some(Plot { title, series })
}

/// Keeps a counter readable from the progress task.
pub fn summed(counters: Vec<Arc<std::sync::atomic::AtomicU64>>) -> impl Fn() -> u64 + Send {
    move || {
        counters
            .iter()
            .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_shows_ratios_but_not_for_counts() {
        let mut t =
            Table::new("room", vec!["tsunagi".into(), "peer".into()]).ratio("tsunagi", "peer");
        t.row("delivered/s", Fmt::Whole, vec![500000.0, 125000.0]);
        t.row("send→deliver p99 ms", Fmt::Dec2, vec![5.0, 10.0]);
        t.row("missing", Fmt::Count, vec![0.0, 3.0]);
        t.row("ack p50 ms", Fmt::Dec2, vec![f64::NAN, 1.0]);
        let out = t.render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "room");
        assert_eq!(
            lines[1],
            "                     tsunagi    peer  tsunagi/peer"
        );
        assert_eq!(
            lines[2],
            "delivered/s           500000  125000         ×4.00"
        );
        assert_eq!(
            lines[3],
            "send→deliver p99 ms     5.00   10.00         ×0.50"
        );
        assert_eq!(lines[4], "missing                    0       3");
        assert_eq!(lines[5], "ack p50 ms                 -    1.00");
    }

    #[test]
    fn no_ratio_column_for_an_unknown_target() {
        let mut t = Table::new("x", vec!["one".into()]).ratio("one", "peer");
        t.row("delivered/s", Fmt::Whole, vec![1.0]);
        assert_eq!(t.render(), "x\n             one\ndelivered/s    1\n");
    }
}
