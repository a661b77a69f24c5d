//! Table verification: compare tables between a source and a target server by chunked
//! checksums, then diff the rows of the chunks that differ.
//!
//! # Row hash
//! For each row the server computes `MD5(CONCAT(f(c1), f(c2), ...))` over the compared
//! columns, where `f(c) = IFNULL(CONCAT(LENGTH(CAST(c AS BINARY)), ':', CAST(c AS BINARY)), '-')`.
//! The length prefix makes the concatenation injective: no separator inside a value can
//! shift a boundary, NULL (`-`) differs from every non-NULL value (which starts with a digit),
//! and the empty string (`0:`) differs from NULL. `CAST(c AS BINARY)` takes each value in its
//! own character set, so no collation is ever mixed and a change of character set shows up.
//! What the cast compares, per type: integers and DECIMAL(65,30) by their exact text; BIT and
//! BINARY/BLOB by their bytes (zero bytes included); strings by their bytes; dates and times
//! by their text at the column's precision (zero dates included); TIMESTAMP in UTC, because
//! both sessions run with `time_zone = '+00:00'`; DOUBLE by the server's text form (the
//! shortest text that reads back as the same value), and FLOAT as a DOUBLE, because FLOAT's
//! own text form keeps only 6 significant digits.
//!
//! # Chunk checksum
//! A chunk's checksum is `COUNT(*)` and the exact `SUM` (a DECIMAL) of the first 64 bits of
//! every row hash. A sum, unlike `BIT_XOR`, does not cancel two identical rows, which matters
//! for tables without a key. Two chunks that differ collide with a chance of about 2^-64.
//!
//! # Chunks
//! The key is the PRIMARY KEY, or else the first UNIQUE key whose columns are all NOT NULL
//! (the one InnoDB would cluster on). Chunks are ranges of `chunk_rows` source rows in key
//! order, found on the source with `ORDER BY key LIMIT 1 OFFSET chunk_rows-1`; the first
//! chunk is open below and the last open above, so target rows outside the source's key
//! range are still compared. Both sides checksum the same range at the same time. Only the
//! chunks that differ are read row by row: first (key, row hash) pairs from both sides, then
//! full rows for at most `max_diffs` differing keys per table, to name the columns that
//! differ. Key values are always printed (they identify the row); other values only with
//! `show_values`.
//!
//! # Tables without a usable key
//! The whole table is one checksum. When it differs, each side groups its rows by row hash
//! (`GROUP BY` over a full scan, with a temporary table on the server) and the client
//! compares the two multisets, holding one 32-byte hash and a count per distinct row of
//! both sides. Rows are then named by their hash (and their values with `show_values`).
//!
//! # Limits
//! Each chunk is read at the moment it is compared. On a replica that is still catching up,
//! a difference may be a change in flight: verify after the replica has caught up.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Pool, Row, Value};

use crate::catalog::{load_table, CatalogColumn, CatalogTable};
use crate::sql::{ident, push_key_bytes, qualified, render_value, typed, typed_first};

/// Schemas never compared when no table list is given: the server's own, and outflow's
/// checkpoint schema (which exists on the target only).
pub const SKIPPED_SCHEMAS: &[&str] = &[
    "mysql",
    "information_schema",
    "performance_schema",
    "sys",
    "outflow",
];

/// A table named `schema.table`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    /// The database (schema).
    pub schema: String,
    /// The table.
    pub name: String,
}

impl TableName {
    /// A table name from its two parts.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableName {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// The back-quoted `` `schema`.`table` `` for SQL.
    pub fn quoted(&self) -> String {
        qualified(&self.schema, &self.name)
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

impl FromStr for TableName {
    type Err = String;

    /// Parses `db.table` (split at the first dot).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('.') {
            Some((schema, name)) if !schema.is_empty() && !name.is_empty() => {
                Ok(TableName::new(schema, name))
            }
            _ => Err(format!("{text:?} is not of the form db.table")),
        }
    }
}

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The server changes come from.
    Source,
    /// The server changes are applied to.
    Target,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Target => "target",
        })
    }
}

/// What [`verify`] compares and how much it reports.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Tables to compare; empty means every base table on either side outside
    /// [`SKIPPED_SCHEMAS`].
    pub tables: Vec<TableName>,
    /// Source rows per checksum chunk (default 1000).
    pub chunk_rows: NonZeroU64,
    /// Differing rows per table described in detail (default 100); further ones are counted.
    pub max_diffs: usize,
    /// Include non-key column values in row differences (default false: values may be
    /// secret; key values are always shown).
    pub show_values: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            tables: Vec::new(),
            chunk_rows: NonZeroU64::new(1000).unwrap_or(NonZeroU64::MIN),
            max_diffs: 100,
            show_values: false,
        }
    }
}

/// Errors of [`verify`]. Differences between the tables are not errors: they are in the
/// [`TableReport`]s.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A connection could not be opened.
    #[error("{side}: cannot connect")]
    Connect {
        /// Which server.
        side: Side,
        /// The driver's error.
        source: mysql_async::Error,
    },
    /// A query failed.
    #[error("{side}: {table}: {what} failed")]
    Query {
        /// Which server.
        side: Side,
        /// The table (`-` for queries about no particular table).
        table: String,
        /// What the query was for.
        what: &'static str,
        /// The driver's error.
        source: mysql_async::Error,
    },
    /// A table asked for by name exists on neither side.
    #[error("{table}: no such table on the source or the target")]
    NoSuchTable {
        /// The table.
        table: TableName,
    },
    /// The server answered with something this code does not understand.
    #[error("{side}: {table}: unexpected answer to {what}: {detail}")]
    Unexpected {
        /// Which server.
        side: Side,
        /// The table.
        table: String,
        /// What the query was for.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// How a table's rows were matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// By the PRIMARY KEY.
    Primary,
    /// By this UNIQUE key with NOT NULL columns.
    Unique(String),
    /// No usable key: one checksum for the whole table, rows matched by their hash.
    None,
}

/// The result of comparing one table.
#[derive(Debug, Clone)]
pub struct TableReport {
    /// The table.
    pub table: TableName,
    /// How rows were matched.
    pub key: KeyKind,
    /// The compared columns, in the source's order.
    pub columns: Vec<String>,
    /// Chunks compared.
    pub chunks: u64,
    /// Chunks whose checksums differed.
    pub differing_chunks: u64,
    /// Rows on the source.
    pub source_rows: u64,
    /// Rows on the target.
    pub target_rows: u64,
    /// The differences described in detail.
    pub differences: Vec<Difference>,
    /// Differing rows beyond [`VerifyOptions::max_diffs`], counted only.
    pub more_differences: u64,
}

impl TableReport {
    /// No difference at all.
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty() && self.more_differences == 0
    }

    /// Every difference, including the ones only counted.
    pub fn difference_count(&self) -> u64 {
        self.differences.len() as u64 + self.more_differences
    }
}

/// One difference between the two sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// The table exists only on one side.
    TableMissing {
        /// The side without the table.
        missing_on: Side,
    },
    /// The column lists (names, order, types) differ; the columns both have are still
    /// compared.
    Columns {
        /// `name type` per source column.
        source: Vec<String>,
        /// `name type` per target column.
        target: Vec<String>,
    },
    /// A row, identified by its key, differs.
    Row(RowDifference),
    /// In a table without a key: a distinct row occurs a different number of times.
    Count(CountDifference),
}

/// How a keyed row differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowDiffKind {
    /// Both sides have the key; some columns differ.
    Changed,
    /// Only the source has the key.
    MissingOnTarget,
    /// Only the target has the key.
    ExtraOnTarget,
}

/// A keyed row that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowDifference {
    /// How it differs.
    pub kind: RowDiffKind,
    /// `(column, rendered value)` for each key column.
    pub key: Vec<(String, String)>,
    /// For [`RowDiffKind::Changed`]: the columns whose values differ.
    pub changed: Vec<String>,
    /// With `show_values`: the source row, rendered, in [`TableReport::columns`] order.
    pub source_values: Option<Vec<String>>,
    /// With `show_values`: the target row, rendered.
    pub target_values: Option<Vec<String>>,
}

/// A distinct row of a keyless table whose number of copies differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountDifference {
    /// The row hash (hex MD5, see the module docs).
    pub hash: String,
    /// Copies on the source.
    pub source_count: u64,
    /// Copies on the target.
    pub target_count: u64,
    /// With `show_values`: the row, rendered, in [`TableReport::columns`] order.
    pub values: Option<Vec<String>>,
}

/// Compares the tables of `source` and `target` and returns one report per table, calling
/// `on_table` as each is finished (for progress output).
pub async fn verify(
    source: &Pool,
    target: &Pool,
    opts: &VerifyOptions,
    mut on_table: impl FnMut(&TableReport),
) -> Result<Vec<TableReport>, VerifyError> {
    let mut src = Endpoint::connect(Side::Source, source).await?;
    let mut tgt = Endpoint::connect(Side::Target, target).await?;
    let tables = if opts.tables.is_empty() {
        let mut all: BTreeSet<TableName> = src.list_tables().await?;
        all.extend(tgt.list_tables().await?);
        all.into_iter().collect()
    } else {
        opts.tables.clone()
    };
    let mut reports = Vec::with_capacity(tables.len());
    for table in tables {
        let report = verify_table(&mut src, &mut tgt, &table, opts).await?;
        on_table(&report);
        reports.push(report);
    }
    src.close().await;
    tgt.close().await;
    Ok(reports)
}

/// One side's connection with what it needs to name its errors.
struct Endpoint {
    side: Side,
    conn: Conn,
}

impl Endpoint {
    async fn connect(side: Side, pool: &Pool) -> Result<Endpoint, VerifyError> {
        let mut conn = pool
            .get_conn()
            .await
            .map_err(|source| VerifyError::Connect { side, source })?;
        // TIMESTAMP values are compared in UTC, whatever either server's zone is.
        conn.query_drop("SET SESSION time_zone = '+00:00'")
            .await
            .map_err(|source| VerifyError::Query {
                side,
                table: "-".to_string(),
                what: "setting the session time zone",
                source,
            })?;
        Ok(Endpoint { side, conn })
    }

    async fn close(self) {
        // A failed goodbye leaves nothing behind that matters.
        let _ = self.conn.disconnect().await;
    }

    fn query_error(
        &self,
        table: &TableName,
        what: &'static str,
    ) -> impl FnOnce(mysql_async::Error) -> VerifyError {
        let side = self.side;
        let table = table.to_string();
        move |source| VerifyError::Query {
            side,
            table,
            what,
            source,
        }
    }

    fn unexpected(&self, table: &TableName, what: &'static str, detail: String) -> VerifyError {
        VerifyError::Unexpected {
            side: self.side,
            table: table.to_string(),
            what,
            detail,
        }
    }

    async fn list_tables(&mut self) -> Result<BTreeSet<TableName>, VerifyError> {
        let mut sql = String::from(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN (",
        );
        for (i, schema) in SKIPPED_SCHEMAS.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('\'');
            sql.push_str(schema);
            sql.push('\'');
        }
        sql.push(')');
        let side = self.side;
        let rows: Vec<(String, String)> = self
            .conn
            .query::<Row, _>(sql)
            .await
            .and_then(typed)
            .map_err(|source| VerifyError::Query {
                side,
                table: "-".to_string(),
                what: "listing tables",
                source,
            })?;
        Ok(rows
            .into_iter()
            .map(|(schema, name)| TableName::new(schema, name))
            .collect())
    }

    /// The table's description; `None` when it does not exist.
    async fn table(&mut self, table: &TableName) -> Result<Option<CatalogTable>, VerifyError> {
        load_table(&mut self.conn, &table.schema, &table.name)
            .await
            .map_err(self.query_error(table, "reading the table's columns and keys"))
    }
}

/// The SQL texts for one table, built once.
struct TableSql {
    table: TableName,
    /// `MD5(CONCAT(...))` over the compared columns.
    row_hash: String,
    /// Compared columns, quoted and comma-separated.
    column_list: String,
    /// Key columns, quoted.
    key: Vec<String>,
    /// Key columns, as named.
    key_names: Vec<String>,
}

impl TableSql {
    fn new(table: &TableName, columns: &[CatalogColumn], key: &[String]) -> TableSql {
        let mut row_hash = String::from("MD5(CONCAT(");
        let mut column_list = String::new();
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                row_hash.push_str(", ");
                column_list.push_str(", ");
            }
            let c = ident(&column.name);
            // FLOAT's text form has 6 significant digits, too few to tell neighbours apart;
            // as a DOUBLE (exact for every FLOAT) it prints all it has. `* 1e0`, unlike
            // `+ 0e0`, keeps the sign of a negative zero.
            let v = if column.data_type == "float" {
                format!("({c} * 1e0)")
            } else {
                c.clone()
            };
            row_hash.push_str(&format!(
                "IFNULL(CONCAT(LENGTH(CAST({v} AS BINARY)), ':', CAST({v} AS BINARY)), '-')"
            ));
            column_list.push_str(&c);
        }
        if columns.is_empty() {
            row_hash.push_str("''");
        }
        row_hash.push_str("))");
        TableSql {
            table: table.clone(),
            row_hash,
            column_list,
            key: key.iter().map(|k| ident(k)).collect(),
            key_names: key.to_vec(),
        }
    }

    fn key_list(&self) -> String {
        self.key.join(", ")
    }

    /// `WHERE` text for keys after `lower` (exclusive) and up to `upper` (inclusive), with
    /// its parameters. Row comparisons are spelled out as nested OR/AND, which every
    /// MariaDB and MySQL version turns into index ranges.
    fn range(&self, lower: Option<&[Value]>, upper: Option<&[Value]>) -> (String, Vec<Value>) {
        let mut sql = String::new();
        let mut params = Vec::new();
        if let Some(lower) = lower {
            self.push_bound(&mut sql, &mut params, lower, ">", ">");
        }
        if let Some(upper) = upper {
            if !sql.is_empty() {
                sql.push_str(" AND ");
            }
            self.push_bound(&mut sql, &mut params, upper, "<", "<=");
        }
        if sql.is_empty() {
            sql.push_str("TRUE");
        }
        (sql, params)
    }

    /// `(k1 op v1 OR (k1 = v1 AND (k2 op v2 OR (... kn last_op vn))))`.
    fn push_bound(
        &self,
        sql: &mut String,
        params: &mut Vec<Value>,
        bound: &[Value],
        op: &str,
        last_op: &str,
    ) {
        let n = self.key.len();
        for (i, (k, v)) in self.key.iter().zip(bound).enumerate() {
            if i + 1 == n {
                sql.push_str(&format!("{k} {last_op} ?"));
                params.push(v.clone());
            } else {
                sql.push_str(&format!("({k} {op} ? OR ({k} = ? AND "));
                params.push(v.clone());
                params.push(v.clone());
            }
        }
        for _ in 1..n {
            sql.push_str("))");
        }
    }

    fn checksum_sql(&self, range: &str) -> String {
        format!(
            "SELECT COUNT(*), CAST(IFNULL(SUM(CAST(CONV(LEFT({}, 16), 16, 10) AS UNSIGNED)), 0) \
             AS CHAR) FROM {} WHERE {range}",
            self.row_hash,
            self.table.quoted()
        )
    }
}

/// A chunk's checksum: row count and the exact sum of the row hashes' first 64 bits.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Checksum {
    rows: u64,
    sum: String,
}

async fn checksum(
    end: &mut Endpoint,
    sql: &TableSql,
    range: &str,
    params: &[Value],
) -> Result<Checksum, VerifyError> {
    let text = sql.checksum_sql(range);
    let row: Option<(u64, String)> = end
        .conn
        .exec_first::<Row, _, _>(text, Params::Positional(params.to_vec()))
        .await
        .and_then(typed_first)
        .map_err(end.query_error(&sql.table, "checksumming a chunk"))?;
    let (rows, sum) = row
        .ok_or_else(|| end.unexpected(&sql.table, "checksumming a chunk", "no row".to_string()))?;
    Ok(Checksum { rows, sum })
}

async fn verify_table(
    src: &mut Endpoint,
    tgt: &mut Endpoint,
    table: &TableName,
    opts: &VerifyOptions,
) -> Result<TableReport, VerifyError> {
    let (src_table, tgt_table) = (src.table(table).await?, tgt.table(table).await?);
    let mut report = TableReport {
        table: table.clone(),
        key: KeyKind::None,
        columns: Vec::new(),
        chunks: 0,
        differing_chunks: 0,
        source_rows: 0,
        target_rows: 0,
        differences: Vec::new(),
        more_differences: 0,
    };
    let (src_table, tgt_table) = match (src_table, tgt_table) {
        (None, None) => {
            return Err(VerifyError::NoSuchTable {
                table: table.clone(),
            })
        }
        (None, Some(_)) => {
            report.differences.push(Difference::TableMissing {
                missing_on: Side::Source,
            });
            return Ok(report);
        }
        (Some(_), None) => {
            report.differences.push(Difference::TableMissing {
                missing_on: Side::Target,
            });
            return Ok(report);
        }
        (Some(s), Some(t)) => (s, t),
    };
    let (src_cols, tgt_cols) = (&src_table.columns, &tgt_table.columns);
    if src_cols != tgt_cols {
        let describe = |cols: &[CatalogColumn]| -> Vec<String> {
            cols.iter()
                .map(|c| {
                    let mut text = format!("{} {}", c.name, c.column_type);
                    if !c.nullable {
                        text.push_str(" NOT NULL");
                    }
                    if let Some(collation) = &c.collation {
                        text.push_str(" COLLATE ");
                        text.push_str(collation);
                    }
                    text
                })
                .collect()
        };
        report.differences.push(Difference::Columns {
            source: describe(src_cols),
            target: describe(tgt_cols),
        });
    }
    // Compare what both sides have, in the source's order.
    let common: Vec<CatalogColumn> = src_cols
        .iter()
        .filter(|c| tgt_cols.iter().any(|t| t.name == c.name))
        .cloned()
        .collect();
    report.columns = common.iter().map(|c| c.name.clone()).collect();
    let (kind, key): (KeyKind, Vec<String>) = match src_table.row_key() {
        Some((None, cols)) => (KeyKind::Primary, names(src_cols, cols)),
        Some((Some(name), cols)) => (KeyKind::Unique(name.to_string()), names(src_cols, cols)),
        None => (KeyKind::None, Vec::new()),
    };
    let key_usable = !key.is_empty() && key.iter().all(|k| report.columns.contains(k));
    report.key = if key_usable { kind } else { KeyKind::None };
    let key = if key_usable { key } else { Vec::new() };
    let sql = TableSql::new(table, &common, &key);
    if key.is_empty() {
        verify_keyless(src, tgt, &sql, opts, &mut report).await?;
    } else {
        verify_chunked(src, tgt, &sql, opts, &mut report).await?;
    }
    Ok(report)
}

fn names(columns: &[CatalogColumn], indexes: &[usize]) -> Vec<String> {
    indexes.iter().map(|&i| columns[i].name.clone()).collect()
}

async fn verify_chunked(
    src: &mut Endpoint,
    tgt: &mut Endpoint,
    sql: &TableSql,
    opts: &VerifyOptions,
    report: &mut TableReport,
) -> Result<(), VerifyError> {
    let key_list = sql.key_list();
    let offset = opts.chunk_rows.get() - 1;
    let mut lower: Option<Vec<Value>> = None;
    loop {
        let (after, params) = sql.range(lower.as_deref(), None);
        let bound_sql = format!(
            "SELECT {key_list} FROM {} WHERE {after} ORDER BY {key_list} LIMIT 1 OFFSET {offset}",
            sql.table.quoted()
        );
        let upper: Option<Row> = src
            .conn
            .exec_first(bound_sql, Params::Positional(params))
            .await
            .map_err(src.query_error(&sql.table, "finding a chunk boundary"))?;
        let upper: Option<Vec<Value>> = upper.map(Row::unwrap);
        let (range, params) = sql.range(lower.as_deref(), upper.as_deref());
        let (s, t) = tokio::join!(
            checksum(src, sql, &range, &params),
            checksum(tgt, sql, &range, &params)
        );
        let (s, t) = (s?, t?);
        report.chunks += 1;
        report.source_rows += s.rows;
        report.target_rows += t.rows;
        if s != t {
            report.differing_chunks += 1;
            diff_chunk(src, tgt, sql, &range, &params, opts, report).await?;
        }
        match upper {
            Some(upper) => lower = Some(upper),
            None => return Ok(()),
        }
    }
}

/// (key values, row hash) of each row in a chunk, in key order.
type KeyedHashes = Vec<(Vec<Value>, Vec<u8>)>;

async fn keyed_hashes(
    end: &mut Endpoint,
    sql: &TableSql,
    range: &str,
    params: &[Value],
) -> Result<KeyedHashes, VerifyError> {
    let key_list = sql.key_list();
    let text = format!(
        "SELECT {key_list}, {} FROM {} WHERE {range} ORDER BY {key_list}",
        sql.row_hash,
        sql.table.quoted()
    );
    let rows: Vec<Row> = end
        .conn
        .exec(text, Params::Positional(params.to_vec()))
        .await
        .map_err(end.query_error(&sql.table, "reading a chunk's row hashes"))?;
    let n = sql.key.len();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut values = row.unwrap();
        let hash = match values.pop() {
            Some(Value::Bytes(hash)) if values.len() == n => hash,
            _ => {
                return Err(end.unexpected(
                    &sql.table,
                    "reading a chunk's row hashes",
                    "row without key and hash".to_string(),
                ))
            }
        };
        out.push((values, hash));
    }
    Ok(out)
}

fn key_bytes(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        push_key_bytes(&mut out, v);
    }
    out
}

async fn diff_chunk(
    src: &mut Endpoint,
    tgt: &mut Endpoint,
    sql: &TableSql,
    range: &str,
    params: &[Value],
    opts: &VerifyOptions,
    report: &mut TableReport,
) -> Result<(), VerifyError> {
    let (s, t) = tokio::join!(
        keyed_hashes(src, sql, range, params),
        keyed_hashes(tgt, sql, range, params)
    );
    let (s, t) = (s?, t?);
    let mut target_index: HashMap<Vec<u8>, usize> = HashMap::with_capacity(t.len());
    for (i, (key, _)) in t.iter().enumerate() {
        target_index.insert(key_bytes(key), i);
    }
    let mut matched = vec![false; t.len()];
    let mut found: Vec<(RowDiffKind, Vec<Value>)> = Vec::new();
    for (key, hash) in &s {
        match target_index.get(&key_bytes(key)) {
            None => found.push((RowDiffKind::MissingOnTarget, key.clone())),
            Some(&i) => {
                matched[i] = true;
                if t[i].1 != *hash {
                    found.push((RowDiffKind::Changed, key.clone()));
                }
            }
        }
    }
    for (i, (key, _)) in t.iter().enumerate() {
        if !matched[i] {
            found.push((RowDiffKind::ExtraOnTarget, key.clone()));
        }
    }
    for (kind, key) in found {
        if report.differences.len() >= opts.max_diffs {
            report.more_differences += 1;
            continue;
        }
        let diff = describe_row(src, tgt, sql, kind, &key, &report.columns, opts).await?;
        report.differences.push(Difference::Row(diff));
    }
    Ok(())
}

async fn fetch_by_key(
    end: &mut Endpoint,
    sql: &TableSql,
    key: &[Value],
) -> Result<Option<Vec<Value>>, VerifyError> {
    let mut text = format!(
        "SELECT {} FROM {} WHERE ",
        sql.column_list,
        sql.table.quoted()
    );
    for (i, k) in sql.key.iter().enumerate() {
        if i > 0 {
            text.push_str(" AND ");
        }
        text.push_str(k);
        text.push_str(" = ?");
    }
    let row: Option<Row> = end
        .conn
        .exec_first(text, Params::Positional(key.to_vec()))
        .await
        .map_err(end.query_error(&sql.table, "reading a differing row"))?;
    Ok(row.map(Row::unwrap))
}

async fn describe_row(
    src: &mut Endpoint,
    tgt: &mut Endpoint,
    sql: &TableSql,
    kind: RowDiffKind,
    key: &[Value],
    columns: &[String],
    opts: &VerifyOptions,
) -> Result<RowDifference, VerifyError> {
    let mut diff = RowDifference {
        kind,
        key: sql
            .key_names
            .iter()
            .cloned()
            .zip(key.iter().map(render_value))
            .collect(),
        changed: Vec::new(),
        source_values: None,
        target_values: None,
    };
    let want_source = kind != RowDiffKind::ExtraOnTarget;
    let want_target = kind != RowDiffKind::MissingOnTarget;
    if !opts.show_values && kind != RowDiffKind::Changed {
        return Ok(diff);
    }
    let s = if want_source {
        fetch_by_key(src, sql, key).await?
    } else {
        None
    };
    let t = if want_target {
        fetch_by_key(tgt, sql, key).await?
    } else {
        None
    };
    if let (Some(s), Some(t)) = (&s, &t) {
        diff.changed = columns
            .iter()
            .zip(s.iter().zip(t))
            .filter(|(_, (a, b))| a != b)
            .map(|(name, _)| name.clone())
            .collect();
    }
    if opts.show_values {
        let render = |row: &Vec<Value>| row.iter().map(render_value).collect();
        diff.source_values = s.as_ref().map(render);
        diff.target_values = t.as_ref().map(render);
    }
    Ok(diff)
}

async fn hash_counts(
    end: &mut Endpoint,
    sql: &TableSql,
) -> Result<BTreeMap<Vec<u8>, u64>, VerifyError> {
    let text = format!(
        "SELECT {} AS h, COUNT(*) FROM {} GROUP BY h",
        sql.row_hash,
        sql.table.quoted()
    );
    let rows: Vec<(Vec<u8>, u64)> = end
        .conn
        .query::<Row, _>(text)
        .await
        .and_then(typed)
        .map_err(end.query_error(&sql.table, "grouping rows by hash"))?;
    Ok(rows.into_iter().collect())
}

async fn verify_keyless(
    src: &mut Endpoint,
    tgt: &mut Endpoint,
    sql: &TableSql,
    opts: &VerifyOptions,
    report: &mut TableReport,
) -> Result<(), VerifyError> {
    let (s, t) = tokio::join!(
        checksum(src, sql, "TRUE", &[]),
        checksum(tgt, sql, "TRUE", &[])
    );
    let (s, t) = (s?, t?);
    report.chunks = 1;
    report.source_rows = s.rows;
    report.target_rows = t.rows;
    if s == t {
        return Ok(());
    }
    report.differing_chunks = 1;
    let (s, t) = tokio::join!(hash_counts(src, sql), hash_counts(tgt, sql));
    let (s, t) = (s?, t?);
    let hashes: BTreeSet<&Vec<u8>> = s.keys().chain(t.keys()).collect();
    for hash in hashes {
        let (source_count, target_count) = (
            s.get(hash).copied().unwrap_or(0),
            t.get(hash).copied().unwrap_or(0),
        );
        if source_count == target_count {
            continue;
        }
        if report.differences.len() >= opts.max_diffs {
            report.more_differences += 1;
            continue;
        }
        let hash_text = String::from_utf8_lossy(hash).into_owned();
        let values = if opts.show_values {
            let end = if source_count > 0 {
                &mut *src
            } else {
                &mut *tgt
            };
            let text = format!(
                "SELECT {} FROM {} WHERE {} = ? LIMIT 1",
                sql.column_list,
                sql.table.quoted(),
                sql.row_hash
            );
            let row: Option<Row> = end
                .conn
                .exec_first(text, (hash_text.clone(),))
                .await
                .map_err(end.query_error(&sql.table, "reading a differing row"))?;
            row.map(|r| r.unwrap().iter().map(render_value).collect())
        } else {
            None
        };
        report.differences.push(Difference::Count(CountDifference {
            hash: hash_text,
            source_count,
            target_count,
            values,
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_parse() {
        let t: TableName = "db.t.x".parse().expect("parse");
        assert_eq!(t, TableName::new("db", "t.x"));
        assert!("db".parse::<TableName>().is_err());
        assert!(".t".parse::<TableName>().is_err());
        assert!("db.".parse::<TableName>().is_err());
        assert_eq!(t.quoted(), "`db`.`t.x`");
    }

    fn cols(names: &[&str]) -> Vec<CatalogColumn> {
        names
            .iter()
            .map(|n| CatalogColumn {
                name: n.to_string(),
                data_type: if *n == "f" { "float" } else { "int" }.to_string(),
                column_type: if *n == "f" { "float(10,3)" } else { "int(11)" }.to_string(),
                nullable: true,
                charset: None,
                collation: None,
                generated: false,
            })
            .collect()
    }

    #[test]
    fn ranges_spell_out_row_comparisons() {
        let sql = TableSql::new(
            &TableName::new("d", "t"),
            &cols(&["a", "b", "c"]),
            &["a".to_string(), "b".to_string()],
        );
        let lo = [Value::Int(1), Value::Int(2)];
        let hi = [Value::Int(3), Value::Int(4)];
        let (text, params) = sql.range(Some(&lo), Some(&hi));
        assert_eq!(
            text,
            "(`a` > ? OR (`a` = ? AND `b` > ?)) AND (`a` < ? OR (`a` = ? AND `b` <= ?))"
        );
        assert_eq!(params.len(), 6);
        assert_eq!(sql.range(None, None).0, "TRUE");
        let single = TableSql::new(&TableName::new("d", "t"), &cols(&["a"]), &["a".to_string()]);
        assert_eq!(single.range(Some(&[Value::Int(1)]), None).0, "`a` > ?");
    }

    #[test]
    fn row_hash_prefixes_lengths_and_marks_nulls() {
        let sql = TableSql::new(&TableName::new("d", "t"), &cols(&["x", "f"]), &[]);
        assert_eq!(
            sql.row_hash,
            "MD5(CONCAT(IFNULL(CONCAT(LENGTH(CAST(`x` AS BINARY)), ':', CAST(`x` AS BINARY)), '-'), \
             IFNULL(CONCAT(LENGTH(CAST((`f` * 1e0) AS BINARY)), ':', CAST((`f` * 1e0) AS BINARY)), '-')))"
        );
    }
}
