//! Prepared statements, pipelined, against a real `mariadbd` from the test kit.

use std::time::Duration;

use outflow_replication::protocol::stmt::Param;
use outflow_replication::{ConnectOptions, Connection, Error, TlsMode};
use outflow_testkit::{Server, ServerConfig};

fn options(server: &Server) -> ConnectOptions {
    let mut o = ConnectOptions::new("127.0.0.1", server.port(), "root", "");
    o.tls.mode = TlsMode::Disabled;
    o.connect_timeout = Duration::from_secs(20);
    o
}

async fn connect(server: &Server) -> Connection {
    let mut c = Connection::connect(&options(server))
        .await
        .expect("connects");
    c.query("SET NAMES binary", "setting the charset")
        .await
        .expect("SET NAMES");
    c
}

async fn server() -> Server {
    let s = Server::start(ServerConfig::new().log_bin(false)).expect("server starts");
    s.exec(
        "CREATE DATABASE t; CREATE TABLE t.v (id BIGINT PRIMARY KEY, u BIGINT UNSIGNED, \
         d DOUBLE, b MEDIUMBLOB, s VARCHAR(20) CHARACTER SET utf8mb4)",
    )
    .await
    .expect("schema");
    s
}

#[tokio::test]
async fn pipelined_executes_store_every_value_exactly() {
    let server = server().await;
    let mut c = connect(&server).await;
    let st = c
        .prepare(
            b"INSERT INTO t.v VALUES (?,?,?,?,?),(?,?,?,?,?) \
              ON DUPLICATE KEY UPDATE u=VALUES(u), b=VALUES(b)",
            "preparing",
        )
        .await
        .expect("prepares");
    assert_eq!((st.params, st.columns), (10, 0));
    // Lengths on each side of the length-encoding steps (251, 65,536), binary bytes.
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let mid = vec![0u8; 251];
    let bin = [0u8, 0xFF, b'\'', b'\\', 0x80];
    let rows: [[Param; 5]; 4] = [
        [
            Param::Int(i64::MIN),
            Param::UInt(u64::MAX),
            Param::Double(-0.5),
            Param::Bytes(&big),
            Param::Bytes("é€".as_bytes()),
        ],
        [
            Param::Int(-1),
            Param::Null,
            Param::Null,
            Param::Bytes(&mid),
            Param::Null,
        ],
        [
            Param::Int(i64::MAX),
            Param::UInt(0),
            Param::Double(1e300),
            Param::Bytes(&bin),
            Param::Bytes(b""),
        ],
        [
            Param::Int(0),
            Param::Int(7),
            Param::Int(3),
            Param::Bytes(b"x"),
            Param::Bytes(b"y"),
        ],
    ];
    c.query("SET autocommit = 0", "session").await.unwrap();
    c.queue_query(b"BEGIN");
    for pair in rows.chunks(2) {
        c.queue_execute(&st, pair.iter().flatten().copied())
            .expect("queued");
    }
    c.queue_query(b"COMMIT");
    assert_eq!(c.awaiting_replies(), 4);
    assert!(c.queued_bytes() > big.len());
    c.flush_queue("sending").await.expect("sent");
    let mut affected = Vec::new();
    for _ in 0..4 {
        let ok = c.read_reply("reading").await.expect("reply").expect("OK");
        affected.push(ok.affected_rows);
    }
    assert_eq!(affected, [0, 2, 2, 0]);
    let set = c
        .query(
            "SELECT id, u, d, HEX(b), HEX(s), LENGTH(b) FROM t.v ORDER BY id",
            "reading back",
        )
        .await
        .unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02X}")).collect::<String>();
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        set.rows,
        vec![
            vec![
                s("-9223372036854775808"),
                s("18446744073709551615"),
                s("-0.5"),
                Some(hex(&big)),
                Some(hex("é€".as_bytes())),
                s("70000")
            ],
            vec![s("-1"), None, None, Some(hex(&mid)), None, s("251")],
            vec![s("0"), s("7"), s("3"), s("78"), s("79"), s("1")],
            vec![
                s("9223372036854775807"),
                s("0"),
                s("1e300"),
                Some(hex(&bin)),
                s(""),
                s("5")
            ],
        ]
    );
    // An upsert over existing rows counts 2 per changed row, as with text.
    c.queue_execute(&st, rows[2..].iter().flatten().copied())
        .unwrap();
    assert_eq!(
        c.read_reply("upsert").await.unwrap().unwrap().affected_rows,
        0
    );
}

#[tokio::test]
async fn a_failed_execute_is_named_and_its_followers_still_run() {
    let server = server().await;
    let mut c = connect(&server).await;
    let st = c
        .prepare(b"INSERT INTO t.v (id) VALUES (?)", "preparing")
        .await
        .unwrap();
    c.query("SET autocommit = 0", "session").await.unwrap();
    c.queue_query(b"BEGIN");
    for id in [1, 1, 2] {
        c.queue_execute(&st, [Param::Int(id)]).unwrap();
    }
    let mut replies = Vec::new();
    for _ in 0..4 {
        replies.push(c.read_reply("reading").await.expect("a reply"));
    }
    let dup = replies[2].as_ref().expect_err("duplicate key");
    assert_eq!(dup.code, 1062, "{dup}");
    assert!(replies[3].is_ok(), "the next execute ran: {:?}", replies[3]);
    // Still inside the transaction: rolling back undoes the followers too.
    c.query("ROLLBACK", "rolling back").await.unwrap();
    let n = c
        .query("SELECT COUNT(*) AS n FROM t.v", "count")
        .await
        .unwrap();
    assert_eq!(n.first("n"), Some("0"));
}

#[tokio::test]
async fn caller_mistakes_and_server_refusals_are_named() {
    let server = server().await;
    let mut c = connect(&server).await;
    let e = c
        .prepare(b"INSERT INTO t.nope VALUES (?)", "preparing")
        .await;
    let e = e.expect_err("no such table").to_string();
    assert!(e.contains("1146") && e.contains("preparing"), "{e}");
    let st = c
        .prepare(b"SELECT ? + 1", "preparing")
        .await
        .expect("prepares");
    assert_eq!((st.params, st.columns), (1, 1));
    let e = c
        .queue_execute(&st, [Param::Int(1), Param::Int(2)])
        .unwrap_err();
    assert!(
        matches!(e, Error::Execute { .. }) && e.to_string().contains("takes 1 parameters, 2 given"),
        "{e}"
    );
    assert_eq!(c.awaiting_replies(), 0, "nothing was queued");
    // A statement with rows cannot be pipelined; the reply is refused by name.
    c.queue_execute(&st, [Param::Int(1)]).unwrap();
    let e = c.read_reply("reading").await.unwrap_err().to_string();
    assert!(e.contains("did the statement return rows"), "{e}");
    let e = c.read_reply("reading").await.unwrap_err().to_string();
    assert!(e.contains("no command is awaiting a reply"), "{e}");
    // A query or prepare while replies are due would read the wrong reply: refused.
    let mut c = connect(&server).await;
    c.queue_query(b"DO 1");
    let e = c.query("DO 2", "querying").await.unwrap_err().to_string();
    assert!(e.contains("1 commands still queued"), "{e}");
    let e = c
        .prepare(b"DO ?", "preparing")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("1 commands still queued"), "{e}");
    assert!(c.read_reply("reading").await.unwrap().is_ok());
    c.query("DO 2", "querying").await.expect("idle again");
    // A closed statement is unknown to the server.
    let mut c = connect(&server).await;
    let st = c.prepare(b"DO ?", "preparing").await.unwrap();
    c.close_statement(st.id).await.unwrap();
    c.queue_execute(&st, [Param::Int(1)]).unwrap();
    let e = c.read_reply("reading").await.unwrap().unwrap_err();
    assert_eq!(e.code, 1243, "{e}");
}

#[tokio::test]
async fn multi_statement_queries_give_each_result_in_order_and_stop_at_an_error() {
    use outflow_replication::QueryResult;
    let server = server().await;
    let mut o = options(&server);
    o.multi_statements = true;
    o.found_rows = true;
    let mut c = Connection::connect(&o).await.expect("connects");
    c.send_query(
        b"INSERT INTO t.v (id, u) VALUES (1, 1), (2, 2); \
          SELECT id, u FROM t.v ORDER BY id; \
          INSERT INTO t.v (id, u) VALUES (1, 1), (3, 3) ON DUPLICATE KEY UPDATE u = VALUES(u); \
          UPDATE t.v SET u = 3 WHERE id = 3",
        "testing",
    )
    .await
    .expect("sent");
    let mut results = Vec::new();
    while let Some(r) = c.next_result("testing").await.expect("reads") {
        results.push(r);
    }
    assert_eq!(results.len(), 4, "{results:?}");
    match &results[0] {
        QueryResult::Done(ok) => {
            assert_eq!(ok.affected_rows, 2);
            assert!(ok.info.starts_with("Records: 2"), "{}", ok.info);
        }
        other => panic!("{other:?}"),
    }
    match &results[1] {
        QueryResult::Rows(set) => assert_eq!(
            set.rows,
            vec![
                vec![Some("1".to_string()), Some("1".to_string())],
                vec![Some("2".to_string()), Some("2".to_string())]
            ]
        ),
        other => panic!("{other:?}"),
    }
    match &results[2] {
        // Row 1 found unchanged (counted with CLIENT_FOUND_ROWS), row 3 inserted.
        QueryResult::Done(ok) => assert!(ok.info.contains("Duplicates: 1"), "{}", ok.info),
        other => panic!("{other:?}"),
    }
    match &results[3] {
        // Found, not changed: 1 only with CLIENT_FOUND_ROWS.
        QueryResult::Done(ok) => assert_eq!(ok.affected_rows, 1),
        other => panic!("{other:?}"),
    }
    // A failing statement ends the query: nothing after it runs.
    c.send_query(
        b"DELETE FROM t.v WHERE id = 1; INSERT INTO t.v (id) VALUES (2); DELETE FROM t.v",
        "testing",
    )
    .await
    .expect("sent");
    assert!(matches!(
        c.next_result("testing").await.expect("reads"),
        Some(QueryResult::Done(ok)) if ok.affected_rows == 1
    ));
    assert!(matches!(
        c.next_result("testing").await.expect("reads"),
        Some(QueryResult::Failed(e)) if e.code == 1062
    ));
    assert!(c.next_result("testing").await.expect("reads").is_none());
    // A query while results are due is refused; once read, the connection is usable.
    c.send_query(b"SELECT 1; SELECT 2", "testing")
        .await
        .expect("sent");
    assert!(c.query("SELECT 3", "testing").await.is_err());
    assert!(c.next_result("testing").await.expect("reads").is_some());
    assert!(c.next_result("testing").await.expect("reads").is_some());
    assert!(c.next_result("testing").await.expect("reads").is_none());
    let rows = c
        .query("SELECT COUNT(*) FROM t.v", "testing")
        .await
        .expect("query");
    assert_eq!(rows.rows, vec![vec![Some("2".to_string())]]);
}

/// The applier pipelines a transaction's executes inside an XA branch. A deadlock rolls
/// the whole branch back; the executes queued behind the failed one must then be refused,
/// not run on their own and commit (as they would in a plain transaction with autocommit).
#[tokio::test]
async fn executes_after_a_deadlock_in_an_xa_branch_are_refused() {
    let server = server().await;
    server
        .exec(
            "INSERT INTO t.v (id, u) VALUES (1, 0), (2, 0), (3, 0), (4, 0); \
             INSERT INTO t.v (id, u) SELECT seq, 0 FROM t.seq_100_to_199",
        )
        .await
        .unwrap();
    let mut a = connect(&server).await;
    let mut o = options(&server);
    o.found_rows = true;
    let mut b = Connection::connect(&o).await.unwrap();
    let upsert = a
        .prepare(
            b"INSERT INTO t.v (id, u) VALUES (?,?),(?,?) ON DUPLICATE KEY UPDATE u=VALUES(u)",
            "preparing",
        )
        .await
        .unwrap();
    let update = a
        .prepare(b"UPDATE t.v SET u = u + 1 WHERE id = ?", "preparing")
        .await
        .unwrap();
    a.query("XA START 'x','0'", "xa").await.unwrap();
    // The upsert's info says how many rows it found, as a text query's does.
    a.queue_execute(
        &upsert,
        [Param::Int(1), Param::Int(5), Param::Int(9), Param::Int(9)],
    )
    .unwrap();
    let ok = a.read_reply("upsert").await.unwrap().expect("upsert runs");
    assert!(ok.info.contains("Duplicates: 1"), "{:?}", ok.info);
    assert_eq!(ok.affected_rows, 3);
    // b locks row 2 and a hundred more (more work than a, so a is the deadlock's victim), then a
    // waits for row 2 with two executes queued behind, and b asks for row 1.
    b.query("BEGIN", "b").await.unwrap();
    b.query("UPDATE t.v SET u = 7 WHERE id = 2 OR id >= 100", "b")
        .await
        .unwrap();
    a.queue_execute(&update, [Param::Int(2)]).unwrap();
    a.queue_execute(&update, [Param::Int(4)]).unwrap();
    a.queue_execute(
        &upsert,
        [Param::Int(10), Param::Int(1), Param::Int(11), Param::Int(1)],
    )
    .unwrap();
    a.flush_queue("sending").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, a_replies) = tokio::join!(
        async {
            let r = b.query("UPDATE t.v SET u = 8 WHERE id = 1", "b").await;
            let _ = b.query("COMMIT", "b").await;
            r
        },
        async {
            let mut replies = Vec::new();
            for _ in 0..3 {
                replies.push(a.read_reply("reading").await.expect("a reply"));
            }
            replies
        }
    );
    let codes: Vec<Option<u16>> = a_replies
        .iter()
        .map(|r| r.as_ref().err().map(|e| e.code))
        .collect();
    assert_eq!(
        codes[0],
        Some(1213),
        "a was the deadlock's victim: {a_replies:?}"
    );
    assert!(
        codes[1..].iter().all(Option::is_some),
        "the followers were refused: {a_replies:?}"
    );
    let _ = a.query("XA END 'x','0'", "xa").await;
    let _ = a.query("XA ROLLBACK 'x','0'", "xa").await;
    let n = a
        .query(
            "SELECT COUNT(*) AS n FROM t.v WHERE id IN (9, 10, 11) OR (id = 4 AND u > 0)",
            "count",
        )
        .await
        .unwrap();
    assert_eq!(n.first("n"), Some("0"), "nothing a sent committed");
    eprintln!("{a_replies:?}");
}
