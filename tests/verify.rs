//! `outflow verify` against two real servers from the test kit: equal tables are clean, and
//! every kind of difference (changed, missing and extra rows; keyless tables; a change in any
//! column type, down to one bit or one zero byte) is named and makes the run fail.

use std::num::NonZeroU64;

use anyhow::{ensure, Result};
use outflow::verify::{run, VerifyArgs};
use outflow_testkit::Server;

mod sink_common;
use sink_common::{server, ALL_TYPES};

/// Runs `outflow verify` as the binary does and returns (clean, printed report).
fn verify(
    source: &Server,
    target: &Server,
    tables: &str,
    extra: &[&str],
) -> Result<(bool, String)> {
    let mut args = VerifyArgs {
        source: source.url(),
        target: target.url(),
        tables: Vec::new(),
        chunk_rows: NonZeroU64::new(7).expect("non-zero"),
        max_diffs: 100,
        show_values: false,
    };
    if !tables.is_empty() {
        args.tables = tables
            .split(',')
            .map(|t| t.parse().map_err(anyhow::Error::msg))
            .collect::<Result<_>>()?;
    }
    for flag in extra {
        match *flag {
            "--show-values" => args.show_values = true,
            "--chunk-rows=1000" => args.chunk_rows = NonZeroU64::new(1000).expect("non-zero"),
            other => anyhow::bail!("unknown test flag {other}"),
        }
    }
    let mut out = Vec::new();
    let clean = run(&args, &mut out).map_err(|e| {
        e.context(format!(
            "source error log:\n{}\ntarget error log:\n{}",
            source.error_log_tail(),
            target.error_log_tail()
        ))
    })?;
    Ok((clean, String::from_utf8(out)?))
}

fn servers() -> Result<(Server, Server)> {
    Ok((server()?, server()?))
}

#[test]
fn equal_tables_are_clean() -> Result<()> {
    let (source, target) = servers()?;
    let script = format!(
        "{ALL_TYPES}
        CREATE TABLE vt.composite (a VARCHAR(10), b INT, c TEXT, PRIMARY KEY (a, b));
        INSERT INTO vt.composite SELECT CHAR(65 + seq % 5), seq, REPEAT('q', seq)
          FROM vt.seq_1_to_60;
        CREATE TABLE vt.uniq (u INT NOT NULL, v INT, UNIQUE KEY uk (u));
        INSERT INTO vt.uniq SELECT seq, seq * 2 FROM vt.seq_1_to_20;
        CREATE TABLE vt.heap (a INT, b VARCHAR(10));
        INSERT INTO vt.heap VALUES (1, 'x'), (1, 'x'), (NULL, NULL), (2, '');
        CREATE TABLE vt.empty (id INT PRIMARY KEY);"
    );
    source.run_sql_script(&script)?;
    target.run_sql_script(&script)?;
    let (clean, out) = verify(&source, &target, "", &[])?;
    ensure!(clean, "equal servers reported as different:\n{out}");
    for table in ["vt.types", "vt.composite", "vt.uniq", "vt.heap", "vt.empty"] {
        ensure!(
            out.contains(&format!("{table}: ok")),
            "{table} missing from the report:\n{out}"
        );
    }
    // 60 rows in chunks of 7: nine chunks (the last one open above).
    ensure!(
        out.contains("vt.composite: ok (60 rows, 9 chunks, PRIMARY KEY)"),
        "{out}"
    );
    ensure!(
        out.contains("vt.uniq: ok (20 rows, 3 chunks, unique key uk)"),
        "{out}"
    );
    ensure!(
        out.contains("vt.heap: ok (4 rows, 1 chunks, no key"),
        "{out}"
    );
    ensure!(
        out.contains("5 tables compared, 0 with differences"),
        "{out}"
    );
    Ok(())
}

#[test]
fn changed_missing_and_extra_rows_are_named() -> Result<()> {
    let (source, target) = servers()?;
    let script = "CREATE DATABASE app;
        CREATE TABLE app.t (id INT PRIMARY KEY, k INT, c CHAR(20), pad CHAR(10));
        INSERT INTO app.t SELECT seq, seq % 7, CONCAT('c', seq), 'pad' FROM app.seq_1_to_50;";
    source.run_sql_script(script)?;
    target.run_sql_script(script)?;
    target.run_sql_script(
        "UPDATE app.t SET c = 'secret-value', k = NULL WHERE id = 5;
         DELETE FROM app.t WHERE id = 17;
         INSERT INTO app.t VALUES (0, 0, 'below', 'p'), (1000, 0, 'above', 'p');",
    )?;
    let (clean, out) = verify(&source, &target, "app.t", &[])?;
    ensure!(!clean, "differences not reported:\n{out}");
    for line in [
        "app.t: 4 differences (source 50 rows, target 51 rows",
        "  changed (id=5): k, c",
        "  missing on target (id=17)",
        "  extra on target (id=0)",
        "  extra on target (id=1000)",
        "1 with differences, 4 differences",
    ] {
        ensure!(out.contains(line), "expected {line:?} in:\n{out}");
    }
    ensure!(
        !out.contains("secret-value"),
        "values printed without --show-values:\n{out}"
    );
    let (_, out) = verify(&source, &target, "app.t", &["--show-values"])?;
    for line in [
        "    k: source 5 | target NULL",
        "    c: source 'c5' | target 'secret-value'",
        "    id=17, k=3, c='c17', pad='pad'",
        "    id=1000, k=0, c='above', pad='p'",
    ] {
        ensure!(out.contains(line), "expected {line:?} in:\n{out}");
    }
    Ok(())
}

#[test]
fn keyless_tables_compare_as_multisets() -> Result<()> {
    let (source, target) = servers()?;
    let script = "CREATE DATABASE app;
        CREATE TABLE app.log (a INT, b VARCHAR(10));
        INSERT INTO app.log VALUES (1, 'x'), (1, 'x'), (2, 'y'), (NULL, 'z');";
    source.run_sql_script(script)?;
    target.run_sql_script(script)?;
    // One copy of a duplicated row gone, and a NULL turned into an empty string: a row
    // count and an XOR-style checksum would both miss the first.
    target.run_sql_script(
        "DELETE FROM app.log WHERE a = 1 LIMIT 1; INSERT INTO app.log VALUES (3, 'w');
         UPDATE app.log SET b = '' WHERE a = 2; UPDATE app.log SET b = NULL WHERE a IS NULL;",
    )?;
    let (clean, out) = verify(&source, &target, "app.log", &["--show-values"])?;
    ensure!(!clean, "{out}");
    ensure!(
        out.contains("app.log: 6 differences (source 4 rows, target 4 rows"),
        "{out}"
    );
    ensure!(
        out.contains("occurs 2 times on the source, 1 on the target"),
        "{out}"
    );
    for row in [
        "a=1, b='x'",
        "a=3, b='w'",
        "a=2, b=''",
        "a=2, b='y'",
        "a=NULL, b=NULL",
        "a=NULL, b='z'",
    ] {
        ensure!(
            out.contains(&format!("    {row}\n")),
            "row {row} not named:\n{out}"
        );
    }
    Ok(())
}

#[test]
fn a_change_in_any_column_type_is_found() -> Result<()> {
    let (source, target) = servers()?;
    source.run_sql_script(ALL_TYPES)?;
    target.run_sql_script(ALL_TYPES)?;
    // The smallest change each type allows: one bit, the last decimal digit, one zero byte,
    // NULL against an empty value, one microsecond.
    let changes = [
        ("ti", "UPDATE vt.types SET ti = -127 WHERE id = 2"),
        ("bu", "UPDATE vt.types SET bu = 18446744073709551614 WHERE id = 2"),
        ("d65", "UPDATE vt.types SET d65 = '-12345678901234567890123456789012345.123456789012345678901234567892' WHERE id = 2"),
        ("d52", "UPDATE vt.types SET d52 = NULL WHERE id = 3"),
        ("f", "UPDATE vt.types SET f = 3.4000001e38 WHERE id = 2"),
        ("d", "UPDATE vt.types SET d = 0.10000000000000002 WHERE id = 2"),
        ("b64", "UPDATE vt.types SET b64 = b'1000000000000000000000000000000000000000000000000000000000000011' WHERE id = 2"),
        ("b1", "UPDATE vt.types SET b1 = b'1' WHERE id = 3"),
        ("dt", "UPDATE vt.types SET dt = '0000-00-01' WHERE id = 2"),
        ("dtm6", "UPDATE vt.types SET dtm6 = '1000-01-01 00:00:00.000002' WHERE id = 3"),
        ("ts", "SET time_zone = '+01:00'; UPDATE vt.types SET ts = '1970-01-01 01:00:02' WHERE id = 3"),
        ("tm", "UPDATE vt.types SET tm = '-838:59:58' WHERE id = 2"),
        ("vc", "UPDATE vt.types SET vc = '😁 naïve ü' WHERE id = 2"),
        ("ch", "UPDATE vt.types SET ch = NULL WHERE id = 3"),
        ("l1", "UPDATE vt.types SET l1 = 'cafe' WHERE id = 2"),
        ("bn", "UPDATE vt.types SET bn = X'0000000000000002' WHERE id = 2"),
        ("vb", "UPDATE vt.types SET vb = X'00ff0000' WHERE id = 2"),
        ("bl", "UPDATE vt.types SET bl = X'00' WHERE id = 2"),
        ("lt", "UPDATE vt.types SET lt = CONCAT(REPEAT('z', 69999), 'y') WHERE id = 2"),
        ("st", "UPDATE vt.types SET st = 'x' WHERE id = 2"),
        ("js", "UPDATE vt.types SET js = '{\"a\": [1, null, \"😁\"]}' WHERE id = 2"),
        ("pt", "UPDATE vt.types SET pt = POINT(1.5, -2.5) WHERE id = 2"),
        ("ip", "UPDATE vt.types SET ip = '::2' WHERE id = 2"),
        ("uu", "UPDATE vt.types SET uu = '123e4567-e89b-12d3-a456-426614174001' WHERE id = 2"),
    ];
    let mut failures = Vec::new();
    for (column, change) in changes {
        target.run_sql_script(&format!("SET NAMES utf8mb4; {change};"))?;
        let (clean, out) = verify(&source, &target, "vt.types", &[])?;
        let id = if change.ends_with("id = 3") { 3 } else { 2 };
        let expected = format!("  changed (id={id}): {column}\n");
        if clean || !out.contains(&expected) {
            failures.push(format!("{column}: expected {expected:?} in:\n{out}"));
        }
        // Put the target back for the next column.
        target.run_sql_script(&format!(
            "SET NAMES utf8mb4; DELETE FROM vt.types; {}",
            ALL_TYPES
                .split_once("INSERT INTO")
                .map(|(_, rest)| format!("INSERT INTO{rest}"))
                .unwrap_or_default()
        ))?;
        let (clean, out) = verify(&source, &target, "vt.types", &[])?;
        ensure!(clean, "target not restored after {column}:\n{out}");
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[test]
fn missing_tables_and_column_changes_are_differences() -> Result<()> {
    let (source, target) = servers()?;
    source.run_sql_script(
        "CREATE DATABASE app; CREATE TABLE app.a (id INT PRIMARY KEY, v INT);
         CREATE TABLE app.only_source (id INT PRIMARY KEY); INSERT INTO app.a VALUES (1, 1);",
    )?;
    target.run_sql_script(
        "CREATE DATABASE app; CREATE TABLE app.a (id INT PRIMARY KEY, v BIGINT);
         CREATE TABLE app.only_target (id INT PRIMARY KEY); INSERT INTO app.a VALUES (1, 1);",
    )?;
    let (clean, out) = verify(&source, &target, "", &[])?;
    ensure!(!clean, "{out}");
    for line in [
        "app.only_source: 1 differences",
        "  table missing on the target",
        "app.only_target: 1 differences",
        "  table missing on the source",
        "    source: id int(11) NOT NULL, v int(11)",
        "    target: id int(11) NOT NULL, v bigint(20)",
    ] {
        ensure!(out.contains(line), "expected {line:?} in:\n{out}");
    }
    // A table that exists nowhere is an error, not a difference.
    let error = verify(&source, &target, "app.nowhere", &[]).expect_err("no such table");
    ensure!(
        format!("{error:#}").contains("app.nowhere: no such table"),
        "{error:#}"
    );
    Ok(())
}

#[test]
fn large_chunks_and_many_rows() -> Result<()> {
    // The default chunk size over a table spanning several chunks, with a composite key
    // whose first column repeats across chunk boundaries.
    let (source, target) = servers()?;
    let script = "CREATE DATABASE app;
        CREATE TABLE app.big (g INT, n INT, v VARCHAR(40), PRIMARY KEY (g, n));
        INSERT INTO app.big SELECT seq % 3, seq, MD5(seq) FROM app.seq_1_to_5000;";
    source.run_sql_script(script)?;
    target.run_sql_script(script)?;
    target.run_sql_script("UPDATE app.big SET v = 'x' WHERE g = 1 AND n = 2500;")?;
    let (clean, out) = verify(&source, &target, "app.big", &["--chunk-rows=1000"])?;
    ensure!(!clean, "{out}");
    // 5000 rows in chunks of 1000: five bounded chunks and the open one above them.
    ensure!(out.contains("1 of 6 chunks differ"), "{out}");
    ensure!(out.contains("  changed (g=1, n=2500): v"), "{out}");
    Ok(())
}
