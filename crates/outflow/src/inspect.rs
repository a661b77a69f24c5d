//! `outflow inspect`: decode binlog files offline, print one JSON line per row change, or
//! with `--stats` decode everything and print counts and throughput.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use outflow_binlog::walk::{RowsContext, Visitor, Walker};
use outflow_binlog::{
    event_type, DecodeError, Decoded, EventBuffer, RowIter, RowsEvent, TableInfo,
};

use outflow_binlog::Value;
use outflow_codec::{binlog_mask_text, schema_of};
use outflow_core::TableSchema;
use outflow_source::filter::{ColumnAction, ColumnPlan, Filter, TableFilterCache};

use crate::json::{push_str, push_value};

/// Bytes read from the file per system call.
const READ_CHUNK: usize = 8 << 20;

/// Reads `path` and feeds every event to `walker`/`visitor`. Returns the bytes read.
pub fn walk_file<V>(path: &Path, walker: &mut Walker, visitor: &mut V) -> anyhow::Result<u64>
where
    V: Visitor,
    V::Error: Into<anyhow::Error>,
{
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = EventBuffer::new(0);
    let mut magic = false;
    let mut total = 0u64;
    loop {
        let spare = buf.spare(READ_CHUNK);
        let n = file
            .read(spare)
            .with_context(|| format!("reading {}", path.display()))?;
        buf.commit(n);
        total += n as u64;
        if !magic {
            magic = buf
                .take_magic()
                .with_context(|| format!("{}", path.display()))?;
            if !magic && n > 0 {
                continue;
            }
        }
        while let Some((pos, ev)) = buf
            .next_event()
            .with_context(|| format!("{}", path.display()))?
        {
            walker
                .process(pos, ev, visitor)
                .map_err(Into::into)
                .with_context(|| format!("{}", path.display()))?;
        }
        if n == 0 {
            if !magic {
                anyhow::bail!("{}: empty file, not a binlog", path.display());
            }
            buf.finish()
                .with_context(|| format!("{}", path.display()))?;
            return Ok(total);
        }
    }
}

/// Prints each row change as one JSON line (`inspect`, and `tail` for a live stream).
pub struct JsonLines<W: Write> {
    out: W,
    file: String,
    line: String,
    scratch: String,
    rows: u64,
    limit: u64,
    filters: Option<TableFilterCache>,
    /// Per table id: the column plan and the schema masked values take their text from.
    masks: HashMap<u64, (Arc<ColumnPlan>, TableSchema)>,
    mask_in: Vec<u8>,
    mask_out: String,
}

impl<W: Write> JsonLines<W> {
    /// Writes to `out`, labelling lines with `file`.
    pub fn new(out: W, file: &str) -> Self {
        JsonLines {
            out,
            file: file.to_string(),
            line: String::with_capacity(4096),
            scratch: String::new(),
            rows: 0,
            limit: u64::MAX,
            filters: None,
            masks: HashMap::new(),
            mask_in: Vec::new(),
            mask_out: String::new(),
        }
    }

    /// Prints only the tables `filter` wants, without its excluded columns and with its
    /// masked columns as their hash, as the relay ships them.
    pub fn set_filter(&mut self, filter: Filter) {
        self.filters = Some(TableFilterCache::new(filter));
        self.masks.clear();
    }

    /// Labels the following lines with `file` (a live stream moves to the next binlog file).
    pub fn set_file(&mut self, file: &str) {
        if self.file != file {
            file.clone_into(&mut self.file);
        }
    }

    /// Prints at most `limit` row changes in total; the rest are skipped.
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// Row changes printed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Flushes the writer.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    fn push_image(
        &mut self,
        table: &TableInfo,
        plan: Option<&ColumnPlan>,
        row: Option<outflow_binlog::Row<'_>>,
        pos: u64,
    ) -> Result<(), anyhow::Error> {
        let Some(row) = row else {
            self.line.push_str("null");
            return Ok(());
        };
        self.line.push('{');
        let mut first = true;
        for item in row.values() {
            let (i, v) = item.map_err(|kind| DecodeError {
                pos,
                event_type: None,
                kind,
            })?;
            let action = plan.map_or(ColumnAction::Keep, |p| p.action(i));
            if action == ColumnAction::Exclude {
                continue;
            }
            if !first {
                self.line.push(',');
            }
            first = false;
            let col = &table.columns[i];
            match (&col.name, table.has_names) {
                (Some(n), true) => push_str(&mut self.line, n),
                _ => {
                    let _ = write!(self.line, "\"@{}\"", i + 1);
                }
            }
            self.line.push(':');
            match (action, self.masks.get(&table.table_id), &self.filters) {
                (ColumnAction::Mask, Some((_, schema)), Some(f)) if v != Value::Null => {
                    let c = &schema.columns[i];
                    binlog_mask_text(&v, c, &mut self.scratch, &mut self.mask_in).map_err(|e| {
                        anyhow::anyhow!("`{}` column {}: {e}", table.qualified_name(), i + 1)
                    })?;
                    f.filter().mask_into(&self.mask_in, &mut self.mask_out);
                    push_str(&mut self.line, &self.mask_out);
                }
                _ => push_value(&mut self.line, &v, col, &mut self.scratch),
            }
        }
        self.line.push('}');
        Ok(())
    }
}

impl<W: Write> Visitor for JsonLines<W> {
    type Error = anyhow::Error;

    fn wants(&mut self, table: &TableInfo) -> bool {
        self.filters.as_mut().is_none_or(|f| f.wants(table))
    }

    fn rows(
        &mut self,
        ctx: RowsContext<'_>,
        event: &RowsEvent<'_>,
        table: &TableInfo,
        rows: RowIter<'_>,
    ) -> anyhow::Result<()> {
        // The column plan is decided once per table definition; the schema masked values
        // need is derived only when the plan changes.
        let plan = match self.filters.as_mut() {
            Some(f) => {
                let plan = f.on_table_map(table).columns.clone();
                let fresh = match self.masks.get(&table.table_id) {
                    Some((p, _)) => !Arc::ptr_eq(p, &plan),
                    None => true,
                };
                if fresh && plan.actions.contains(&ColumnAction::Mask) {
                    self.masks
                        .insert(table.table_id, (plan.clone(), schema_of(table)));
                }
                Some(plan).filter(|p| !p.is_identity())
            }
            None => None,
        };
        for change in rows {
            if self.rows >= self.limit {
                break;
            }
            let change = change.map_err(|kind| DecodeError {
                pos: ctx.pos,
                event_type: None,
                kind,
            })?;
            self.line.clear();
            self.line.push_str("{\"file\":");
            push_str(&mut self.line, &self.file);
            let _ = write!(self.line, ",\"pos\":{},\"gtid\":", ctx.pos);
            match ctx.gtid {
                outflow_binlog::walk::CurrentGtid::None => self.line.push_str("null"),
                g => {
                    let _ = write!(self.line, "\"{g}\"");
                }
            }
            let _ = write!(self.line, ",\"ts\":{},\"db\":", ctx.timestamp);
            push_str(&mut self.line, &table.schema);
            self.line.push_str(",\"table\":");
            push_str(&mut self.line, &table.table);
            let _ = write!(
                self.line,
                ",\"op\":\"{}\",\"before\":",
                event.kind.op_name()
            );
            self.push_image(table, plan.as_deref(), change.before, ctx.pos)?;
            self.line.push_str(",\"after\":");
            self.push_image(table, plan.as_deref(), change.after, ctx.pos)?;
            self.line.push_str("}\n");
            self.out.write_all(self.line.as_bytes())?;
            self.rows += 1;
        }
        Ok(())
    }
}

/// Decodes every value of every row and counts what it saw.
#[derive(Default)]
pub struct Stats {
    /// Events by type code (indexed by the code).
    pub events: Vec<u64>,
    /// Row changes per table: `db.table` and counts indexed by [`op_index`].
    pub tables: Vec<(String, [u64; 3])>,
    /// Values decoded.
    pub values: u64,
    /// Total row changes.
    pub total_rows: u64,
    /// Table id of the last row event and its slot in `tables`: table ids repeat for long
    /// runs, so this avoids a map lookup per event.
    last: Option<(u64, usize)>,
    render: String,
}

/// Whether `name` is `db.table` of `table`, without building the string.
fn is_name_of(name: &str, table: &TableInfo) -> bool {
    name.len() == table.schema.len() + 1 + table.table.len()
        && name.starts_with(table.schema.as_str())
        && name.ends_with(table.table.as_str())
        && name.as_bytes()[table.schema.len()] == b'.'
}

/// Index of an operation in a [`Stats`] counter array.
fn op_index(kind: outflow_binlog::RowsKind) -> usize {
    match kind {
        outflow_binlog::RowsKind::Write => 0,
        outflow_binlog::RowsKind::Update => 1,
        outflow_binlog::RowsKind::Delete => 2,
    }
}

impl Visitor for Stats {
    type Error = DecodeError;

    fn event(&mut self, _pos: u64, ev: &Decoded<'_>) -> Result<(), DecodeError> {
        if self.events.is_empty() {
            self.events.resize(256, 0);
        }
        self.events[usize::from(ev.header.type_code)] += 1;
        Ok(())
    }

    fn rows(
        &mut self,
        ctx: RowsContext<'_>,
        event: &RowsEvent<'_>,
        table: &TableInfo,
        rows: RowIter<'_>,
    ) -> Result<(), DecodeError> {
        let err = |kind| DecodeError {
            pos: ctx.pos,
            event_type: None,
            kind,
        };
        let (n, values) = rows.decode_all(&mut self.render).map_err(err)?;
        self.values += values;
        self.total_rows += n;
        // Counted per event, not per row; a name is formatted once per table id.
        let slot = match self.last {
            Some((id, slot)) if id == table.table_id && is_name_of(&self.tables[slot].0, table) => {
                slot
            }
            _ => {
                let name = table.qualified_name();
                let slot = match self.tables.iter().position(|(t, _)| *t == name) {
                    Some(i) => i,
                    None => {
                        self.tables.push((name, [0; 3]));
                        self.tables.len() - 1
                    }
                };
                self.last = Some((table.table_id, slot));
                slot
            }
        };
        self.tables[slot].1[op_index(event.kind)] += n;
        Ok(())
    }
}

impl Stats {
    /// Prints the report.
    pub fn print(
        &self,
        out: &mut impl Write,
        files: usize,
        bytes: u64,
        secs: f64,
    ) -> std::io::Result<()> {
        let events: u64 = self.events.iter().sum();
        let mbs = bytes as f64 / 1e6 / secs.max(1e-9);
        writeln!(
            out,
            "files: {files}  bytes: {bytes}  events: {events}  rows: {}  values: {}",
            self.total_rows, self.values
        )?;
        writeln!(
            out,
            "elapsed: {secs:.3} s  throughput: {mbs:.1} MB/s  {:.0} rows/s",
            self.total_rows as f64 / secs.max(1e-9)
        )?;
        writeln!(out, "events by type:")?;
        for (t, n) in self.events.iter().enumerate().filter(|(_, n)| **n > 0) {
            writeln!(out, "  {:<28} {n}", event_type::name(t as u8))?;
        }
        writeln!(out, "rows by table and op:")?;
        let mut tables: Vec<_> = self.tables.iter().collect();
        tables.sort();
        for (table, counts) in tables {
            for (op, n) in ["insert", "update", "delete"].iter().zip(counts) {
                if *n > 0 {
                    writeln!(out, "  {table:<40} {op:<7} {n}")?;
                }
            }
        }
        Ok(())
    }
}

/// Runs `inspect` over `files`. Every file is decoded to the end; INCIDENT events (the
/// server lost changes there) are then reported together as an error.
pub fn run(files: &[std::path::PathBuf], stats: bool) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut incidents = Vec::new();
    let mut note = |f: &Path, w: &Walker| {
        for i in w.incidents() {
            incidents.push(format!(
                "{}: binlog position {}: INCIDENT {} recorded by the server, changes may be missing: {}",
                f.display(),
                i.pos,
                i.code,
                i.message
            ));
        }
    };
    if stats {
        let mut s = Stats::default();
        let start = Instant::now();
        let mut bytes = 0;
        for f in files {
            let mut walker = Walker::new();
            bytes += walk_file(f, &mut walker, &mut s)?;
            note(f, &walker);
        }
        let secs = start.elapsed().as_secs_f64();
        s.print(&mut stdout.lock(), files.len(), bytes, secs)?;
    } else {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        for f in files {
            let mut walker = Walker::new();
            let mut v = JsonLines::new(&mut out, &f.display().to_string());
            walk_file(f, &mut walker, &mut v)?;
            note(f, &walker);
        }
        out.flush()?;
    }
    if !incidents.is_empty() {
        anyhow::bail!("{}", incidents.join("\n"));
    }
    Ok(())
}
