//! How the applier's batched upserts should reach the target: as text, values written as
//! literals and several statements sent in one query (what the applier does); as prepared
//! statements through mysql_async (binary protocol, one round trip per execute); or as
//! prepared statements through our own client (`outflow_replication::Connection`), a
//! transaction's executes pipelined in one write with parameters borrowed from the rows.
//! The issue asks for prepared statements; this bench is the measurement behind the
//! applier's choice (see "Statements as text" in `crates/sink/src/apply.rs`).
//!
//! Run with `cargo bench --bench statements`. Environment:
//! - `OUTFLOW_BENCH_STATEMENTS_ROWS`: row changes per run (default 300,000);
//! - `OUTFLOW_BENCH_STATEMENTS_ROUNDS`: rounds (default 8: the effects are within a
//!   run-to-run spread of 10-20%).
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
//! mysql_async's prepared ones are `mysql_async::Value`s (an owned `Vec` per text value);
//! the pipelined ones are `Param`s borrowed from the rows. The pipelined form sends a
//! transaction (`BEGIN`, its executes, `COMMIT`) in one write and then reads the replies:
//! one round trip per transaction, as text. Each form's
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
use outflow_replication::protocol::stmt::{Param, Prepared};
use outflow_replication::{ConnectOptions, Connection, TlsMode};
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

/// How statements reach the target.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    /// Literals in the text, a transaction in one query (the applier).
    Text,
    /// Prepared through mysql_async, an execute per round trip.
    Driver,
    /// Prepared through our client, a transaction's executes in one write.
    Pipelined,
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

/// The row count of each prepared statement a group of `n` rows is cut into: 256-row
/// chunks, then the remainder's binary digits.
fn chunks(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let size = match n {
            0 => return None,
            n if n >= CHUNK => CHUNK,
            n => 1 << (usize::BITS - 1 - n.leading_zeros()),
        };
        n -= size;
        Some(size)
    })
}

/// Every row count [`chunks`] can give.
fn chunk_sizes() -> impl Iterator<Item = usize> {
    (0..=CHUNK.trailing_zeros()).map(|b| 1 << b)
}

/// One connection's part of a run: `total` rows into `tables`, in each of the three forms.
struct Lane {
    conn: Conn,
    /// Our client's connection, for the pipelined form.
    own: Connection,
    /// Its statements by (table, shape, rows), all prepared up front (a prepare cannot
    /// wait in a pipeline).
    own_prepared: Vec<((usize, usize, usize), Prepared)>,
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

    async fn run(&mut self, via: Via, groups: Groups, mut rng: Rng, total: usize) -> Result<()> {
        let mut done = 0;
        let mut stmt = 0;
        while done < total {
            self.sql.clear();
            self.sql.extend_from_slice(b"BEGIN");
            match via {
                Via::Driver => self.conn.query_drop("BEGIN").await?,
                Via::Pipelined => self.own.queue_query(b"BEGIN"),
                Via::Text => {}
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
                if via == Via::Pipelined {
                    let mut at = 0;
                    for size in chunks(batch.len()) {
                        let st = self
                            .own_prepared
                            .iter()
                            .find(|(key, _)| *key == (t, s, size))
                            .map(|(_, st)| *st)
                            .context("a chunk size without a statement")?;
                        self.own.queue_execute(
                            &st,
                            batch[at..at + size]
                                .iter()
                                .flat_map(|r| r.values(shape))
                                .map(|v| match v {
                                    ValueRef::Int(x) => Param::Int(x),
                                    ValueRef::Text(b) => Param::Bytes(b),
                                    _ => Param::Null,
                                }),
                        )?;
                        at += size;
                    }
                } else if via == Via::Driver {
                    let mut at = 0;
                    for size in chunks(batch.len()) {
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
            match via {
                Via::Driver => self.conn.query_drop("COMMIT").await?,
                Via::Pipelined => {
                    self.own.queue_query(b"COMMIT");
                    self.own.flush_queue("sending a transaction").await?;
                    while self.own.awaiting_replies() > 0 {
                        if let Err(e) = self.own.read_reply("reading the replies").await? {
                            anyhow::bail!("the target refused a pipelined command: {e}");
                        }
                    }
                }
                Via::Text => {
                    self.sql.extend_from_slice(b";COMMIT");
                    self.conn
                        .query_iter(&self.sql[..])
                        .await?
                        .drop_result()
                        .await?;
                }
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
    let rounds = env_u64("OUTFLOW_BENCH_STATEMENTS_ROUNDS", 8)?.max(1);
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
        let mut o = ConnectOptions::new("127.0.0.1", target.port(), "root", "");
        o.tls.mode = TlsMode::Disabled;
        let mut own = Connection::connect(&o).await?;
        own.query("SET NAMES binary", "setting the charset").await?;
        let mut own_prepared = Vec::new();
        for (t, table) in tables.iter().enumerate() {
            for (s, &shape) in SHAPES.iter().enumerate() {
                for n in chunk_sizes() {
                    let sql = placeholders(table, shape, n);
                    let st = own.prepare(sql.as_bytes(), "preparing").await?;
                    own_prepared.push(((t, s, n), st));
                }
            }
        }
        lanes.push(Lane {
            conn,
            own,
            own_prepared,
            tables,
            prepared: Vec::new(),
            sql: Vec::new(),
            rows: Vec::new(),
        });
    }
    let mut seed = Rng(0x9e37_79b9_7f4a_7c15);
    let forms = [
        (Groups::Mixed, Via::Text, "mixed groups, text"),
        (Groups::Mixed, Via::Driver, "mixed groups, mysql_async"),
        (Groups::Mixed, Via::Pipelined, "mixed groups, pipelined"),
        (Groups::Fixed, Via::Text, "256-row groups, text"),
        (Groups::Fixed, Via::Driver, "256-row groups, mysql_async"),
        (Groups::Fixed, Via::Pipelined, "256-row groups, pipelined"),
    ];
    let mut samples: Vec<Vec<Sample>> = forms.iter().map(|_| Vec::new()).collect();
    // A warm-up pass of each form (buffer pool, statement caches), not counted.
    for round in 0..=rounds {
        // Each round starts at another form, so that none always runs first or after
        // the same neighbour (the target's background work carries over between runs).
        for f in (0..forms.len()).map(|i| (i + round as usize) % forms.len()) {
            let (groups, via, name) = forms[f];
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
                a.run(via, groups, rngs[0].clone(), total / 2),
                b.run(via, groups, rngs[1].clone(), total / 2)
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
        "{total} row changes per run, 2 connections, medians of {rounds} rounds (forms in \
         rotating order); ratio = the median over rounds of the text wall / the form's wall \
         in the same round"
    );
    println!(
        "| form | wall | target CPU | own CPU | allocations per row | ratio |\n\
         |---|---|---|---|---|---|"
    );
    for (f, &(groups, via, name)) in forms.iter().enumerate() {
        let m = |g: fn(&Sample) -> f64| median(&samples[f].iter().map(g).collect::<Vec<_>>());
        let text = forms
            .iter()
            .position(|&(g, v, _)| g == groups && v == Via::Text)
            .context("a text form for each kind of group")?;
        let ratio = if via == Via::Text {
            String::new()
        } else {
            let paired: Vec<f64> = samples[text]
                .iter()
                .zip(&samples[f])
                .map(|(t, s)| t.wall / s.wall)
                .collect();
            format!("{:.3}", median(&paired))
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
