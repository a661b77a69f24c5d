//! `outflow estimate`: run the wire codec offline over binlog files and report what the
//! link would carry and cost.
//!
//! It drives `outflow_codec::Pipeline` (binlog decode -> ChangeBatch builder -> optional
//! compaction -> columnar zstd frames), the same code the live source runs, and counts the
//! frames' bytes. Any decode or build error stops it with the file and position: nothing
//! is skipped.
//!
//! Cost: dollars per month = binlog GB per day × 30 × (wire / binlog) × price per GB. The
//! binlog rate is `--binlog-gb-per-day` when given, else the files' bytes over the time
//! their event timestamps span (so pass whole files of representative traffic).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use outflow_binlog::walk::{Visitor, Walker};
use outflow_binlog::TableInfo;
use outflow_codec::{EncoderConfig, Pipeline, PipelineConfig};
use outflow_core::ImageMode;

/// Internet egress list prices, USD per GB: (provider, price).
pub const PRICES: [(&str, f64); 3] = [("aws", 0.09), ("gcp", 0.12), ("azure", 0.087)];

/// Image mode on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// What an exact replica needs: key + changed columns.
    Replica,
    /// Before and after images as the source wrote them.
    Full,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// `outflow estimate` arguments.
#[derive(Debug, clap::Args)]
pub struct EstimateArgs {
    /// Binlog files, read in the order given.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Which images to ship.
    #[arg(long, value_enum, default_value = "replica")]
    pub mode: Mode,
    /// Net-change compaction per batch (on suits off-peak batch shipping).
    #[arg(long, value_enum, default_value = "off")]
    pub compaction: Switch,
    /// Binlog megabytes per batch (frames are cut at the next commit after this).
    #[arg(long, default_value_t = 1.0)]
    pub batch_mb: f64,
    /// zstd level of the frames.
    #[arg(long, default_value_t = 1)]
    pub level: i32,
    /// An extra egress price to report, USD per GB.
    #[arg(long)]
    pub price_per_gb: Option<f64>,
    /// The source's binlog volume in GB per day (default: derived from the files).
    #[arg(long)]
    pub binlog_gb_per_day: Option<f64>,
    /// Primary key of a table whose binlog lacks it (`binlog_row_metadata` below FULL):
    /// `db.table=col,...` with column names or 1-based positions. Repeatable.
    #[arg(long = "primary-key", value_name = "DB.TABLE=COLS")]
    pub primary_keys: Vec<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Table and column filters, as in the `[filters]` section of the configuration: the
    /// estimate counts what the relay would ship.
    #[command(flatten)]
    pub filters: crate::config::FilterConfig,
}

/// The pipeline behind the table filters, as the live source drives it.
struct Filtered<'p> {
    tables: outflow_source::TableFilterCache,
    pipeline: &'p mut Pipeline,
}

impl Visitor for Filtered<'_> {
    type Error = outflow_codec::PipelineError;

    fn event(&mut self, pos: u64, d: &outflow_binlog::Decoded<'_>) -> Result<(), Self::Error> {
        self.pipeline.event(pos, d)
    }

    fn wants(&mut self, table: &TableInfo) -> bool {
        self.tables.wants(table) && self.pipeline.wants(table)
    }

    fn rows(
        &mut self,
        ctx: outflow_binlog::walk::RowsContext<'_>,
        event: &outflow_binlog::RowsEvent<'_>,
        table: &TableInfo,
        rows: outflow_binlog::RowIter<'_>,
    ) -> Result<(), Self::Error> {
        self.pipeline.rows(ctx, event, table, rows)
    }
}

/// A parsed `--primary-key`.
#[derive(Debug, Clone)]
struct KeySpec {
    db: String,
    table: String,
    cols: Vec<String>,
}

fn parse_key(spec: &str) -> anyhow::Result<KeySpec> {
    let (name, cols) = spec
        .split_once('=')
        .with_context(|| format!("--primary-key `{spec}`: expected db.table=col,..."))?;
    let (db, table) = name
        .split_once('.')
        .with_context(|| format!("--primary-key `{spec}`: expected db.table"))?;
    let cols: Vec<String> = cols.split(',').map(|c| c.trim().to_string()).collect();
    if cols.iter().any(String::is_empty) {
        bail!("--primary-key `{spec}`: empty column");
    }
    Ok(KeySpec {
        db: db.to_string(),
        table: table.to_string(),
        cols,
    })
}

fn apply_keys(specs: &[KeySpec], t: &mut TableInfo) {
    for s in specs {
        if s.db != t.schema || s.table != t.table {
            continue;
        }
        let mut pk = Vec::new();
        for c in &s.cols {
            let by_pos = c.parse::<usize>().ok().and_then(|p| p.checked_sub(1));
            let by_name = t
                .columns
                .iter()
                .position(|col| col.name.as_deref() == Some(c.as_str()));
            match by_name.or(by_pos) {
                Some(i) if i < t.columns.len() => pk.push(i),
                // A column that does not exist: leave the table keyless rather than guess.
                _ => return,
            }
        }
        t.primary_key = pk;
    }
}

/// Runs the estimate and prints it.
pub fn run(args: &EstimateArgs) -> anyhow::Result<()> {
    let report = estimate(args)?;
    if args.json {
        println!("{}", serde_json::to_string(&report.to_json(args))?);
    } else {
        print!("{}", report.to_text(args));
    }
    Ok(())
}

/// What an estimate found.
pub struct Report {
    /// Binlog bytes read.
    pub raw_bytes: u64,
    /// Pipeline totals.
    pub stats: outflow_codec::Stats,
    /// Seconds the whole pass took.
    pub seconds: f64,
}

impl Report {
    /// Wire bytes over binlog bytes.
    pub fn ratio(&self) -> f64 {
        if self.raw_bytes == 0 {
            0.0
        } else {
            self.stats.wire_bytes as f64 / self.raw_bytes as f64
        }
    }

    /// Binlog megabytes (10^6 bytes) processed per second.
    pub fn mb_per_s(&self) -> f64 {
        self.raw_bytes as f64 / 1e6 / self.seconds.max(1e-9)
    }

    /// Binlog GB per day and where the figure comes from.
    fn rate(&self, args: &EstimateArgs) -> Option<(f64, &'static str)> {
        if let Some(r) = args.binlog_gb_per_day {
            return Some((r, "--binlog-gb-per-day"));
        }
        let (a, b) = self.stats.time_span?;
        let span = f64::from(b.saturating_sub(a));
        (span >= 1.0).then(|| {
            (
                self.raw_bytes as f64 / 1e9 * 86_400.0 / span,
                "event timestamps",
            )
        })
    }

    fn prices(args: &EstimateArgs) -> Vec<(&'static str, f64)> {
        let mut p = PRICES.to_vec();
        if let Some(x) = args.price_per_gb {
            p.push(("custom", x));
        }
        p
    }

    fn tables(&self) -> Vec<(&String, &outflow_codec::TableStats)> {
        let mut t: Vec<_> = self.stats.tables.iter().collect();
        t.sort_by(|a, b| b.1.binlog_bytes.cmp(&a.1.binlog_bytes).then(a.0.cmp(b.0)));
        t
    }

    /// The `--json` object.
    pub fn to_json(&self, args: &EstimateArgs) -> serde_json::Value {
        use serde_json::json;
        let tables: Vec<_> = self
            .tables()
            .into_iter()
            .map(|(name, t)| {
                json!({
                    "name": name,
                    "rows_in": t.rows_in,
                    "changes_out": t.changes_out,
                    "binlog_bytes": t.binlog_bytes,
                    "payload_bytes": t.payload_bytes,
                    "wire_bytes": t.wire_bytes.round() as u64,
                    "primary_key": t.primary_key,
                })
            })
            .collect();
        let rate = self.rate(args);
        let monthly = |ratio: f64| -> serde_json::Value {
            match rate {
                Some((gb, _)) => Self::prices(args)
                    .into_iter()
                    .map(|(n, p)| (n.to_string(), json!(gb * 30.0 * ratio * p)))
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
                None => serde_json::Value::Null,
            }
        };
        json!({
            "files": args.files.len(),
            "mode": match args.mode { Mode::Replica => "replica", Mode::Full => "full" },
            "compaction": args.compaction == Switch::On,
            "raw_bytes": self.raw_bytes,
            "wire_bytes": self.stats.wire_bytes,
            "payload_bytes": self.stats.payload_bytes,
            "ratio": self.ratio(),
            "frames": self.stats.frames,
            "transactions": self.stats.transactions,
            "rows_in": self.stats.rows_in,
            "changes_out": self.stats.changes_out,
            "seconds": self.seconds,
            "mb_per_s": self.mb_per_s(),
            "binlog_gb_per_day": rate.map(|r| r.0),
            "rate_source": rate.map(|r| r.1),
            "monthly_usd": monthly(self.ratio()),
            "monthly_usd_uncompressed_replication": monthly(1.0),
            "tables": tables,
        })
    }

    /// The human-readable report.
    pub fn to_text(&self, args: &EstimateArgs) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let mb = |b: f64| b / 1e6;
        let _ = writeln!(
            s,
            "binlog: {:.1} MB in {} file(s); mode {}, compaction {}, batch {} MB, zstd {}",
            mb(self.raw_bytes as f64),
            args.files.len(),
            if args.mode == Mode::Replica {
                "replica"
            } else {
                "full"
            },
            if args.compaction == Switch::On {
                "on"
            } else {
                "off"
            },
            args.batch_mb,
            args.level
        );
        let _ = writeln!(
            s,
            "wire:   {:.2} MB in {} frames = {:.2}% of the binlog",
            mb(self.stats.wire_bytes as f64),
            self.stats.frames,
            100.0 * self.ratio()
        );
        let _ = writeln!(
            s,
            "rows:   {} row changes read, {} shipped, {} transactions; {:.0} MB/s of binlog",
            self.stats.rows_in,
            self.stats.changes_out,
            self.stats.transactions,
            self.mb_per_s()
        );
        let _ = writeln!(
            s,
            "\n{:<40} {:>10} {:>10} {:>12} {:>12} {:>7}",
            "table", "rows in", "shipped", "binlog MB", "wire MB", "wire %"
        );
        let mut keyless = Vec::new();
        for (name, t) in self.tables() {
            let pct = if t.binlog_bytes == 0 {
                0.0
            } else {
                100.0 * t.wire_bytes / t.binlog_bytes as f64
            };
            let _ = writeln!(
                s,
                "{:<40} {:>10} {:>10} {:>12.2} {:>12.3} {:>6.1}%",
                name,
                t.rows_in,
                t.changes_out,
                mb(t.binlog_bytes as f64),
                mb(t.wire_bytes),
                pct
            );
            if !t.primary_key {
                keyless.push(name.as_str());
            }
        }
        let _ = writeln!(
            s,
            "(a table's binlog MB counts its row events only; its wire MB is its share of each frame)"
        );
        if !keyless.is_empty() {
            let _ = writeln!(
                s,
                "\nno primary key known for: {} — shipped with whole before images; \
                 give keys with --primary-key db.table=cols or log binlog_row_metadata=FULL",
                keyless.join(", ")
            );
        }
        match self.rate(args) {
            Some((gb, src)) => {
                let _ = writeln!(s, "\nbinlog rate: {gb:.2} GB/day (from {src})");
                let _ = writeln!(
                    s,
                    "{:<8} {:>10} {:>18} {:>16}",
                    "egress", "$/GB", "replication $/mo", "outflow $/mo"
                );
                for (n, p) in Self::prices(args) {
                    let _ = writeln!(
                        s,
                        "{:<8} {:>10.3} {:>18.2} {:>16.2}",
                        n,
                        p,
                        gb * 30.0 * p,
                        gb * 30.0 * self.ratio() * p
                    );
                }
                let _ = writeln!(
                    s,
                    "(replication: the binlog's own size, as uncompressed native replication sends it)"
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "\nbinlog rate unknown (the events span under a second): pass --binlog-gb-per-day"
                );
            }
        }
        s
    }
}

/// Runs the codec over the files and returns the totals.
pub fn estimate(args: &EstimateArgs) -> anyhow::Result<Report> {
    let specs = args
        .primary_keys
        .iter()
        .map(|k| parse_key(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.batch_mb.is_nan() || args.batch_mb <= 0.0 {
        bail!("--batch-mb must be positive");
    }
    let cfg = PipelineConfig {
        mode: match args.mode {
            Mode::Replica => ImageMode::Replica,
            Mode::Full => ImageMode::Full,
        },
        compaction: args.compaction == Switch::On,
        batch_bytes: (args.batch_mb * 1e6) as u64,
        encoder: EncoderConfig {
            level: args.level,
            ..EncoderConfig::default()
        },
        keep_frames: false,
        // As the relay would: a statement-based change stops the estimate, naming it.
        ..PipelineConfig::default()
    };
    let filter = outflow_source::Filter::new(&args.filters.resolve()?)?;
    let mut pipeline = Pipeline::new(cfg)?;
    pipeline.set_columns(std::sync::Arc::new(filter.clone()));
    let mut walker = Walker::new();
    if !specs.is_empty() {
        walker
            .decoder()
            .set_table_hook(Box::new(move |t: &mut TableInfo| apply_keys(&specs, t)));
    }
    let started = Instant::now();
    let mut raw_bytes = 0;
    for path in &args.files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        pipeline.set_file(&name);
        let mut filtered = Filtered {
            tables: outflow_source::TableFilterCache::new(filter.clone()),
            pipeline: &mut pipeline,
        };
        raw_bytes += crate::inspect::walk_file(path, &mut walker, &mut filtered)?;
        if let Some(i) = walker.incidents().first() {
            bail!(
                "{}: INCIDENT at {}: the source lost changes ({})",
                path.display(),
                i.pos,
                i.message
            );
        }
    }
    pipeline.flush()?;
    if walker.decoder().in_transaction() {
        bail!("the last file ends inside a transaction; its changes were not counted");
    }
    Ok(Report {
        raw_bytes,
        stats: pipeline.stats().clone(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_specs_parse() {
        let k = parse_key("sbtest.sbtest1=id").unwrap();
        assert_eq!((k.db.as_str(), k.table.as_str()), ("sbtest", "sbtest1"));
        assert_eq!(k.cols, ["id"]);
        assert!(parse_key("nodot=1").is_err());
        assert!(parse_key("a.b").is_err());
        assert!(parse_key("a.b=1,").is_err());
    }
}
