//! What a statement of a QUERY event is: DDL of some kind, a data change (statement-based
//! replication), or transaction control. Read from the first words only (comments skipped),
//! so it costs little and never fails; the codec uses it to refuse statement-based changes,
//! the sinks to pick the DDL policy by kind.

use std::fmt;

/// What a standalone statement of the binlog is, as far as a relay is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementKind {
    /// A definition or administration statement, relayed as DDL.
    Ddl(DdlKind),
    /// A data change logged as a statement (`binlog_format=STATEMENT` or `MIXED`):
    /// `INSERT`, `UPDATE`, `DELETE`, `REPLACE`, `LOAD DATA`/`LOAD XML`, `CALL`, `DO`,
    /// `SELECT`, `WITH`. A row-based relay cannot carry it.
    Dml,
    /// Transaction control (`BEGIN`, `COMMIT`, `ROLLBACK`, `SAVEPOINT`, `RELEASE`, `XA`,
    /// `START TRANSACTION`): no change of its own.
    Control,
}

impl StatementKind {
    /// Classifies `sql` by its first words.
    pub fn of(sql: impl AsRef<[u8]>) -> StatementKind {
        let sql = sql.as_ref();
        let words = Words::read(sql);
        match words.get(0) {
            Some(
                "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "LOAD" | "CALL" | "DO" | "SELECT"
                | "WITH",
            ) => StatementKind::Dml,
            Some("BEGIN" | "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" | "XA" | "START") => {
                StatementKind::Control
            }
            _ => StatementKind::Ddl(DdlKind::of(sql)),
        }
    }
}

/// At most `max` bytes of a statement for a message, cut at a character boundary and
/// marked when cut; invalid UTF-8 shows as replacement characters.
pub fn shorten(sql: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(sql);
    let text = text.trim();
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The kinds of DDL a policy can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DdlKind {
    /// `CREATE [OR REPLACE] TABLE`.
    CreateTable,
    /// `ALTER TABLE` (columns, keys, options, rename).
    AlterTable,
    /// `DROP TABLE`.
    DropTable,
    /// `RENAME TABLE`.
    RenameTable,
    /// `TRUNCATE [TABLE]`.
    TruncateTable,
    /// `CREATE [UNIQUE|FULLTEXT|SPATIAL] INDEX`.
    CreateIndex,
    /// `DROP INDEX`.
    DropIndex,
    /// `CREATE DATABASE|SCHEMA`.
    CreateDatabase,
    /// `ALTER DATABASE|SCHEMA`.
    AlterDatabase,
    /// `DROP DATABASE|SCHEMA`.
    DropDatabase,
    /// Anything else (views, routines, triggers, grants, ...).
    Other,
}

impl DdlKind {
    /// Every kind, for configuration help and tests.
    pub const ALL: [DdlKind; 11] = [
        DdlKind::CreateTable,
        DdlKind::AlterTable,
        DdlKind::DropTable,
        DdlKind::RenameTable,
        DdlKind::TruncateTable,
        DdlKind::CreateIndex,
        DdlKind::DropIndex,
        DdlKind::CreateDatabase,
        DdlKind::AlterDatabase,
        DdlKind::DropDatabase,
        DdlKind::Other,
    ];

    /// The name used in configuration: `create_table`, `alter_table`, ...
    pub fn name(self) -> &'static str {
        match self {
            DdlKind::CreateTable => "create_table",
            DdlKind::AlterTable => "alter_table",
            DdlKind::DropTable => "drop_table",
            DdlKind::RenameTable => "rename_table",
            DdlKind::TruncateTable => "truncate_table",
            DdlKind::CreateIndex => "create_index",
            DdlKind::DropIndex => "drop_index",
            DdlKind::CreateDatabase => "create_database",
            DdlKind::AlterDatabase => "alter_database",
            DdlKind::DropDatabase => "drop_database",
            DdlKind::Other => "other",
        }
    }

    /// The kind a configuration name stands for.
    pub fn from_name(name: &str) -> Option<DdlKind> {
        DdlKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Classifies a statement by its first words (comments and `/*! ... */` version
    /// comments are skipped; their content is not read). Text that is no DDL at all is
    /// [`DdlKind::Other`]: see [`StatementKind::of`] to tell DDL from DML.
    pub fn of(sql: impl AsRef<[u8]>) -> DdlKind {
        let words = Words::read(sql.as_ref());
        let mut all = [""; MAX_WORDS];
        for (i, slot) in all.iter_mut().enumerate().take(words.n) {
            *slot = words.get(i).unwrap_or("");
        }
        let w = &all[..words.n];
        let skip = |w: &[&str], noise: &[&str]| -> usize {
            w.iter().take_while(|x| noise.contains(x)).count()
        };
        match w.first().copied() {
            Some("CREATE") => {
                let rest = &w[1..];
                let n = skip(
                    rest,
                    &[
                        "OR",
                        "REPLACE",
                        "TEMPORARY",
                        "UNIQUE",
                        "FULLTEXT",
                        "SPATIAL",
                        "ONLINE",
                        "OFFLINE",
                    ],
                );
                match rest.get(n).copied() {
                    Some("TABLE") => DdlKind::CreateTable,
                    Some("INDEX") => DdlKind::CreateIndex,
                    Some("DATABASE" | "SCHEMA") => DdlKind::CreateDatabase,
                    _ => DdlKind::Other,
                }
            }
            Some("ALTER") => {
                let rest = &w[1..];
                let n = skip(rest, &["ONLINE", "OFFLINE", "IGNORE"]);
                match rest.get(n).copied() {
                    Some("TABLE") => DdlKind::AlterTable,
                    Some("DATABASE" | "SCHEMA") => DdlKind::AlterDatabase,
                    _ => DdlKind::Other,
                }
            }
            Some("DROP") => {
                let rest = &w[1..];
                let n = skip(rest, &["TEMPORARY", "ONLINE", "OFFLINE"]);
                match rest.get(n).copied() {
                    Some("TABLE" | "TABLES") => DdlKind::DropTable,
                    Some("INDEX") => DdlKind::DropIndex,
                    Some("DATABASE" | "SCHEMA") => DdlKind::DropDatabase,
                    _ => DdlKind::Other,
                }
            }
            Some("RENAME") if w.get(1) == Some(&"TABLE") || w.get(1) == Some(&"TABLES") => {
                DdlKind::RenameTable
            }
            Some("TRUNCATE") => DdlKind::TruncateTable,
            _ => DdlKind::Other,
        }
    }
}

impl fmt::Display for DdlKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A statement the initial snapshot ships to the target itself, in a frame marked as
/// snapshot, so that the target forgets rows of an interrupted earlier read which the
/// stream will not correct (see `outflow_source::snapshot`). Sinks accept exactly these
/// shapes there and nothing else: [`SnapshotStatement::parse`] takes only the text
/// [`SnapshotStatement`]'s `Display` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotStatement {
    /// ``TRUNCATE TABLE `db`.`t` ``: the table is read again from its start.
    Truncate {
        /// Database.
        db: String,
        /// Table.
        table: String,
    },
    /// ``DELETE FROM `db`.`t` WHERE (`k1`, `k2`) > (v1, v2)``: the table continues after its
    /// last recorded key, and rows above it can only be the target's copy of a chunk that
    /// was shipped but not recorded before a crash.
    DeleteAfter {
        /// Database.
        db: String,
        /// Table.
        table: String,
        /// The primary key's columns, in key order (all integers).
        columns: Vec<String>,
        /// The last recorded key, one value per column, each within `i64::MIN..=u64::MAX`.
        after: Vec<i128>,
    },
}

/// Why a text is no [`SnapshotStatement`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a snapshot statement: {0}")]
pub struct SnapshotStatementError(String);

/// Backquotes an identifier, doubling backquotes inside it.
fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

impl SnapshotStatement {
    /// `db.table` of the statement, for messages.
    pub fn qualified_name(&self) -> String {
        let (SnapshotStatement::Truncate { db, table }
        | SnapshotStatement::DeleteAfter { db, table, .. }) = self;
        format!("{db}.{table}")
    }

    /// Reads `sql`, which must be exactly what `Display` writes for some statement (names
    /// quoted, single spaces, integers in decimal within `i64::MIN..=u64::MAX`).
    pub fn parse(sql: &[u8]) -> Result<SnapshotStatement, SnapshotStatementError> {
        let bad = |what: &str| SnapshotStatementError(what.to_string());
        let text = std::str::from_utf8(sql).map_err(|_| bad("not UTF-8"))?;
        let mut c = Cursor { rest: text };
        let parsed = if c.eat("TRUNCATE TABLE ") {
            let (db, table) = c.table()?;
            SnapshotStatement::Truncate { db, table }
        } else if c.eat("DELETE FROM ") {
            let (db, table) = c.table()?;
            c.expect(" WHERE (")?;
            let mut columns = vec![c.ident()?];
            while c.eat(", ") {
                columns.push(c.ident()?);
            }
            c.expect(") > (")?;
            let mut after = vec![c.int()?];
            while c.eat(", ") {
                after.push(c.int()?);
            }
            c.expect(")")?;
            if columns.len() != after.len() {
                return Err(bad("as many key values as key columns"));
            }
            SnapshotStatement::DeleteAfter {
                db,
                table,
                columns,
                after,
            }
        } else {
            return Err(bad("TRUNCATE TABLE or DELETE FROM"));
        };
        if !c.rest.is_empty() {
            return Err(bad("text after the statement"));
        }
        // One spelling per statement: no leading zeros, no `-0`.
        if parsed.to_string() != text {
            return Err(bad("a non-canonical spelling"));
        }
        Ok(parsed)
    }

    /// The SQL a MariaDB/MySQL target runs for it. `DeleteAfter` expands the row
    /// comparison into `(k1 > v1) OR (k1 = v1 AND k2 > v2) ...`: MariaDB 10.11 reads the
    /// whole table for `(k1, k2) > (v1, v2)` (EXPLAIN: type ALL) but a range of the primary
    /// key for the expanded form, and the rows to delete are at most a chunk.
    pub fn target_sql(&self) -> String {
        match self {
            SnapshotStatement::Truncate { .. } => self.to_string(),
            SnapshotStatement::DeleteAfter {
                db,
                table,
                columns,
                after,
            } => {
                let ors: Vec<String> = (0..columns.len())
                    .map(|i| {
                        let mut terms: Vec<String> = (0..i)
                            .map(|j| format!("{} = {}", ident(&columns[j]), after[j]))
                            .collect();
                        terms.push(format!("{} > {}", ident(&columns[i]), after[i]));
                        format!("({})", terms.join(" AND "))
                    })
                    .collect();
                format!(
                    "DELETE FROM {}.{} WHERE {}",
                    ident(db),
                    ident(table),
                    ors.join(" OR ")
                )
            }
        }
    }
}

impl fmt::Display for SnapshotStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotStatement::Truncate { db, table } => {
                write!(f, "TRUNCATE TABLE {}.{}", ident(db), ident(table))
            }
            SnapshotStatement::DeleteAfter {
                db,
                table,
                columns,
                after,
            } => {
                let columns: Vec<String> = columns.iter().map(|c| ident(c)).collect();
                let after: Vec<String> = after.iter().map(i128::to_string).collect();
                write!(
                    f,
                    "DELETE FROM {}.{} WHERE ({}) > ({})",
                    ident(db),
                    ident(table),
                    columns.join(", "),
                    after.join(", ")
                )
            }
        }
    }
}

/// Reads a [`SnapshotStatement`] left to right.
struct Cursor<'a> {
    rest: &'a str,
}

impl Cursor<'_> {
    fn eat(&mut self, s: &str) -> bool {
        match self.rest.strip_prefix(s) {
            Some(r) => {
                self.rest = r;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, s: &str) -> Result<(), SnapshotStatementError> {
        if self.eat(s) {
            Ok(())
        } else {
            Err(SnapshotStatementError(format!("`{s}` expected")))
        }
    }

    /// A backquoted name (`` `` `` inside is one backquote); never empty.
    fn ident(&mut self) -> Result<String, SnapshotStatementError> {
        self.expect("`")?;
        let mut out = String::new();
        let mut chars = self.rest.char_indices();
        while let Some((i, ch)) = chars.next() {
            if ch != '`' {
                out.push(ch);
                continue;
            }
            if self.rest[i + 1..].starts_with('`') {
                out.push('`');
                chars.next();
                continue;
            }
            self.rest = &self.rest[i + 1..];
            if out.is_empty() {
                return Err(SnapshotStatementError("an empty name".into()));
            }
            return Ok(out);
        }
        Err(SnapshotStatementError("an unterminated name".into()))
    }

    fn table(&mut self) -> Result<(String, String), SnapshotStatementError> {
        let db = self.ident()?;
        self.expect(".")?;
        Ok((db, self.ident()?))
    }

    /// A decimal integer within `i64::MIN..=u64::MAX`: every MySQL integer column's range.
    fn int(&mut self) -> Result<i128, SnapshotStatementError> {
        let neg = usize::from(self.rest.starts_with('-'));
        let digits = self.rest[neg..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        // 20 digits hold u64::MAX; more cannot be in range (and would overflow i128 parsing
        // only far later, but there is no reason to try).
        if digits == 0 || digits > 20 {
            return Err(SnapshotStatementError("an integer key value".into()));
        }
        let (num, rest) = self.rest.split_at(neg + digits);
        let v: i128 = num
            .parse()
            .map_err(|_| SnapshotStatementError("an integer key value".into()))?;
        if v < i128::from(i64::MIN) || v > i128::from(u64::MAX) {
            return Err(SnapshotStatementError(
                "a key value outside the integer column range".into(),
            ));
        }
        self.rest = rest;
        Ok(v)
    }
}

/// Words read from the start of a statement.
const MAX_WORDS: usize = 6;
/// Longer words are no keyword this module looks for; they read as "".
const MAX_WORD: usize = 16;

/// The first words of a statement, upper-cased, in fixed buffers: classifying runs once per
/// QUERY event on the codec's path, so it allocates nothing.
struct Words {
    buf: [[u8; MAX_WORD]; MAX_WORDS],
    len: [usize; MAX_WORDS],
    n: usize,
}

impl Words {
    /// Skips whitespace and comments; only ASCII words are read, so statement text in any
    /// character set works.
    fn read(b: &[u8]) -> Words {
        let mut w = Words {
            buf: [[0; MAX_WORD]; MAX_WORDS],
            len: [0; MAX_WORDS],
            n: 0,
        };
        let find = |from: usize, pat: &[u8]| {
            b.get(from..)
                .and_then(|rest| rest.windows(pat.len()).position(|x| x == pat))
                .map(|p| from + p)
        };
        let mut i = 0;
        while i < b.len() && w.n < MAX_WORDS {
            let c = b[i];
            if c.is_ascii_whitespace() {
                i += 1;
            } else if b[i..].starts_with(b"/*") {
                i = find(i + 2, b"*/").map_or(b.len(), |end| end + 2);
            } else if b[i..].starts_with(b"--") || c == b'#' {
                i = find(i, b"\n").map_or(b.len(), |end| end + 1);
            } else if c.is_ascii_alphabetic() || c == b'_' {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let word = &b[start..i];
                if word.len() <= MAX_WORD {
                    w.buf[w.n][..word.len()].copy_from_slice(word);
                    w.buf[w.n][..word.len()].make_ascii_uppercase();
                    w.len[w.n] = word.len();
                }
                w.n += 1;
            } else {
                break;
            }
        }
        w
    }

    /// Word `i`, upper-cased ("" for one too long to be a keyword).
    fn get(&self, i: usize) -> Option<&str> {
        if i >= self.n {
            return None;
        }
        // ASCII letters, digits and `_` only.
        std::str::from_utf8(&self.buf[i][..self.len[i]]).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_first_words() {
        for (sql, kind) in [
            ("CREATE TABLE t (a INT)", DdlKind::CreateTable),
            ("create or replace table t (a int)", DdlKind::CreateTable),
            (
                "/* comment */ CREATE /*!32312 IF NOT EXISTS*/ TABLE t (a int)",
                DdlKind::CreateTable,
            ),
            ("-- hi\nALTER TABLE t ADD b INT", DdlKind::AlterTable),
            ("ALTER ONLINE IGNORE TABLE t ADD b INT", DdlKind::AlterTable),
            ("DROP TABLE IF EXISTS a, b", DdlKind::DropTable),
            ("DROP TEMPORARY TABLE a", DdlKind::DropTable),
            ("RENAME TABLE a TO b", DdlKind::RenameTable),
            ("TRUNCATE t", DdlKind::TruncateTable),
            ("CREATE UNIQUE INDEX i ON t (a)", DdlKind::CreateIndex),
            ("DROP INDEX i ON t", DdlKind::DropIndex),
            ("CREATE SCHEMA s", DdlKind::CreateDatabase),
            (
                "ALTER DATABASE s CHARACTER SET utf8mb4",
                DdlKind::AlterDatabase,
            ),
            ("DROP DATABASE s", DdlKind::DropDatabase),
            ("CREATE VIEW v AS SELECT 1", DdlKind::Other),
            ("GRANT ALL ON *.* TO x", DdlKind::Other),
            ("", DdlKind::Other),
        ] {
            assert_eq!(DdlKind::of(sql), kind, "{sql}");
            assert_eq!(StatementKind::of(sql), StatementKind::Ddl(kind), "{sql}");
        }
        for k in DdlKind::ALL {
            assert_eq!(DdlKind::from_name(k.name()), Some(k));
        }
    }

    #[test]
    fn data_changes_and_transaction_control_are_not_ddl() {
        for sql in [
            "INSERT INTO t VALUES (1)",
            "insert ignore into t select * from u",
            "/* app */ UPDATE t SET a = 1",
            "DELETE FROM t WHERE a = 1",
            "REPLACE INTO t VALUES (1)",
            "LOAD DATA INFILE 'x' INTO TABLE t",
            "load xml infile 'x' into table t",
            "CALL p()",
            "DO sleep(1)",
            "SELECT f()",
            "WITH x AS (SELECT 1) UPDATE t, x SET t.a = 1",
            "# comment\n\tdelete from t",
        ] {
            assert_eq!(StatementKind::of(sql), StatementKind::Dml, "{sql}");
        }
        for sql in [
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "SAVEPOINT a",
            "ROLLBACK TO SAVEPOINT a",
            "RELEASE SAVEPOINT a",
            "XA START 'x'",
            "XA COMMIT 'x'",
            "START TRANSACTION",
        ] {
            assert_eq!(StatementKind::of(sql), StatementKind::Control, "{sql}");
        }
        // Non-UTF-8 text (a latin1 comment) still classifies.
        assert_eq!(
            StatementKind::of(b"UPDATE t SET a = '\xe9'"),
            StatementKind::Dml
        );
        assert_eq!(
            StatementKind::of(b"ALTER TABLE t COMMENT '\xe9'"),
            StatementKind::Ddl(DdlKind::AlterTable)
        );
    }

    #[test]
    fn snapshot_statements_round_trip_and_nothing_else_parses() {
        let trunc = SnapshotStatement::Truncate {
            db: "d`b".into(),
            table: "t".into(),
        };
        assert_eq!(trunc.to_string(), "TRUNCATE TABLE `d``b`.`t`");
        assert_eq!(trunc.target_sql(), trunc.to_string());
        let del = SnapshotStatement::DeleteAfter {
            db: "app".into(),
            table: "ik".into(),
            columns: vec!["a".into(), "b`x".into(), "c".into()],
            after: vec![i128::from(i64::MIN), i128::from(u64::MAX), 0],
        };
        let text = del.to_string();
        assert_eq!(
            text,
            "DELETE FROM `app`.`ik` WHERE (`a`, `b``x`, `c`) > \
             (-9223372036854775808, 18446744073709551615, 0)"
        );
        assert_eq!(
            del.target_sql(),
            "DELETE FROM `app`.`ik` WHERE (`a` > -9223372036854775808) OR \
             (`a` = -9223372036854775808 AND `b``x` > 18446744073709551615) OR \
             (`a` = -9223372036854775808 AND `b``x` = 18446744073709551615 AND `c` > 0)"
        );
        for s in [&trunc, &del] {
            assert_eq!(
                &SnapshotStatement::parse(s.to_string().as_bytes()).unwrap(),
                s
            );
        }
        assert_eq!(del.qualified_name(), "app.ik");
        let one = "DELETE FROM `d`.`t` WHERE (`id`) > (-5)";
        assert_eq!(
            SnapshotStatement::parse(one.as_bytes())
                .unwrap()
                .target_sql(),
            "DELETE FROM `d`.`t` WHERE (`id` > -5)"
        );
        for bad in [
            "",
            "TRUNCATE TABLE `d`.`t`;",
            "TRUNCATE TABLE `d`.`t`; DROP TABLE `d`.`t`",
            "truncate table `d`.`t`",
            "TRUNCATE TABLE `d`",
            "TRUNCATE TABLE d.t",
            "TRUNCATE TABLE `d`.``",
            "TRUNCATE TABLE `d`.`t",
            "DROP TABLE `d`.`t`",
            "DELETE FROM `d`.`t`",
            "DELETE FROM `d`.`t` WHERE (`a`) > ('x')",
            "DELETE FROM `d`.`t` WHERE (`a`) > (1 OR 1=1)",
            "DELETE FROM `d`.`t` WHERE (`a`) > (1) OR 1=1",
            "DELETE FROM `d`.`t` WHERE (`a`, `b`) > (1)",
            "DELETE FROM `d`.`t` WHERE (`a`) > (01)",
            "DELETE FROM `d`.`t` WHERE (`a`) > (-0)",
            "DELETE FROM `d`.`t` WHERE (`a`) > (18446744073709551616)",
            "DELETE FROM `d`.`t` WHERE (`a`) > (-9223372036854775809)",
            "DELETE FROM `d`.`t` WHERE (`a`) > (1e3)",
            "DELETE FROM `d`.`t` WHERE (`a`)>(1)",
        ] {
            assert!(SnapshotStatement::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(SnapshotStatement::parse(b"TRUNCATE TABLE `\xff`.`t`").is_err());
    }

    #[test]
    fn statements_are_shortened_at_character_boundaries() {
        assert_eq!(shorten(b"  short  ", 10), "short");
        assert_eq!(shorten("ééééé".as_bytes(), 5), "éé...");
        assert_eq!(shorten(b"abcdef", 3), "abc...");
    }
}
