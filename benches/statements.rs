//! How the applier's batched upserts should reach the target: as text, values written as
//! literals and several statements sent in one query (what the applier does), or as
//! prepared statements through mysql_async (binary protocol, one round trip per execute).
//! The issue asks for prepared statements; this bench is the measurement behind the
//! applier's choice (see "Statements as text" in `crates/sink/src/apply.rs`).
//!
//! Run with `cargo bench --bench statements`. Environment:
//! - `OUTFLOW_BENCH_STATEMENTS_ROWS`: row changes per run (default 300,000);
//! - `OUTFLOW_BENCH_STATEMENTS_ROUNDS`: paired rounds (default 4).
//!
//! The workload, on a target holding the sysbench `prepare` (4 tables of 100,000 rows):
//! two connections, as two apply lanes, each on tables of its own, run transactions of 8
//! multi-row `INSERT ... ON DUPLICATE KEY UPDATE` statements over existing rows, cycling
//! through the three shapes sysbench's `oltp_write_only` leaves after minimal images and
//! compaction: `k` (an indexed integer), `c` (`CHAR(120)`), and the whole row (a delete and
//! re-insert merged). Rows of one statement are in key order, as the applier writes them.
//!
//! Two kinds of groups:
//! - `mixed`: 100-1,000 rows per statement (random), as the applier's groups vary. Text
//!   sends each group as one statement. A prepared statement has a fixed row count, and a
//!   shape per count would fill the server's and the driver's statement caches, so groups
//!   go as 256-row statements plus the binary digits of the remainder (128, 64, ..., 1):
//!   at most 9 shapes per table and column set.
//! - `256`: every statement exactly 256 rows, prepared once: prepared statements' best
//!   case, an upper bound on what they can gain.
//!
//! Text values are written by the applier's own literal writer (`literal::push_value`);
//! prepared ones are `mysql_async::Value`s (an owned `Vec` per text value). Each form's
//! wall time and CPU (target server and this process) are printed with the medians, and
//! the heap allocations of this process per row.

mod alloc_count;
// Only its server settings, CPU clocks and sysbench setup: the backlog is for catch-ups.
#[allow(dead_code)]
mod catchup;

use std::time::Instant;

use anyhow::{Context, Result};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Statement, Value};
use outflow_core::ValueRef;
use outflow_sink::literal::push_value;
use outflow_testkit::Server;

use catchup::{config, cpu_secs, env_u64, median, settle, sysbench, TABLES};

#[global_allocator]
static GLOBAL: alloc_count::CountingAlloc = alloc_count::CountingAlloc;

/// Rows in each sysbench table (ids 1..=TABLE_ROWS).
const TABLE_ROWS: u64 = 100_000;
/// Statements per target transaction.
const STATEMENTS_PER_TXN: usize = 8;
/// The largest prepared statement, in rows.
const CHUNK: usize = 256;

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    K,
    C,
    Whole,
}

const SHAPES: [Shape; 3] = [Shape::K, Shape::C, Shape::Whole];

impl Shape {
    fn columns(self) -> &'static [&'static str] {
        match self {
            Shape::K => &["id", "k"],
            Shape::C => &["id", "c"],
            Shape::Whole => &["id", "k", "c", "pad"],
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Groups {
    Mixed,
    Fixed,
}

/// A small deterministic generator (xorshift64), so that every run of the bench writes the
/// same sequence of rows.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One row's values, in a reused buffer: `(id, k, c, pad)` with `c` and `pad` digits and
/// dashes like sysbench's.
struct RowData {
    id: i64,
    k: i64,
    c: [u8; 120],
    pad: [u8; 60],
}

impl RowData {
    fn fill(&mut self, rng: &mut Rng) {
        self.id = (rng.next() % TABLE_ROWS + 1) as i64;
        self.k = (rng.next() % TABLE_ROWS) as i64;
        for chunk in self.c.chunks_mut(12).chain(self.pad.chunks_mut(12)) {
            let mut x = rng.next();
            for b in chunk.iter_mut() {
                *b = b'0' + (x % 10) as u8;
                x /= 10;
            }
            chunk[chunk.len() - 1] = b'-';
        }
    }

    fn values(&self, shape: Shape) -> impl Iterator<Item = ValueRef<'_>> {
        let all = [
            ValueRef::Int(self.id),
            ValueRef::Int(self.k),
            ValueRef::Text(&self.c),
            ValueRef::Text(&self.pad),
        ];
        let pick: &[usize] = match shape {
            Shape::K => &[0, 1],
            Shape::C => &[0, 2],
            Shape::Whole => &[0, 1, 2, 3],
        };
        pick.iter().map(move |&i| all[i])
    }
}

fn head(table: &str, shape: Shape) -> String {
    let cols: Vec<String> = shape.columns().iter().map(|c| format!("`{c}`")).collect();
    format!("INSERT INTO {table} ({}) VALUES ", cols.join(","))
}

fn tail(shape: Shape) -> String {
    let set: Vec<String> = shape.columns()[1..]
        .iter()
        .map(|c| format!("`{c}`=VALUES(`{c}`)"))
        .collect();
    format!(" ON DUPLICATE KEY UPDATE {}", set.join(","))
}

fn placeholders(table: &str, shape: Shape, rows: usize) -> String {
    let one = format!("({})", vec!["?"; shape.columns().len()].join(","));
    format!(
        "{}{}{}",
        head(table, shape),
        vec![one; rows].join(","),
        tail(shape)
    )
}

/// A statement's rows: `n` random rows in key order (one key once).
fn rows(rng: &mut Rng, n: usize, out: &mut Vec<RowData>) {
    out.clear();
    for _ in 0..n {
        let mut r = RowData {
            id: 0,
            k: 0,
            c: [0; 120],
            pad: [0; 60],
        };
        r.fill(rng);
        out.push(r);
    }
    out.sort_by_key(|r| r.id);
    out.dedup_by_key(|r| r.id);
}

/// One connection's part of a run: `total` rows into `tables`, as text or prepared.
struct Lane {
    conn: Conn,
    tables: [&'static str; 2],
    /// Prepared statements by (table, shape, rows): prepared once per run.
    prepared: Vec<((usize, usize, usize), Statement)>,
    sql: Vec<u8>,
    rows: Vec<RowData>,
}

impl Lane {
    async fn statement(&mut self, t: usize, s: usize, n: usize) -> Result<Statement> {
        if let Some((_, st)) = self.prepared.iter().find(|(key, _)| *key == (t, s, n)) {
            return Ok(st.clone());
        }
        let st = self
            .conn
            .prep(placeholders(self.tables[t], SHAPES[s], n))
            .await?;
        self.prepared.push(((t, s, n), st.clone()));
        Ok(st)
    }

    async fn run(
        &mut self,
        prepared: bool,
        groups: Groups,
        mut rng: Rng,
        total: usize,
    ) -> Result<()> {
        let mut done = 0;
        let mut stmt = 0;
        while done < total {
            self.sql.clear();
            self.sql.extend_from_slice(b"BEGIN");
            if prepared {
                self.conn.query_drop("BEGIN").await?;
            }
            for _ in 0..STATEMENTS_PER_TXN {
                let (t, s) = (stmt % 2, (stmt / 2) % SHAPES.len());
                stmt += 1;
                let shape = SHAPES[s];
                let n = match groups {
                    Groups::Mixed => 100 + (rng.next() % 901) as usize,
                    Groups::Fixed => CHUNK,
                };
                let mut batch = std::mem::take(&mut self.rows);
                rows(&mut rng, n, &mut batch);
                done += batch.len();
                if prepared {
                    // 256-row chunks, then the remainder's binary digits.
                    let mut at = 0;
                    while at < batch.len() {
                        let left = batch.len() - at;
                        let size = if left >= CHUNK {
                            CHUNK
                        } else {
                            1 << (usize::BITS - 1 - left.leading_zeros())
                        };
                        let st = self.statement(t, s, size).await?;
                        let params: Vec<Value> = batch[at..at + size]
                            .iter()
                            .flat_map(|r| r.values(shape))
                            .map(|v| match v {
                                ValueRef::Int(x) => Value::Int(x),
                                ValueRef::Text(b) => Value::Bytes(b.to_vec()),
                                _ => Value::NULL,
                            })
                            .collect();
                        self.conn.exec_drop(&st, params).await?;
                        at += size;
                    }
                } else {
                    self.sql.push(b';');
                    self.sql
                        .extend_from_slice(head(self.tables[t], shape).as_bytes());
                    for (i, r) in batch.iter().enumerate() {
                        self.sql
                            .extend_from_slice(if i == 0 { b"(" } else { b",(" });
                        for (j, v) in r.values(shape).enumerate() {
                            if j > 0 {
                                self.sql.push(b',');
                            }
                            push_value(&mut self.sql, v, "latin1")?;
                        }
                        self.sql.push(b')');
                    }
                    self.sql.extend_from_slice(tail(shape).as_bytes());
                }
                self.rows = batch;
            }
            if prepared {
                self.conn.query_drop("COMMIT").await?;
            } else {
                self.sql.extend_from_slice(b";COMMIT");
                self.conn
                    .query_iter(&self.sql[..])
                    .await?
                    .drop_result()
                    .await?;
            }
        }
        Ok(())
    }
}

struct Sample {
    wall: f64,
    target_cpu: f64,
    own_cpu: f64,
    allocs_per_row: f64,
}

fn main() -> Result<()> {
    catchup::block_on(run())
}

async fn run() -> Result<()> {
    let total = env_u64("OUTFLOW_BENCH_STATEMENTS_ROWS", 300_000)? as usize;
    let rounds = env_u64("OUTFLOW_BENCH_STATEMENTS_ROUNDS", 4)?.max(1);
    let target = Server::start(config().log_bin(false))?;
    println!("preparing: sysbench prepare, 4 tables x 100,000 rows");
    sysbench().prepare(&target)?;
    let charset: String = target
        .query_scalar(
            "SELECT CHARACTER_SET_NAME FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = 'sbtest' AND TABLE_NAME = 'sbtest1' AND COLUMN_NAME = 'c'",
        )
        .await?;
    anyhow::ensure!(
        charset == "latin1",
        "the bench writes latin1 literals, but sbtest1.c is {charset}"
    );
    let pid = target.pid().map(|p| p.to_string()).unwrap_or_default();
    let mut lanes = Vec::new();
    for tables in [[TABLES[0], TABLES[1]], [TABLES[2], TABLES[3]]] {
        // Room for every shape (2 tables x 3 column sets x 9 row counts): the driver closes
        // the statements its cache evicts.
        let opts = OptsBuilder::from_opts(target.opts()).stmt_cache_size(256);
        let mut conn = Conn::new(opts).await?;
        // As the applier's session: values are bytes in their columns' charsets.
        conn.query_drop("SET NAMES binary").await?;
        lanes.push(Lane {
            conn,
            tables,
            prepared: Vec::new(),
            sql: Vec::new(),
            rows: Vec::new(),
        });
    }
    let mut seed = Rng(0x9e37_79b9_7f4a_7c15);
    let forms = [
        (Groups::Mixed, false, "mixed groups, text"),
        (Groups::Mixed, true, "mixed groups, prepared"),
        (Groups::Fixed, false, "256-row groups, text"),
        (Groups::Fixed, true, "256-row groups, prepared"),
    ];
    let mut samples: Vec<Vec<Sample>> = forms.iter().map(|_| Vec::new()).collect();
    // A warm-up pass of each form (buffer pool, statement caches), not counted.
    for round in 0..=rounds {
        for (f, &(groups, prepared, name)) in forms.iter().enumerate() {
            // Fresh values for every run: rows a run leaves unchanged cost the target less.
            let rngs = [Rng(seed.next() | 1), Rng(seed.next() | 1)];
            settle().await;
            let (cpu_t, cpu_o) = (cpu_secs(&pid), cpu_secs("self"));
            alloc_count::start();
            let t = Instant::now();
            let [a, b] = &mut lanes[..] else {
                unreachable!("two lanes")
            };
            let (ra, rb) = tokio::join!(
                a.run(prepared, groups, rngs[0].clone(), total / 2),
                b.run(prepared, groups, rngs[1].clone(), total / 2)
            );
            ra.with_context(|| format!("{name}, lane 1"))?;
            rb.with_context(|| format!("{name}, lane 2"))?;
            let wall = t.elapsed().as_secs_f64();
            alloc_count::stop();
            let s = Sample {
                wall,
                target_cpu: cpu_secs(&pid) - cpu_t,
                own_cpu: cpu_secs("self") - cpu_o,
                allocs_per_row: alloc_count::count() as f64 / total as f64,
            };
            if round == 0 {
                continue;
            }
            println!(
                "round {round}: {name:<26} {:6.3} s, target CPU {:5.2} s, own CPU {:4.2} s, \
                 {:.2} allocations per row",
                s.wall, s.target_cpu, s.own_cpu, s.allocs_per_row
            );
            samples[f].push(s);
        }
    }
    println!();
    println!(
        "{total} row changes per run, 2 connections, medians of {rounds} rounds; \
         ratio = text wall / prepared wall"
    );
    println!(
        "| form | wall | target CPU | own CPU | allocations per row | ratio |\n\
         |---|---|---|---|---|---|"
    );
    for (f, &(_, prepared, name)) in forms.iter().enumerate() {
        let m = |g: fn(&Sample) -> f64| median(&samples[f].iter().map(g).collect::<Vec<_>>());
        let ratio = if prepared {
            let text = median(&samples[f - 1].iter().map(|s| s.wall).collect::<Vec<_>>());
            format!("{:.3}", text / m(|s| s.wall))
        } else {
            String::new()
        };
        println!(
            "| {name} | {:.3} s | {:.2} s | {:.2} s | {:.2} | {ratio} |",
            m(|s| s.wall),
            m(|s| s.target_cpu),
            m(|s| s.own_cpu),
            m(|s| s.allocs_per_row)
        );
    }
    Ok(())
}
