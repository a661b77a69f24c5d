//! `outflow verify`: compare tables between a source and a target server (chunked checksums,
//! then a row diff of the chunks that differ; see `outflow_sink::verify` for the method) and
//! print the differences. Exit status: 0 when every table matches, 1 when there are
//! differences, 2 when the comparison itself failed.

use std::io::Write;
use std::num::NonZeroU64;

use anyhow::Context;
use mysql_async::{Opts, OptsBuilder, Pool};
use outflow_sink::verify::{
    verify, Difference, KeyKind, RowDiffKind, Side, TableName, TableReport, VerifyOptions,
};

/// Environment variables that supply a password the URL leaves out, so that it need not
/// appear on a command line.
const SOURCE_PASSWORD_ENV: &str = "OUTFLOW_SOURCE_PASSWORD";
const TARGET_PASSWORD_ENV: &str = "OUTFLOW_TARGET_PASSWORD";

/// `outflow verify` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {
    /// Source server, `mysql://user[:password]@host:port`. Without a password in the URL,
    /// `OUTFLOW_SOURCE_PASSWORD` is used if set.
    #[arg(long)]
    pub source: String,
    /// Target server URL. Without a password in the URL, `OUTFLOW_TARGET_PASSWORD` is used
    /// if set.
    #[arg(long)]
    pub target: String,
    /// Tables to compare, `db.table,...`; default: every base table on either side outside
    /// the system schemas and `outflow`.
    #[arg(long, value_delimiter = ',')]
    pub tables: Vec<TableName>,
    /// Source rows per checksum chunk.
    #[arg(long, default_value_t = NonZeroU64::new(1000).unwrap_or(NonZeroU64::MIN))]
    pub chunk_rows: NonZeroU64,
    /// Differing rows per table to describe; the rest are counted.
    #[arg(long, default_value_t = 100)]
    pub max_diffs: usize,
    /// Print the values of differing rows, not only their keys (values may be secret).
    #[arg(long)]
    pub show_values: bool,
}

/// Runs the command and returns the exit status: 0 clean, 1 differences, 2 error.
pub fn main(args: &VerifyArgs) -> i32 {
    let mut out = std::io::stdout().lock();
    let code = match run(args, &mut out) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(error) => {
            let _ = out.flush();
            eprintln!("error: {}", error_text(&error));
            2
        }
    };
    // The caller exits the process at once, without flushing anything itself.
    let _ = out.flush();
    code
}

/// The error and its causes on one line, leaving out a cause whose text an outer message
/// already contains (the driver's I/O errors repeat their inner error in their own text).
fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if !text.contains(&message) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&message);
        }
    }
    text
}

/// Compares and prints a report to `out`; returns whether every table matched.
pub fn run(args: &VerifyArgs, out: &mut dyn Write) -> anyhow::Result<bool> {
    let source = opts_from(&args.source, SOURCE_PASSWORD_ENV).context("--source")?;
    let target = opts_from(&args.target, TARGET_PASSWORD_ENV).context("--target")?;
    let options = VerifyOptions {
        tables: args.tables.clone(),
        chunk_rows: args.chunk_rows,
        max_diffs: args.max_diffs,
        show_values: args.show_values,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let (source, target) = (Pool::new(source), Pool::new(target));
        let mut write_error = None;
        let result = verify(&source, &target, &options, |report| {
            if write_error.is_none() {
                write_error = print_table(out, report, &options).err();
            }
        })
        .await;
        let _ = source.disconnect().await;
        let _ = target.disconnect().await;
        let reports = result?;
        if let Some(error) = write_error {
            return Err(anyhow::Error::from(error).context("writing the report"));
        }
        let differing: Vec<&TableReport> = reports.iter().filter(|r| !r.is_clean()).collect();
        let count: u64 = differing.iter().map(|r| r.difference_count()).sum();
        writeln!(
            out,
            "verify: {} tables compared, {} with differences, {count} differences",
            reports.len(),
            differing.len()
        )?;
        Ok(differing.is_empty())
    })
}

/// Connection options from a URL, with the password from `password_env` when the URL has
/// none.
fn opts_from(url: &str, password_env: &str) -> anyhow::Result<Opts> {
    // The URL may carry a password: the parse error must not echo it.
    let opts = Opts::from_url(url).map_err(|e| anyhow::anyhow!("invalid URL: {e}"))?;
    if opts.pass().is_some() {
        return Ok(opts);
    }
    match std::env::var(password_env) {
        Ok(password) => Ok(OptsBuilder::from_opts(opts).pass(Some(password)).into()),
        Err(_) => Ok(opts),
    }
}

fn print_table(
    out: &mut dyn Write,
    report: &TableReport,
    opts: &VerifyOptions,
) -> std::io::Result<()> {
    let key = match &report.key {
        KeyKind::Primary => "PRIMARY KEY".to_string(),
        KeyKind::Unique(name) => format!("unique key {name}"),
        KeyKind::None => "no key: whole-table checksum".to_string(),
    };
    if report.is_clean() {
        return writeln!(
            out,
            "{}: ok ({} rows, {} chunks, {key})",
            report.table, report.source_rows, report.chunks
        );
    }
    writeln!(
        out,
        "{}: {} differences (source {} rows, target {} rows; {} of {} chunks differ; {key})",
        report.table,
        report.difference_count(),
        report.source_rows,
        report.target_rows,
        report.differing_chunks,
        report.chunks
    )?;
    for diff in &report.differences {
        match diff {
            Difference::TableMissing { missing_on } => {
                writeln!(out, "  table missing on the {missing_on}")?;
            }
            Difference::Columns { source, target } => {
                writeln!(out, "  columns differ:")?;
                writeln!(out, "    source: {}", source.join(", "))?;
                writeln!(out, "    target: {}", target.join(", "))?;
            }
            Difference::Row(row) => {
                let key: Vec<String> = row.key.iter().map(|(c, v)| format!("{c}={v}")).collect();
                let key = key.join(", ");
                match row.kind {
                    RowDiffKind::Changed => {
                        writeln!(out, "  changed ({key}): {}", row.changed.join(", "))?;
                        if let (Some(s), Some(t)) = (&row.source_values, &row.target_values) {
                            for (i, column) in report.columns.iter().enumerate() {
                                if row.changed.contains(column) {
                                    let (a, b) = (&s[i], &t[i]);
                                    writeln!(out, "    {column}: source {a} | target {b}")?;
                                }
                            }
                        }
                    }
                    RowDiffKind::MissingOnTarget => {
                        writeln!(out, "  missing on target ({key})")?;
                        print_values(out, &report.columns, row.source_values.as_deref())?;
                    }
                    RowDiffKind::ExtraOnTarget => {
                        writeln!(out, "  extra on target ({key})")?;
                        print_values(out, &report.columns, row.target_values.as_deref())?;
                    }
                }
            }
            Difference::Count(count) => {
                writeln!(
                    out,
                    "  row {} occurs {} times on the {}, {} on the {}",
                    count.hash,
                    count.source_count,
                    Side::Source,
                    count.target_count,
                    Side::Target
                )?;
                print_values(out, &report.columns, count.values.as_deref())?;
            }
        }
    }
    if report.more_differences > 0 {
        writeln!(
            out,
            "  ... and {} more differing rows (raise --max-diffs to see them)",
            report.more_differences
        )?;
    }
    if !opts.show_values
        && report
            .differences
            .iter()
            .any(|d| matches!(d, Difference::Count(_)))
    {
        writeln!(out, "  (--show-values prints the rows)")?;
    }
    Ok(())
}

fn print_values(
    out: &mut dyn Write,
    columns: &[String],
    values: Option<&[String]>,
) -> std::io::Result<()> {
    if let Some(values) = values {
        let pairs: Vec<String> = columns
            .iter()
            .zip(values)
            .map(|(c, v)| format!("{c}={v}"))
            .collect();
        writeln!(out, "    {}", pairs.join(", "))?;
    }
    Ok(())
}
