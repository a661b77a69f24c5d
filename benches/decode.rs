//! Decode throughput of a whole binlog file: outflow-binlog against the two Rust peers,
//! `mysql_common` (the decoder under mysql_async) and `mysql_cdc`, on the same bytes.
//!
//! Run with `cargo bench --bench decode`. The input is a sysbench `oltp_write_only` binlog
//! from MariaDB (ROW, FULL images, annotate_rows on, CRC32), generated on first use and
//! cached (see `support`); `OUTFLOW_BENCH_BINLOG=/path/to/binlog` measures another file.
//!
//! Every decoder does the same work: frame every event, decode every value of every row
//! into a value, and count row changes; the counts must agree. The file is read into
//! memory before timing. Each peer gets the bytes the cheapest way its public API allows:
//! - outflow copies the file into its `EventBuffer` in 8 MiB pieces, as `outflow inspect`
//!   does with `read`, and verifies CRC32 (its default; a second line has it off, because
//!   neither peer verifies checksums);
//! - mysql_common's `EventStreamReader` reads from the in-memory slice (it copies each
//!   event into a `Vec` of its own);
//! - mysql_cdc's `BinlogReader` only takes a `File`, and would cost two system calls per
//!   event, so its loop is repeated here over the slice with the same public parts
//!   (`EventHeader::parse`, `EventParser::parse_event`), without even the copy it makes.
//!
//! Neither peer knows MariaDB's own event types (GTID, ANNOTATE_ROWS, GTID_LIST,
//! BINLOG_CHECKPOINT): mysql_common returns no data for them and mysql_cdc an
//! `UnknownEvent` or a light parse; they carry no rows, so row counts still compare.
//!
//! After criterion, one more timed pass per decoder on a single thread prints a plain table
//! (MB/s, rows/s, speed relative to outflow), and an untimed pass counts heap allocations.

mod alloc_count;
mod support;

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use criterion::{Criterion, SamplingMode, Throughput};
use outflow_binlog::walk::{RowsContext, Visitor, Walker};
use outflow_binlog::{DecodeError, EventBuffer, RowIter, RowsEvent, TableInfo, Value};

/// Bytes handed to outflow's `EventBuffer` at a time: the read size of `outflow inspect`.
const CHUNK: usize = 8 << 20;

const MAGIC: [u8; 4] = [0xfe, b'b', b'i', b'n'];

#[global_allocator]
static GLOBAL: alloc_count::CountingAlloc = alloc_count::CountingAlloc;

/// What a decoder saw. Besides the row count the decoders must agree on, a few sums over
/// the values show that each really decoded them (and keep the optimiser from skipping it).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    /// Row changes (an update is one, with two images).
    rows: u64,
    /// Values in all images, NULLs included.
    values: u64,
    nulls: u64,
    /// Wrapping sum of integer values as u64.
    int_sum: u64,
    /// Total length of string and byte values.
    text_bytes: u64,
}

type Decode = fn(&[u8]) -> Result<Tally>;

/// The decoders, in the order of the report; the first is the reference for ratios.
const DECODERS: [(&str, Decode); 5] = [
    ("outflow", outflow_checked),
    ("outflow, CRC32 off", outflow_unchecked),
    ("mysql_common", mysql_common),
    ("mysql_cdc", mysql_cdc),
    ("mysql_cdc, file reader", mysql_cdc_file),
];

/// The input file, for decoders that read a file themselves rather than bytes.
static INPUT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn main() -> Result<()> {
    let input = support::binlog()?;
    INPUT.get_or_init(|| input.path.clone());
    let data =
        std::fs::read(&input.path).with_context(|| format!("reading {}", input.path.display()))?;
    ensure!(
        data.starts_with(&MAGIC),
        "{} is not a binlog file",
        input.path.display()
    );
    let len = data.len() as u64;

    // Untimed check that all decoders read the same file the same way, before any figure
    // is worth printing.
    let mut reference = None;
    for (name, decode) in DECODERS {
        let t = decode(&data).with_context(|| format!("{name} failed"))?;
        let r = *reference.get_or_insert(t);
        ensure!(
            t.rows == r.rows,
            "{name} saw {} row changes, outflow {}",
            t.rows,
            r.rows
        );
        if t != r {
            println!("note: {name} tallies differ from outflow's: {t:?} vs {r:?}");
        }
    }
    let Some(reference) = reference else {
        bail!("no decoders");
    };
    println!(
        "input: {} ({}): {:.1} MB, {} row changes, {} values",
        input.path.display(),
        input.origin,
        len as f64 / 1e6,
        reference.rows,
        reference.values
    );

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    {
        let mut group = c.benchmark_group("decode");
        // One pass takes a good fraction of a second: flat sampling runs the same count
        // per sample instead of 1, 2, ... 10 passes, which would take minutes per decoder.
        group.sampling_mode(SamplingMode::Flat);
        group.throughput(Throughput::Bytes(len));
        for (name, decode) in DECODERS {
            group.bench_function(name, |b| {
                // The check above decoded these bytes with this decoder without error.
                b.iter(|| decode(black_box(&data)).expect("decoded once already"))
            });
        }
        group.finish();
    }
    c.final_summary();

    summary(&data, reference.rows)
}

/// One more timed pass per decoder, then an allocation count, printed as a plain table.
fn summary(data: &[u8], rows: u64) -> Result<()> {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "\n{:<20} {:>9} {:>12} {:>11} {:>11}",
        "decoder", "MB/s", "rows/s", "vs outflow", "allocs/row"
    );
    let mut outflow_secs = None;
    for (name, decode) in DECODERS {
        let start = Instant::now();
        black_box(decode(black_box(data))?);
        let secs = start.elapsed().as_secs_f64();
        let base = *outflow_secs.get_or_insert(secs);

        alloc_count::start();
        let counted = decode(data);
        alloc_count::stop();
        counted?;
        let allocs = alloc_count::count();

        let _ = writeln!(
            table,
            "{name:<20} {:>9.1} {:>12.0} {:>10.2}x {:>11.2}",
            data.len() as f64 / 1e6 / secs,
            rows as f64 / secs,
            base / secs,
            allocs as f64 / rows.max(1) as f64
        );
    }
    print!("{table}");
    Ok(())
}

fn outflow_checked(data: &[u8]) -> Result<Tally> {
    Ok(outflow(data, true)?)
}

fn outflow_unchecked(data: &[u8]) -> Result<Tally> {
    Ok(outflow(data, false)?)
}

fn outflow(data: &[u8], verify_checksums: bool) -> Result<Tally, DecodeError> {
    let mut buf = EventBuffer::new(0);
    let mut walker = Walker::new();
    walker.decoder().set_verify_checksums(verify_checksums);
    let mut visitor = EveryValue::default();
    let mut magic = false;
    for piece in data.chunks(CHUNK) {
        buf.extend(piece);
        if !magic {
            magic = buf.take_magic()?;
            if !magic {
                continue;
            }
        }
        while let Some((pos, event)) = buf.next_event()? {
            walker.process(pos, event, &mut visitor)?;
        }
    }
    buf.finish()?;
    Ok(visitor.tally)
}

/// Decodes every value of every row; renders decimals and JSON to text as
/// `outflow inspect --stats` does, since the peers hand those out as text.
#[derive(Default)]
struct EveryValue {
    tally: Tally,
    render: String,
}

impl Visitor for EveryValue {
    type Error = DecodeError;

    fn rows(
        &mut self,
        ctx: RowsContext<'_>,
        _event: &RowsEvent<'_>,
        _table: &TableInfo,
        rows: RowIter<'_>,
    ) -> Result<(), DecodeError> {
        let err = |kind| DecodeError {
            pos: ctx.pos,
            event_type: None,
            kind,
        };
        let t = &mut self.tally;
        for change in rows {
            let change = change.map_err(err)?;
            for row in [change.before, change.after].into_iter().flatten() {
                for v in row.values() {
                    let (_, v) = v.map_err(err)?;
                    t.values += 1;
                    match v {
                        Value::Null => t.nulls += 1,
                        Value::Int(i) => t.int_sum = t.int_sum.wrapping_add(i as u64),
                        Value::UInt(u) => t.int_sum = t.int_sum.wrapping_add(u),
                        Value::Text(s) | Value::Bytes(s) => t.text_bytes += s.len() as u64,
                        other => {
                            other.render_text(&mut self.render).map_err(|error| {
                                err(outflow_binlog::ErrorKind::Value {
                                    table: String::new(),
                                    column: 0,
                                    error,
                                })
                            })?;
                        }
                    }
                }
            }
            t.rows += 1;
        }
        Ok(())
    }
}

fn mysql_common(data: &[u8]) -> Result<Tally> {
    use mysql_common::binlog::consts::{BinlogVersion, EventType};
    use mysql_common::binlog::events::EventData;
    use mysql_common::binlog::EventStreamReader;
    use mysql_common::Value as V;

    let mut input = &data[MAGIC.len()..];
    let mut reader = EventStreamReader::new(BinlogVersion::Version4);
    let mut t = Tally::default();
    while let Some(event) = reader.read(&mut input)? {
        // The reader has parsed each TABLE_MAP into its cache already, where a consumer
        // finds it (`get_tme`); parsing it again would charge mysql_common twice.
        if event.header().event_type_raw() == EventType::TABLE_MAP_EVENT as u8 {
            continue;
        }
        // `None` for event types it does not know, MariaDB's among them.
        let Some(EventData::RowsEvent(rows)) = event.read_data()? else {
            continue;
        };
        let table_id = rows.table_id();
        let tme = reader
            .get_tme(table_id)
            .with_context(|| format!("mysql_common: no TABLE_MAP for table id {table_id}"))?;
        for change in rows.rows(tme) {
            let (before, after) = change?;
            for row in [before, after].into_iter().flatten() {
                for v in row.unwrap() {
                    // The conversion a consumer needs; it renders JSON to text.
                    t.values += 1;
                    match V::try_from(v)? {
                        V::NULL => t.nulls += 1,
                        V::Int(i) => t.int_sum = t.int_sum.wrapping_add(i as u64),
                        V::UInt(u) => t.int_sum = t.int_sum.wrapping_add(u),
                        V::Bytes(b) => t.text_bytes += b.len() as u64,
                        _ => {}
                    }
                }
            }
            t.rows += 1;
        }
    }
    Ok(t)
}

/// Adds the row changes of one mysql_cdc event to `t`, converting every cell.
fn tally_cdc_event(event: mysql_cdc::events::binlog_event::BinlogEvent, t: &mut Tally) {
    use mysql_cdc::events::binlog_event::BinlogEvent;
    use mysql_cdc::events::row_events::mysql_value::MySqlValue as V;
    let cells = |row: &[Option<V>], t: &mut Tally| {
        for cell in row {
            t.values += 1;
            let int = |t: &mut Tally, v: u64| t.int_sum = t.int_sum.wrapping_add(v);
            match cell {
                None => t.nulls += 1,
                Some(V::TinyInt(v)) => int(t, u64::from(*v)),
                Some(V::SmallInt(v)) => int(t, u64::from(*v)),
                Some(V::MediumInt(v)) | Some(V::Int(v)) => int(t, u64::from(*v)),
                Some(V::BigInt(v)) => int(t, *v),
                Some(V::String(s)) => t.text_bytes += s.len() as u64,
                Some(V::Blob(b)) => t.text_bytes += b.len() as u64,
                Some(_) => {}
            }
        }
    };
    match event {
        BinlogEvent::WriteRowsEvent(e) => {
            for row in &e.rows {
                cells(&row.cells, t);
                t.rows += 1;
            }
        }
        BinlogEvent::DeleteRowsEvent(e) => {
            for row in &e.rows {
                cells(&row.cells, t);
                t.rows += 1;
            }
        }
        BinlogEvent::UpdateRowsEvent(e) => {
            for row in &e.rows {
                cells(&row.before_update.cells, t);
                cells(&row.after_update.cells, t);
                t.rows += 1;
            }
        }
        _ => {}
    }
}

/// mysql_cdc's parser over the bytes in memory: its best case, without the two read calls
/// per event its `BinlogReader` makes.
fn mysql_cdc(data: &[u8]) -> Result<Tally> {
    use mysql_cdc::events::event_header::EventHeader;
    use mysql_cdc::events::event_parser::EventParser;

    /// The common event header, as `BinlogReader` reads it.
    const HEADER: usize = 19;
    // mysql_cdc's error type implements neither Display nor std::error::Error.
    let cdc = |e: mysql_cdc::errors::Error| anyhow::anyhow!("mysql_cdc: {e:?}");

    let mut parser = EventParser::new();
    let mut rest = &data[MAGIC.len()..];
    let mut t = Tally::default();
    while !rest.is_empty() {
        ensure!(rest.len() >= HEADER, "mysql_cdc: truncated event header");
        let header = EventHeader::parse(&rest[..HEADER]).map_err(cdc)?;
        let len = header.event_length as usize;
        ensure!(
            (HEADER..=rest.len()).contains(&len),
            "mysql_cdc: bad event length {len}"
        );
        let event = parser
            .parse_event(&header, &rest[HEADER..len])
            .map_err(cdc)?;
        rest = &rest[len..];
        tally_cdc_event(event, &mut t);
    }
    Ok(t)
}

/// mysql_cdc as its users read a binlog file: its `BinlogReader` over a `File` (the file
/// is in the page cache after the first pass).
fn mysql_cdc_file(_data: &[u8]) -> Result<Tally> {
    let path = INPUT.get().context("input path not set")?;
    let reader = mysql_cdc::binlog_reader::BinlogReader::new(std::fs::File::open(path)?)
        .map_err(|e| anyhow::anyhow!("mysql_cdc: {e:?}"))?;
    let mut t = Tally::default();
    for ev in reader {
        let (_, event) = ev.map_err(|e| anyhow::anyhow!("mysql_cdc: {e:?}"))?;
        tally_cdc_event(event, &mut t);
    }
    Ok(t)
}
