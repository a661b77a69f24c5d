//! DDL on the target: which kind a statement is, and what the user wants done with each
//! kind (apply, skip or stop).
//!
//! The change model (`outflow-core`) does not carry DDL statements yet: the binlog builder
//! turns a DDL into an empty transaction that only advances the position. This module is
//! the hook for when it does: whoever receives a DDL in stream order hands it to
//! [`crate::Applier::apply_ddl`] between batches, which runs it, skips it or stops,
//! by the policy for its [`DdlKind`].
//!
//! Exactly once: MariaDB and MySQL commit DDL implicitly, so the statement cannot share a
//! transaction with the checkpoint. A crash between the two re-delivers the DDL; the errors
//! a second run of the same statement gives ("table exists", "duplicate column", "can't
//! drop", ...) are then taken as "already applied" ([`DdlOutcome::AlreadyApplied`]).

use std::fmt;

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
    /// comments are skipped; their content is not read).
    pub fn of(sql: &str) -> DdlKind {
        let words = leading_words(sql, 6);
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
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

/// The first `n` words of `sql`, upper-cased, skipping whitespace and comments.
fn leading_words(sql: &str, n: usize) -> Vec<String> {
    let b = sql.as_bytes();
    let mut i = 0;
    let mut words = Vec::new();
    while i < b.len() && words.len() < n {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if b[i..].starts_with(b"/*") {
            i = match sql[i + 2..].find("*/") {
                Some(end) => i + 2 + end + 2,
                None => b.len(),
            };
        } else if b[i..].starts_with(b"--") || c == b'#' {
            i = match sql[i..].find('\n') {
                Some(end) => i + end + 1,
                None => b.len(),
            };
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            words.push(sql[start..i].to_ascii_uppercase());
        } else {
            break;
        }
    }
    words
}

/// What to do with a DDL statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdlPolicy {
    /// Run it on the target, in stream order.
    Apply,
    /// Leave the target's schema alone (the statement is logged and counted).
    Skip,
    /// Stop, naming the statement's kind and position.
    Stop,
}

/// A policy per DDL kind, with a default for the kinds not named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdlPolicies {
    /// For kinds without an override (default [`DdlPolicy::Apply`]).
    pub default: DdlPolicy,
    /// Per-kind choices.
    pub overrides: Vec<(DdlKind, DdlPolicy)>,
}

impl Default for DdlPolicies {
    fn default() -> Self {
        DdlPolicies {
            default: DdlPolicy::Apply,
            overrides: Vec::new(),
        }
    }
}

impl DdlPolicies {
    /// The same policy for every kind.
    pub fn all(policy: DdlPolicy) -> Self {
        DdlPolicies {
            default: policy,
            overrides: Vec::new(),
        }
    }

    /// The policy for `kind`.
    pub fn policy(&self, kind: DdlKind) -> DdlPolicy {
        self.overrides
            .iter()
            .rev()
            .find(|(k, _)| *k == kind)
            .map_or(self.default, |(_, p)| *p)
    }
}

/// A DDL statement from the source, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdlStatement {
    /// The default database the statement ran in on the source, if any.
    pub db: Option<String>,
    /// The statement text.
    pub sql: String,
    /// Where it was in the source's binlog (GTID and/or file:offset), for messages.
    pub position: String,
}

/// What [`crate::Applier::apply_ddl`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdlOutcome {
    /// It ran on the target.
    Applied,
    /// The policy said skip.
    Skipped,
    /// It had already run (a re-delivery after a crash): see the module documentation.
    AlreadyApplied,
}

/// Server errors that a second run of an already-applied DDL statement gives.
pub(crate) const ALREADY_APPLIED: &[u16] = &[
    1007, // database exists
    1008, // database does not exist (DROP DATABASE)
    1050, // table exists
    1051, // unknown table (DROP TABLE)
    1060, // duplicate column name
    1061, // duplicate key name
    1091, // can't DROP column or key: check that it exists
];

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
        }
    }

    #[test]
    fn policies_fall_back_to_the_default() {
        let p = DdlPolicies {
            default: DdlPolicy::Apply,
            overrides: vec![
                (DdlKind::DropTable, DdlPolicy::Stop),
                (DdlKind::TruncateTable, DdlPolicy::Skip),
            ],
        };
        assert_eq!(p.policy(DdlKind::DropTable), DdlPolicy::Stop);
        assert_eq!(p.policy(DdlKind::TruncateTable), DdlPolicy::Skip);
        assert_eq!(p.policy(DdlKind::AlterTable), DdlPolicy::Apply);
        for k in DdlKind::ALL {
            assert_eq!(DdlKind::from_name(k.name()), Some(k));
        }
    }
}
