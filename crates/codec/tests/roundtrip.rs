//! Property tests with a small seeded generator (no proptest: it would add build time for
//! little): decode(encode(batch)) == batch for random transactions over every column type,
//! in both image modes, compacted and not; and compaction checked against a model that
//! applies every change in order.

use std::collections::BTreeMap;
use std::sync::Arc;

use outflow_codec::{Compactor, Decoder, Encoder, EncoderConfig, Limits, SchemaShipping};
use outflow_core::{
    ChangeBatch, ColumnSchema, ColumnType, Date, DateTime, Ddl, Gtid, ImageMode, Op, SchemaVersion,
    SourcePosition, TableSchema, Time, Timestamp, ValueKind, ValueRef,
};

/// xorshift64*: deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// Every column type, each once, behind an INT primary key.
fn all_types_schema(version: u64, with_pk: bool) -> Arc<TableSchema> {
    let mut cols = vec![ColumnSchema::new("id", ColumnType::Int { bytes: 4 })];
    let types = [
        ColumnType::Int { bytes: 1 },
        ColumnType::Int { bytes: 8 },
        ColumnType::Float,
        ColumnType::Double,
        ColumnType::Decimal {
            precision: 20,
            scale: 4,
        },
        ColumnType::Year,
        ColumnType::Date,
        ColumnType::Time { fsp: 3 },
        ColumnType::DateTime { fsp: 6 },
        ColumnType::Timestamp { fsp: 2 },
        ColumnType::String {
            max_bytes: 40,
            binary: false,
        },
        ColumnType::String {
            max_bytes: 16,
            binary: true,
        },
        ColumnType::Blob {
            len_bytes: 2,
            binary: false,
        },
        ColumnType::Enum { bytes: 1 },
        ColumnType::Set { bytes: 8 },
        ColumnType::Bit { bits: 64 },
        ColumnType::Json,
        ColumnType::Geometry,
        ColumnType::Vector,
        ColumnType::Null,
    ];
    for (i, ty) in types.into_iter().enumerate() {
        cols.push(ColumnSchema::new(format!("c{i}"), ty));
    }
    // An unsigned BIGINT, to cover u64 beyond i64.
    let mut u = ColumnSchema::new("u", ColumnType::Int { bytes: 8 });
    u.unsigned = true;
    cols.push(u);
    Arc::new(TableSchema {
        version: SchemaVersion(version),
        db: "db".into(),
        table: format!("t{version}"),
        columns: cols,
        primary_key: if with_pk { vec![0] } else { vec![] },
    })
}

/// Owned column value for the model.
#[derive(Debug, Clone, PartialEq)]
enum V {
    Null,
    I(i64),
    U(u64),
    F(u32),
    D(u64),
    B(Vec<u8>),
    Date(Date),
    Time(Time),
    Dt(DateTime),
    Ts(Timestamp),
    Year(u16),
    Enum(u16),
    Set(u64),
    Bit(u64),
}

fn to_ref(v: &V, kind: ValueKind) -> ValueRef<'_> {
    match (v, kind) {
        (V::Null, _) => ValueRef::Null,
        (V::I(x), _) => ValueRef::Int(*x),
        (V::U(x), _) => ValueRef::UInt(*x),
        (V::F(x), _) => ValueRef::Float(f32::from_bits(*x)),
        (V::D(x), _) => ValueRef::Double(f64::from_bits(*x)),
        (V::B(b), ValueKind::Decimal) => ValueRef::Decimal(b),
        (V::B(b), ValueKind::Text) => ValueRef::Text(b),
        (V::B(b), ValueKind::Json) => ValueRef::Json(b),
        (V::B(b), ValueKind::Geometry) => ValueRef::Geometry(b),
        (V::B(b), _) => ValueRef::Bytes(b),
        (V::Date(x), _) => ValueRef::Date(*x),
        (V::Time(x), _) => ValueRef::Time(*x),
        (V::Dt(x), _) => ValueRef::DateTime(*x),
        (V::Ts(x), _) => ValueRef::Timestamp(*x),
        (V::Year(x), _) => ValueRef::Year(*x),
        (V::Enum(x), _) => ValueRef::Enum(*x),
        (V::Set(x), _) => ValueRef::Set(*x),
        (V::Bit(x), _) => ValueRef::Bit(*x),
    }
}

fn from_ref(v: ValueRef<'_>) -> V {
    match v {
        ValueRef::Null => V::Null,
        ValueRef::Int(x) => V::I(x),
        ValueRef::UInt(x) => V::U(x),
        ValueRef::Float(x) => V::F(x.to_bits()),
        ValueRef::Double(x) => V::D(x.to_bits()),
        ValueRef::Decimal(b)
        | ValueRef::Text(b)
        | ValueRef::Bytes(b)
        | ValueRef::Json(b)
        | ValueRef::Geometry(b) => V::B(b.to_vec()),
        ValueRef::Year(x) => V::Year(x),
        ValueRef::Date(x) => V::Date(x),
        ValueRef::Time(x) => V::Time(x),
        ValueRef::DateTime(x) => V::Dt(x),
        ValueRef::Timestamp(x) => V::Ts(x),
        ValueRef::Enum(x) => V::Enum(x),
        ValueRef::Set(x) => V::Set(x),
        ValueRef::Bit(x) => V::Bit(x),
    }
}

/// A random value of `kind`; a small value space sometimes, so dictionaries and deltas
/// get exercised, and the extremes (u64::MAX, negative TIME, zero dates) now and then.
fn gen_value(r: &mut Rng, c: &ColumnSchema) -> V {
    let kind = c.value_kind();
    if kind == ValueKind::Null || (c.nullable && r.chance(10)) {
        return V::Null;
    }
    let small = r.chance(50);
    match kind {
        ValueKind::Int => V::I(if small {
            r.below(10) as i64 - 5
        } else {
            r.next() as i64
        }),
        ValueKind::UInt => V::U(if r.chance(20) { u64::MAX } else { r.next() }),
        ValueKind::Float => V::F(r.next() as u32),
        ValueKind::Double => V::D(r.next()),
        ValueKind::Decimal => {
            let neg = if r.chance(30) { "-" } else { "" };
            V::B(format!("{neg}{}.{:04}", r.below(1_000_000_000), r.below(10_000)).into_bytes())
        }
        ValueKind::Year => V::Year(if r.chance(10) {
            0
        } else {
            1901 + r.below(255) as u16
        }),
        ValueKind::Date => V::Date(if r.chance(10) {
            Date::default()
        } else {
            Date {
                year: r.below(10_000) as u16,
                month: r.below(13) as u8,
                day: r.below(32) as u8,
            }
        }),
        ValueKind::Time => V::Time(Time {
            negative: r.chance(30),
            hours: r.below(839) as u32,
            minutes: r.below(60) as u8,
            seconds: r.below(60) as u8,
            micros: r.below(1000) as u32 * 1000,
        }),
        ValueKind::DateTime => V::Dt(DateTime {
            year: r.below(10_000) as u16,
            month: r.below(13) as u8,
            day: r.below(32) as u8,
            hour: r.below(24) as u8,
            minute: r.below(60) as u8,
            second: r.below(60) as u8,
            micros: r.below(1_000_000) as u32,
        }),
        ValueKind::Timestamp => V::Ts(Timestamp {
            seconds: 1_600_000_000 + r.below(if small { 100 } else { 1 << 30 }) as u32,
            micros: r.below(100) as u32 * 10_000,
        }),
        ValueKind::Text | ValueKind::Bytes | ValueKind::Geometry => {
            let n = r.below(if small { 3 } else { 60 }) as usize;
            V::B(
                (0..n)
                    .map(|_| if small { b'a' } else { r.next() as u8 })
                    .collect(),
            )
        }
        ValueKind::Json => {
            V::B(format!("{{\"k\":{}}}", r.below(if small { 3 } else { 1 << 40 })).into_bytes())
        }
        ValueKind::Enum => V::Enum(r.below(4) as u16),
        ValueKind::Set => V::Set(r.next()),
        ValueKind::Bit => V::Bit(r.next()),
        ValueKind::Null => V::Null,
    }
}

type Row = Vec<V>;

/// Appends an image holding the columns `cols` of `row`.
fn push_image(
    b: &mut ChangeBatch,
    sec: outflow_core::SectionId,
    schema: &TableSchema,
    row: &[Option<V>],
) {
    let s = b.section_mut(sec);
    s.push_image().unwrap();
    for (c, v) in row.iter().enumerate() {
        if let Some(v) = v {
            s.set(c, to_ref(v, schema.columns[c].value_kind())).unwrap();
        }
    }
}

/// Model state: per table, rows by primary key (the id column).
type Model = BTreeMap<(u64, i64), Row>;

fn key_of(row: &[V]) -> i64 {
    match row[0] {
        V::I(k) => k,
        _ => panic!("id must be an int"),
    }
}

/// Generates a batch of `txns` random transactions that are consistent with `model`
/// (updated as it goes), in `mode`: replica images (key + changed columns) or full.
fn gen_batch(
    r: &mut Rng,
    schemas: &[Arc<TableSchema>],
    model: &mut Model,
    mode: ImageMode,
    txns: usize,
    seq: &mut u64,
) -> ChangeBatch {
    let mut b = ChangeBatch::new(mode);
    b.set_start(SourcePosition::default());
    let mut pos = 4u64;
    for _ in 0..txns {
        *seq += 1;
        let gtid: Gtid = format!("0-1-{seq}").parse().unwrap();
        b.begin_transaction(Some(gtid), 1_700_000_000 + *seq as u32)
            .unwrap();
        for _ in 0..r.below(6) {
            let schema = &schemas[r.below(schemas.len() as u64) as usize];
            let v = schema.version.0;
            let sec = b.section_for(schema);
            let keys: Vec<i64> = model
                .range((v, i64::MIN)..=(v, i64::MAX))
                .map(|(k, _)| k.1)
                .collect();
            let ncols = schema.columns.len();
            // A small key space, so keys get deleted, re-inserted and updated repeatedly.
            let op = if keys.is_empty() || (keys.len() < 8 && r.chance(50)) {
                Op::Insert
            } else if r.chance(30) {
                Op::Delete
            } else if r.chance(15) {
                Op::Insert
            } else {
                Op::Update
            };
            match op {
                Op::Insert => {
                    let mut id = r.below(12) as i64;
                    if model.contains_key(&(v, id)) {
                        match (0..12).find(|k| !model.contains_key(&(v, *k))) {
                            Some(k) => id = k,
                            None => continue,
                        }
                    }
                    let mut row: Row = schema.columns.iter().map(|c| gen_value(r, c)).collect();
                    row[0] = V::I(id);
                    b.push_change(sec, Op::Insert).unwrap();
                    push_image(
                        &mut b,
                        sec,
                        schema,
                        &row.iter().cloned().map(Some).collect::<Vec<_>>(),
                    );
                    model.insert((v, id), row);
                }
                Op::Delete => {
                    let id = keys[r.below(keys.len() as u64) as usize];
                    let row = model.remove(&(v, id)).unwrap();
                    b.push_change(sec, Op::Delete).unwrap();
                    let img: Vec<Option<V>> = row
                        .iter()
                        .enumerate()
                        .map(|(c, x)| (mode == ImageMode::Full || c == 0).then(|| x.clone()))
                        .collect();
                    push_image(&mut b, sec, schema, &img);
                }
                Op::Update => {
                    let id = keys[r.below(keys.len() as u64) as usize];
                    let old = model.remove(&(v, id)).unwrap();
                    let mut new = old.clone();
                    for (c, col) in schema.columns.iter().enumerate().skip(1) {
                        if r.chance(30) {
                            new[c] = gen_value(r, col);
                        }
                    }
                    // Sometimes move the row to a free key.
                    if r.chance(10) {
                        if let Some(k) = (0..12).find(|k| !model.contains_key(&(v, *k)) && *k != id)
                        {
                            new[0] = V::I(k);
                        }
                    }
                    if mode == ImageMode::Replica && new == old {
                        model.insert((v, id), old);
                        continue;
                    }
                    b.push_change(sec, Op::Update).unwrap();
                    let before: Vec<Option<V>> = old
                        .iter()
                        .enumerate()
                        .map(|(c, x)| (mode == ImageMode::Full || c == 0).then(|| x.clone()))
                        .collect();
                    let after: Vec<Option<V>> = (0..ncols)
                        .map(|c| {
                            (mode == ImageMode::Full || old[c] != new[c]).then(|| new[c].clone())
                        })
                        .collect();
                    push_image(&mut b, sec, schema, &before);
                    push_image(&mut b, sec, schema, &after);
                    model.insert((v, key_of(&new)), new);
                }
            }
        }
        pos += 100 + r.below(1000);
        b.commit_transaction(
            if r.chance(5) {
                "binlog.000002"
            } else {
                "binlog.000001"
            },
            pos,
        )
        .unwrap();
    }
    b
}

/// Applies a batch's changes in run order to `model`, as a sink would: rows found by the
/// before image's key, after images overlaid column by column.
fn apply(b: &ChangeBatch, model: &mut Model) {
    for run in b.runs() {
        let s = &b.sections()[run.section as usize];
        let v = s.schema().version.0;
        for i in run.first..run.first + run.len {
            let c = s.change(i as usize);
            let key = |im: outflow_core::Image<'_>| match im.get(0) {
                Some(ValueRef::Int(k)) => k,
                other => panic!("key column missing: {other:?}"),
            };
            match c.op {
                Op::Insert => {
                    let after = c.after.unwrap();
                    let row: Row = (0..s.columns().len())
                        .map(|k| from_ref(after.get(k).unwrap()))
                        .collect();
                    assert!(
                        model.insert((v, key(after)), row).is_none(),
                        "insert over a live key"
                    );
                }
                Op::Delete => {
                    assert!(
                        model.remove(&(v, key(c.before.unwrap()))).is_some(),
                        "delete of a missing key"
                    );
                }
                Op::Update => {
                    let mut row = model
                        .remove(&(v, key(c.before.unwrap())))
                        .expect("update of a missing key");
                    for (k, x) in c.after.unwrap().values() {
                        row[k] = from_ref(x);
                    }
                    let k = key_of(&row);
                    assert!(
                        model.insert((v, k), row).is_none(),
                        "update onto a live key"
                    );
                }
            }
        }
    }
}

/// Ends `b` with a DDL transaction whose optional parts are drawn at random.
fn end_with_ddl(r: &mut Rng, b: &mut ChangeBatch, seq: &mut u64) {
    *seq += 1;
    let ddl = Ddl {
        db: r.chance(70).then(|| format!("db{}", r.below(3))),
        sql: format!("ALTER TABLE t{} ADD c{} INT", r.below(9), r.below(99)).into_bytes(),
        charset: r.chance(50).then_some((33, 33, 8)),
        sql_mode: r.chance(50).then(|| r.next() >> r.below(64)),
    };
    let gtid: Gtid = format!("0-1-{seq}").parse().unwrap();
    b.push_ddl(Some(gtid), 1_700_000_000, &ddl, "binlog.000001", 1 << 30)
        .unwrap();
}

fn round_trip(b: &ChangeBatch, enc: &mut Encoder, dec: &mut Decoder) -> ChangeBatch {
    let mut frame = Vec::new();
    enc.encode(b, &mut frame).unwrap();
    let mut out = ChangeBatch::default();
    dec.decode(&frame, &mut out).unwrap();
    out
}

#[test]
fn decode_of_encode_is_identity_for_random_batches() {
    for seed in 1..=60u64 {
        let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let schemas = vec![all_types_schema(10, true), all_types_schema(11, true)];
        for mode in [ImageMode::Replica, ImageMode::Full] {
            let shipping = if seed % 2 == 0 {
                SchemaShipping::EveryFrame
            } else {
                SchemaShipping::OncePerStream
            };
            let mut enc = Encoder::new(EncoderConfig {
                level: (seed % 4) as i32,
                schemas: shipping,
                ..Default::default()
            })
            .unwrap();
            let mut dec = Decoder::new(Limits::default()).unwrap();
            dec.expect_sequence(Some(0));
            let mut model = Model::new();
            let mut seq = 0;
            let mut comp = Compactor::default();
            for round in 0..3 {
                let n = 1 + r.below(40) as usize;
                let mut b = gen_batch(&mut r, &schemas, &mut model, mode, n, &mut seq);
                if r.chance(40) {
                    end_with_ddl(&mut r, &mut b, &mut seq);
                }
                let back = round_trip(&b, &mut enc, &mut dec);
                assert_eq!(back, b, "seed {seed} mode {mode:?} round {round}");
                let mut c = ChangeBatch::default();
                comp.compact(&b, &mut c).unwrap();
                let back = round_trip(&c, &mut enc, &mut dec);
                assert_eq!(
                    back, c,
                    "compacted: seed {seed} mode {mode:?} round {round}"
                );
                assert_eq!(back.end_position().unwrap(), b.end_position().unwrap());
                assert_eq!(back.ddl(), b.ddl());
            }
        }
    }
}

#[test]
fn compaction_matches_sequential_application() {
    for seed in 1..=200u64 {
        let mut r = Rng(seed.wrapping_mul(0xff51_afd7_ed55_8ccd) | 1);
        let schemas = [
            all_types_schema(20, true),
            all_types_schema(21, true),
            all_types_schema(22, false),
        ];
        for mode in [ImageMode::Replica, ImageMode::Full] {
            let mut model = Model::new();
            let mut seq = 0;
            // Some rows to start from.
            let warm = gen_batch(&mut r, &schemas, &mut model, mode, 5, &mut seq);
            drop(warm);
            let start = model.clone();
            let n = 1 + r.below(30) as usize;
            let b = gen_batch(&mut r, &schemas, &mut model, mode, n, &mut seq);
            let mut sequential = start.clone();
            apply(&b, &mut sequential);
            assert_eq!(
                sequential, model,
                "seed {seed}: the model applier itself disagrees"
            );
            let mut c = ChangeBatch::default();
            Compactor::default().compact(&b, &mut c).unwrap();
            let mut compacted = start.clone();
            if std::env::var_os("DUMP").is_some() {
                eprintln!(
                    "seed {seed} {mode:?}\n input: {}\n compacted: {}",
                    dump(&b),
                    dump(&c)
                );
            }
            apply(&c, &mut compacted);
            assert_eq!(
                compacted, model,
                "seed {seed} mode {mode:?}: compacted apply differs"
            );
            assert!(c.change_count() <= b.change_count());
            // At most one change per key and table, except a delete before a moved row.
            assert!(c.is_compacted());
        }
    }
}

#[test]
fn keyless_tables_pass_through_compaction() {
    let mut r = Rng(7);
    let s = all_types_schema(30, false);
    let mut b = ChangeBatch::new(ImageMode::Full);
    b.begin_transaction(None, 0).unwrap();
    let sec = b.section_for(&s);
    for _ in 0..5 {
        let row: Vec<Option<V>> = s
            .columns
            .iter()
            .map(|c| Some(gen_value(&mut r, c)))
            .collect();
        b.push_change(sec, Op::Insert).unwrap();
        push_image(&mut b, sec, &s, &row);
    }
    b.commit_transaction("f", 10).unwrap();
    let mut c = ChangeBatch::default();
    Compactor::default().compact(&b, &mut c).unwrap();
    assert_eq!(c.change_count(), 5);
    assert_eq!(c.sections()[0].columns(), b.sections()[0].columns());
}

/// `op(table:key[->key])` per change, for failure messages.
fn dump(b: &ChangeBatch) -> String {
    let mut out = String::new();
    for run in b.runs() {
        let s = &b.sections()[run.section as usize];
        for i in run.first..run.first + run.len {
            let c = s.change(i as usize);
            let k = |im: Option<outflow_core::Image<'_>>| match im.and_then(|im| im.get(0)) {
                Some(ValueRef::Int(k)) => k.to_string(),
                _ => "_".into(),
            };
            out.push_str(&format!(
                "{}({}:{}->{}) ",
                c.op.name(),
                s.schema().version.0,
                k(c.before),
                k(c.after)
            ));
        }
    }
    out
}

/// Writes seed inputs for the `codec_frame` fuzz target (control byte + frame, and control
/// byte + bare payload) into `$OUTFLOW_FUZZ_SEEDS`. Run by hand:
/// `OUTFLOW_FUZZ_SEEDS=fuzz/corpus/codec_frame cargo test -p outflow-codec --test roundtrip -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let Some(dir) = std::env::var_os("OUTFLOW_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let schemas = vec![all_types_schema(40, true), all_types_schema(41, false)];
    let mut n = 0;
    for seed in 1..=6u64 {
        let mut r = Rng(seed * 7919);
        for mode in [ImageMode::Replica, ImageMode::Full] {
            let mut model = Model::new();
            let mut seq = 0;
            let txns = 1 + r.below(6) as usize;
            let mut b = gen_batch(&mut r, &schemas, &mut model, mode, txns, &mut seq);
            if seed % 2 == 0 {
                end_with_ddl(&mut r, &mut b, &mut seq);
            }
            for level in [0, 1] {
                let mut enc = Encoder::new(EncoderConfig {
                    level,
                    ..Default::default()
                })
                .unwrap();
                let mut frame = Vec::new();
                enc.encode(&b, &mut frame).unwrap();
                let mut input = vec![0u8];
                input.extend_from_slice(&frame);
                std::fs::write(dir.join(format!("frame-{n}")), &input).unwrap();
                if level == 0 {
                    let meta = u32::from_le_bytes(frame[16..20].try_into().unwrap()) as usize;
                    // Bit 4 marks a version 3 frame, whose payload opens with the DDL.
                    let mut input = vec![if b.ddl().is_some() { 17u8 } else { 1 }];
                    input.extend_from_slice(&frame[outflow_codec::frame::HEADER_LEN + meta..]);
                    std::fs::write(dir.join(format!("payload-{n}")), &input).unwrap();
                }
                n += 1;
            }
        }
    }
}
