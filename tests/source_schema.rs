//! Schema tracking against a real server: DDL in the middle of the stream (add, drop,
//! reorder, change columns, rename tables, CREATE ... LIKE / SELECT, TRUNCATE), decoded
//! afterwards from the server's binlog file with the tracked schema. Every row image must
//! carry the right column names and values at every point. Then the history: a restart at
//! a checkpoint taken before later DDL decodes the events after it with the old schema,
//! while the newest schema fails the TABLE_MAP check there.

use std::collections::HashMap;
use std::path::Path;

use outflow_binlog::walk::{RowsContext, Visitor, Walker};
use outflow_binlog::{
    DecodeError, Decoded, Event, EventBuffer, RowIter, RowsEvent, TableInfo, Value,
};
use outflow_core::BinlogPosition;
use outflow_source::filter::{Filter, FilterConfig};
use outflow_source::schema::history::HistoryStore;
use outflow_source::schema::{load, EventPosition, SchemaTracker};
use outflow_source::SourceTables;
use outflow_testkit::{RowMetadata, Server, ServerConfig};

/// One decoded row image: table, then (column name, value text) in column order.
type Image = (String, Vec<(String, String)>);

fn render(v: &Value<'_>) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Text(b) | Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        other => {
            let mut s = String::new();
            match other.render_text(&mut s) {
                Ok(true) => s,
                _ => format!("{other:?}"),
            }
        }
    }
}

#[derive(Debug)]
#[allow(dead_code)] // Read through Debug in failure messages.
enum Fail {
    Decode(DecodeError),
    Schema(String),
}

impl From<DecodeError> for Fail {
    fn from(e: DecodeError) -> Self {
        Fail::Decode(e)
    }
}

/// Feeds events to the tracker and filters, collects row images.
struct Collect {
    tables: SourceTables,
    file: String,
    images: Vec<Image>,
    decoded_tables: HashMap<String, usize>,
}

impl Visitor for Collect {
    type Error = Fail;

    fn event(&mut self, pos: u64, d: &Decoded<'_>) -> Result<(), Fail> {
        let at = EventPosition {
            binlog: Some(BinlogPosition {
                file: self.file.clone(),
                pos,
            }),
            gtid: None,
        };
        self.tables
            .on_event(&at, d)
            .map_err(|e| Fail::Schema(e.to_string()))?;
        Ok(())
    }

    fn wants(&mut self, table: &TableInfo) -> bool {
        self.tables.wants(table)
    }

    fn rows(
        &mut self,
        _ctx: RowsContext<'_>,
        _event: &RowsEvent<'_>,
        table: &TableInfo,
        rows: RowIter<'_>,
    ) -> Result<(), Fail> {
        let qn = table.qualified_name();
        *self.decoded_tables.entry(qn.clone()).or_default() += 1;
        for change in rows {
            let change = change.map_err(|kind| DecodeError {
                pos: 0,
                event_type: None,
                kind,
            })?;
            for row in change.images() {
                let mut vals = Vec::new();
                for v in row.values() {
                    let (i, v) = v.map_err(|kind| DecodeError {
                        pos: 0,
                        event_type: None,
                        kind,
                    })?;
                    let name = table.columns[i].name.as_deref().unwrap_or("?").to_string();
                    vals.push((name, render(&v)));
                }
                self.images.push((qn.clone(), vals));
            }
        }
        Ok(())
    }
}

/// Decodes `path` as a replica dumping from `start` would see it: the FORMAT_DESCRIPTION,
/// then every event at or after `start`.
fn decode_from(
    path: &Path,
    start: u64,
    tracker: SchemaTracker,
    filter: Filter,
) -> Result<(Vec<Image>, HashMap<String, usize>), String> {
    let tables = SourceTables::new(tracker, filter);
    let mut walker = Walker::new();
    walker.decoder().set_table_hook(tables.hook());
    let mut v = Collect {
        tables,
        file: path.file_name().unwrap().to_string_lossy().into_owned(),
        images: Vec::new(),
        decoded_tables: HashMap::new(),
    };
    let bytes = std::fs::read(path).unwrap();
    let mut buf = EventBuffer::new(0);
    buf.spare(bytes.len())[..bytes.len()].copy_from_slice(&bytes);
    buf.commit(bytes.len());
    assert!(buf.take_magic().unwrap());
    while let Some((pos, ev)) = buf.next_event().unwrap() {
        if pos != 4 && pos < start {
            continue;
        }
        walker
            .process(pos, ev, &mut v)
            .map_err(|e| format!("{e:?}"))?;
    }
    Ok((v.images, v.decoded_tables))
}

fn img(table: &str, cols: &[(&str, &str)]) -> Image {
    (
        table.to_string(),
        cols.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    )
}

/// The statements after the checkpoint and the images they must produce.
fn after_checkpoint() -> (Vec<&'static str>, Vec<Image>) {
    let sql = vec![
        "INSERT INTO t VALUES (3, 3, 30)",
        "ALTER TABLE t MODIFY b INT NOT NULL FIRST",
        "INSERT INTO t VALUES (40, 4, 4)",
        "RENAME TABLE t TO u",
        "INSERT INTO u VALUES (50, 5, 5)",
        "ALTER TABLE u CHANGE c cc VARCHAR(30), ADD d INT UNSIGNED FIRST",
        "INSERT INTO u VALUES (4000000000, 60, 6, 'six')",
        "UPDATE u SET cc = 'SIX' WHERE id = 6",
        "DELETE FROM u WHERE id = 1",
        "CREATE TABLE v LIKE u",
        "INSERT INTO v VALUES (1, 2, 3, 'v')",
        "CREATE TABLE w SELECT 7 AS x, 'sel' AS y",
        "INSERT INTO w VALUES (8, 'ins')",
        "TRUNCATE TABLE v",
        "ALTER TABLE u DROP PRIMARY KEY, ADD PRIMARY KEY (id, b), DROP COLUMN d",
        "INSERT INTO u VALUES (70, 7, 'seven')",
    ];
    let u4 = |d: &str, b: &str, id: &str, cc: &str| {
        img("app.u", &[("d", d), ("b", b), ("id", id), ("cc", cc)])
    };
    let images = vec![
        img("app.t", &[("id", "3"), ("c", "3"), ("b", "30")]),
        img("app.t", &[("b", "40"), ("id", "4"), ("c", "4")]),
        img("app.u", &[("b", "50"), ("id", "5"), ("c", "5")]),
        u4("4000000000", "60", "6", "six"),
        u4("4000000000", "60", "6", "six"),
        u4("4000000000", "60", "6", "SIX"),
        u4("NULL", "10", "1", "18446744073709551615"),
        img("app.v", &[("d", "1"), ("b", "2"), ("id", "3"), ("cc", "v")]),
        img("app.w", &[("x", "7"), ("y", "sel")]),
        img("app.w", &[("x", "8"), ("y", "ins")]),
        img("app.u", &[("b", "70"), ("id", "7"), ("cc", "seven")]),
    ];
    (sql, images)
}

async fn run(metadata: RowMetadata) {
    let server = Server::start(ServerConfig::new().binlog_row_metadata(metadata)).unwrap();
    server
        .exec(
            "CREATE DATABASE app; CREATE TABLE app.t (id INT UNSIGNED NOT NULL PRIMARY KEY, \
             a VARCHAR(20), b INT)",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut conn = server.conn().await.unwrap();
    let mut tracker = load::tracker_from_server(&mut conn, Filter::default())
        .await
        .unwrap();
    let initial = tracker.clone();
    let mut store = HistoryStore::create(dir.path(), &mut tracker).unwrap();
    let p0 = server.binlog_position().await.unwrap();

    let before = [
        "INSERT INTO t VALUES (1, 'one', 10), (4294967295, 'max', -5)",
        "ALTER TABLE t ADD COLUMN c BIGINT UNSIGNED AFTER id",
        "UPDATE t SET c = 18446744073709551615 WHERE id = 1",
        "ALTER TABLE t DROP COLUMN a",
    ];
    for sql in before {
        server.exec(&format!("USE app; {sql}")).await.unwrap();
    }
    let p1 = server.binlog_position().await.unwrap();
    let (after, after_images) = after_checkpoint();
    for sql in &after {
        server.exec(&format!("USE app; {sql}")).await.unwrap();
    }
    let file = server.binlog_files().unwrap().pop().unwrap();
    assert_eq!(
        file.file_name().unwrap().to_string_lossy(),
        p0.file,
        "one binlog file"
    );

    // The whole stream from P0 with the tracker loaded at P0.
    let (images, _) = decode_from(&file, p0.position, initial.clone(), Filter::default())
        .unwrap_or_else(|e| panic!("decode from P0 failed: {e}"));
    let mut want = vec![
        img("app.t", &[("id", "1"), ("a", "one"), ("b", "10")]),
        img("app.t", &[("id", "4294967295"), ("a", "max"), ("b", "-5")]),
        img(
            "app.t",
            &[("id", "1"), ("c", "NULL"), ("a", "one"), ("b", "10")],
        ),
        img(
            "app.t",
            &[
                ("id", "1"),
                ("c", "18446744073709551615"),
                ("a", "one"),
                ("b", "10"),
            ],
        ),
    ];
    want.extend(after_images.iter().cloned());
    assert_eq!(
        images, want,
        "rows decoded with the tracked schema ({metadata:?})"
    );

    // The same stream, tracked step by step into the history, with a checkpoint at P1.
    let shared_t = initial.clone();
    let mut t = shared_t;
    let bytes = std::fs::read(&file).unwrap();
    let mut buf = EventBuffer::new(0);
    buf.spare(bytes.len())[..bytes.len()].copy_from_slice(&bytes);
    buf.commit(bytes.len());
    buf.take_magic().unwrap();
    let mut d = outflow_binlog::Decoder::new();
    let mut checkpoint = None;
    while let Some((pos, ev)) = buf.next_event().unwrap() {
        if pos >= p1.position && checkpoint.is_none() {
            store.save(&mut t).unwrap();
            checkpoint = Some(t.seq());
        }
        let dec = d.decode(pos, ev).unwrap();
        if pos < p0.position {
            continue;
        }
        if let Event::Query(q) = dec.event {
            let at = EventPosition::default();
            t.apply_query(
                &at,
                &String::from_utf8_lossy(q.schema),
                &String::from_utf8_lossy(q.query),
            )
            .unwrap();
        }
    }
    store.save(&mut t).unwrap();
    drop(store);
    let checkpoint = checkpoint.unwrap();
    assert!(
        t.seq() > checkpoint + 5,
        "DDL after the checkpoint was recorded"
    );

    // Without names in the binlog, the newest schema cannot decode the events after P1
    // (table `t` no longer exists in it): an error naming the table, not a wrong decode.
    // With FULL metadata the tracker adopts `t` from its TABLE_MAP instead.
    if metadata == RowMetadata::NoLog {
        let (_, newest) = HistoryStore::open(dir.path(), Filter::default()).unwrap();
        let err = decode_from(&file, p1.position, newest, Filter::default()).unwrap_err();
        assert!(
            err.contains("app.t") && err.contains("no schema known"),
            "{err}"
        );
    }

    // Restart at the checkpoint: the events after P1 decode with the schema of P1.
    let (_, old) = HistoryStore::open_at(dir.path(), Filter::default(), checkpoint).unwrap();
    assert_eq!(
        old.table("app", "t").map(|s| s.columns.len()),
        Some(3),
        "rewound to id, c, b"
    );
    let (images, _) = decode_from(&file, p1.position, old, Filter::default())
        .unwrap_or_else(|e| panic!("decode from the checkpoint failed: {e}"));
    assert_eq!(images, after_images, "restart decodes with the old schema");

    // A filter decided at TABLE_MAP time: the ignored table's row events are never decoded.
    let ignore_v = Filter::new(&FilterConfig {
        ignore_table: vec!["app.v".into()],
        ..Default::default()
    })
    .unwrap();
    let (images, decoded) = decode_from(&file, p0.position, initial, ignore_v).unwrap();
    assert!(images.iter().all(|(t, _)| t != "app.v"));
    assert_eq!(decoded.get("app.v"), None);
    assert_eq!(images.len(), want.len() - 1);
    let _ = conn.disconnect().await;
}

#[tokio::test]
async fn ddl_mid_stream_without_row_metadata() {
    run(RowMetadata::NoLog).await;
}

#[tokio::test]
async fn ddl_mid_stream_with_full_row_metadata() {
    run(RowMetadata::Full).await;
}
