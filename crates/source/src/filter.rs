//! Which tables and columns leave the source: replication filters in the vocabulary of the
//! server's `replicate_*` options, and per-table column exclusion and masking.
//!
//! Table rules are evaluated the way a MySQL/MariaDB replica evaluates its row-based
//! replication filters, so a configuration can be carried over unchanged:
//!
//! 1. Database level, on the database of the changed table: if `do_db` is set, a database
//!    not in it is ignored; else if `ignore_db` is set, a database in it is ignored.
//!    `ignore_db` is not consulted when `do_db` is set.
//! 2. Table level, in this order, the first match deciding: `do_table` (replicate),
//!    `ignore_table` (ignore), `wild_do_table` (replicate), `wild_ignore_table` (ignore).
//! 3. No table rule matched: ignored if any `do_table` or `wild_do_table` exists, else
//!    replicated.
//!
//! `do_table`/`ignore_table` entries are exact `db.table` names; `wild_*` entries are
//! `db_pattern.table_pattern` LIKE patterns (`%` any run, `_` one character, `\` escapes),
//! split at the first `.`. Names compare case-sensitively, as on a server with
//! `lower_case_table_names=0`.
//!
//! The decision for a table is made once per TABLE_MAP definition and cached by table id
//! ([`TableFilterCache`]), so a row event of an ignored table is skipped without decoding
//! any of its rows.

use std::collections::HashMap;
use std::sync::Arc;

use outflow_binlog::TableInfo;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why a filter configuration was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A table rule is not of the form `db.table`.
    #[error("{option} entry `{entry}` is not of the form db.table")]
    NotQualified {
        /// The option (`do_table`, ...).
        option: &'static str,
        /// The entry.
        entry: String,
    },
    /// A column rule names no column.
    #[error("column rule for `{table}` excludes and masks nothing")]
    EmptyColumnRule {
        /// The rule's table pattern.
        table: String,
    },
}

/// Table and column filters (config section `[source.filter]`; every key has a CLI flag of
/// the same name with `-` for `_`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Databases to replicate (`replicate_do_db`); when set, all others are ignored.
    /// Default: empty.
    #[serde(default)]
    pub do_db: Vec<String>,
    /// Databases to ignore (`replicate_ignore_db`); unused when `do_db` is set.
    /// Default: empty.
    #[serde(default)]
    pub ignore_db: Vec<String>,
    /// Tables to replicate, `db.table` (`replicate_do_table`). Default: empty.
    #[serde(default)]
    pub do_table: Vec<String>,
    /// Tables to ignore, `db.table` (`replicate_ignore_table`). Default: empty.
    #[serde(default)]
    pub ignore_table: Vec<String>,
    /// Table patterns to replicate, `db%.tab_e` (`replicate_wild_do_table`). Default: empty.
    #[serde(default)]
    pub wild_do_table: Vec<String>,
    /// Table patterns to ignore (`replicate_wild_ignore_table`). Default: empty.
    #[serde(default)]
    pub wild_ignore_table: Vec<String>,
    /// Per-table column rules; every rule whose pattern matches a table applies.
    /// Default: none.
    #[serde(default)]
    pub columns: Vec<ColumnRule>,
    /// Secret prepended to masked values before hashing, so that hashes of guessable
    /// values (emails, phone numbers) cannot be reversed by a dictionary. Default: none
    /// (plain SHA-256).
    #[serde(default)]
    pub mask_key: Option<String>,
}

/// Column exclusion and masking for the tables matching a pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnRule {
    /// `db_pattern.table_pattern`, LIKE syntax as in `wild_do_table`.
    pub table: String,
    /// Columns left out of every change (names compare case-insensitively).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Columns replaced by the lower-case hex SHA-256 of `mask_key` followed by the
    /// value's text (NULL stays NULL).
    #[serde(default)]
    pub mask: Vec<String>,
}

/// What happens to one column (the codec applies it, see `outflow_codec::columns`).
pub use outflow_codec::ColumnAction;

/// The column actions for one table definition, by column index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ColumnPlan {
    /// One action per column; empty when every column is kept.
    pub actions: Vec<ColumnAction>,
    /// Rule column names that matched no column of the table (worth a warning).
    pub unmatched: Vec<String>,
}

impl ColumnPlan {
    /// The action for column `i`.
    #[inline]
    pub fn action(&self, i: usize) -> ColumnAction {
        self.actions.get(i).copied().unwrap_or(ColumnAction::Keep)
    }

    /// Whether every column is sent as is.
    pub fn is_identity(&self) -> bool {
        self.actions.iter().all(|a| *a == ColumnAction::Keep)
    }
}

/// A LIKE pattern split into `db` and `table` parts.
#[derive(Debug, Clone)]
struct WildTable {
    db: Vec<LikeTok>,
    table: Vec<LikeTok>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LikeTok {
    Any,
    One,
    Lit(char),
}

fn like_compile(p: &str) -> Vec<LikeTok> {
    let mut out = Vec::new();
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        out.push(match c {
            '%' => LikeTok::Any,
            '_' => LikeTok::One,
            '\\' => LikeTok::Lit(chars.next().unwrap_or('\\')),
            c => LikeTok::Lit(c),
        });
    }
    out
}

/// LIKE matching with backtracking over the last `%`: linear for the patterns people write.
fn like_match(p: &[LikeTok], s: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(LikeTok::Any) => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(LikeTok::One) => {
                pi += 1;
                si += 1;
            }
            Some(LikeTok::Lit(c)) if *c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|t| *t == LikeTok::Any)
}

fn split_qualified(option: &'static str, entry: &str) -> Result<(String, String), FilterError> {
    match entry.split_once('.') {
        Some((d, t)) if !d.is_empty() && !t.is_empty() => Ok((d.to_string(), t.to_string())),
        _ => Err(FilterError::NotQualified {
            option,
            entry: entry.to_string(),
        }),
    }
}

fn wild(option: &'static str, entry: &str) -> Result<WildTable, FilterError> {
    let (d, t) = split_qualified(option, entry)?;
    Ok(WildTable {
        db: like_compile(&d),
        table: like_compile(&t),
    })
}

fn wild_match(w: &[WildTable], db: &str, table: &str) -> bool {
    w.iter()
        .any(|w| like_match(&w.db, db) && like_match(&w.table, table))
}

/// A compiled [`FilterConfig`].
#[derive(Debug, Clone)]
pub struct Filter {
    do_db: Vec<String>,
    ignore_db: Vec<String>,
    do_table: Vec<(String, String)>,
    ignore_table: Vec<(String, String)>,
    wild_do: Vec<WildTable>,
    wild_ignore: Vec<WildTable>,
    columns: Vec<(WildTable, ColumnRule)>,
    mask_key: Vec<u8>,
}

impl Default for Filter {
    fn default() -> Self {
        Filter::new(&FilterConfig::default()).unwrap_or_else(|_| unreachable!())
    }
}

impl Filter {
    /// Checks and compiles a configuration.
    pub fn new(cfg: &FilterConfig) -> Result<Filter, FilterError> {
        let exact = |option, v: &[String]| {
            v.iter()
                .map(|e| split_qualified(option, e))
                .collect::<Result<Vec<_>, _>>()
        };
        let wilds = |option, v: &[String]| {
            v.iter()
                .map(|e| wild(option, e))
                .collect::<Result<Vec<_>, _>>()
        };
        let mut columns = Vec::new();
        for r in &cfg.columns {
            if r.exclude.is_empty() && r.mask.is_empty() {
                return Err(FilterError::EmptyColumnRule {
                    table: r.table.clone(),
                });
            }
            columns.push((wild("columns.table", &r.table)?, r.clone()));
        }
        Ok(Filter {
            do_db: cfg.do_db.clone(),
            ignore_db: cfg.ignore_db.clone(),
            do_table: exact("do_table", &cfg.do_table)?,
            ignore_table: exact("ignore_table", &cfg.ignore_table)?,
            wild_do: wilds("wild_do_table", &cfg.wild_do_table)?,
            wild_ignore: wilds("wild_ignore_table", &cfg.wild_ignore_table)?,
            columns,
            mask_key: cfg.mask_key.clone().unwrap_or_default().into_bytes(),
        })
    }

    /// Whether changes to `db`.`table` are replicated (the order is in the module docs).
    pub fn wants_table(&self, db: &str, table: &str) -> bool {
        if !self.do_db.is_empty() {
            if !self.do_db.iter().any(|d| d == db) {
                return false;
            }
        } else if self.ignore_db.iter().any(|d| d == db) {
            return false;
        }
        let exact = |v: &[(String, String)]| v.iter().any(|(d, t)| d == db && t == table);
        if exact(&self.do_table) {
            return true;
        }
        if exact(&self.ignore_table) {
            return false;
        }
        if wild_match(&self.wild_do, db, table) {
            return true;
        }
        if wild_match(&self.wild_ignore, db, table) {
            return false;
        }
        self.do_table.is_empty() && self.wild_do.is_empty()
    }

    /// Whether a statement about database `db` as a whole (CREATE/DROP DATABASE) concerns
    /// replicated data: only the database-level rules apply.
    pub fn wants_db(&self, db: &str) -> bool {
        if !self.do_db.is_empty() {
            self.do_db.iter().any(|d| d == db)
        } else {
            !self.ignore_db.iter().any(|d| d == db)
        }
    }

    /// The column actions for a table whose columns are `names`, in order.
    pub fn column_plan<'n>(
        &self,
        db: &str,
        table: &str,
        names: impl Iterator<Item = &'n str> + Clone,
    ) -> ColumnPlan {
        let mut plan = ColumnPlan::default();
        let rules: Vec<&ColumnRule> = self
            .columns
            .iter()
            .filter(|(w, _)| like_match(&w.db, db) && like_match(&w.table, table))
            .map(|(_, r)| r)
            .collect();
        if rules.is_empty() {
            return plan;
        }
        plan.actions = names
            .clone()
            .map(|n| {
                let hit = |v: &[String]| v.iter().any(|c| eq_column(c, n));
                if rules.iter().any(|r| hit(&r.exclude)) {
                    ColumnAction::Exclude
                } else if rules.iter().any(|r| hit(&r.mask)) {
                    ColumnAction::Mask
                } else {
                    ColumnAction::Keep
                }
            })
            .collect();
        for r in &rules {
            for c in r.exclude.iter().chain(&r.mask) {
                if !names.clone().any(|n| eq_column(c, n)) && !plan.unmatched.contains(c) {
                    plan.unmatched.push(c.clone());
                }
            }
        }
        plan
    }

    /// Writes the mask of `value` (the value's bytes or text form) into `out` as 64
    /// lower-case hex digits. `out` is cleared first and reused, so masking allocates
    /// nothing once `out` has grown.
    pub fn mask_into(&self, value: &[u8], out: &mut String) {
        let mut h = Sha256::new();
        h.update(&self.mask_key);
        h.update(value);
        let digest = h.finalize();
        out.clear();
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for b in digest {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

/// The codec applies the column rules through this (once per table definition).
impl outflow_codec::ColumnPolicy for Filter {
    fn actions(&self, db: &str, table: &str, names: &[&str]) -> Vec<ColumnAction> {
        let plan = self.column_plan(db, table, names.iter().copied());
        for c in &plan.unmatched {
            tracing::warn!(table = %format_args!("{db}.{table}"), column = %c,
                "a column rule names a column the table does not have");
        }
        plan.actions
    }

    fn mask(&self, text: &[u8], out: &mut String) {
        self.mask_into(text, out);
    }
}

/// Column names compare case-insensitively on every server.
pub fn eq_column(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || (!a.is_ascii() && a.to_lowercase() == b.to_lowercase())
}

/// A table's filter decision, cached per TABLE_MAP definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDecision {
    /// Whether the table's rows are wanted at all.
    pub wanted: bool,
    /// What happens to each column when wanted.
    pub columns: Arc<ColumnPlan>,
}

/// Filter decisions by table id, made when a TABLE_MAP is seen so that the row events
/// that follow cost one hash lookup each, and nothing when their table is ignored.
#[derive(Debug, Default)]
pub struct TableFilterCache {
    filter: Filter,
    by_id: HashMap<u64, (String, String, TableDecision)>,
}

impl TableFilterCache {
    /// A cache over `filter`.
    pub fn new(filter: Filter) -> Self {
        TableFilterCache {
            filter,
            by_id: HashMap::new(),
        }
    }

    /// The filter.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Decides for a table map (call when a TABLE_MAP is decoded, after its column names
    /// are known). Recomputes only when the id now means another table or other columns.
    pub fn on_table_map(&mut self, info: &TableInfo) -> &TableDecision {
        let fresh = match self.by_id.get(&info.table_id) {
            Some((d, t, dec)) => {
                d != &info.schema
                    || t != &info.table
                    || (!dec.columns.actions.is_empty()
                        && dec.columns.actions.len() != info.columns.len())
            }
            None => true,
        };
        if fresh {
            let wanted = self.filter.wants_table(&info.schema, &info.table);
            let names = info.columns.iter().map(|c| c.name.as_deref().unwrap_or(""));
            let columns = if wanted {
                Arc::new(self.filter.column_plan(&info.schema, &info.table, names))
            } else {
                Arc::new(ColumnPlan::default())
            };
            self.by_id.insert(
                info.table_id,
                (
                    info.schema.clone(),
                    info.table.clone(),
                    TableDecision { wanted, columns },
                ),
            );
        }
        &self.by_id[&info.table_id].2
    }

    /// Whether the rows of `info` are wanted; for a row event's table. Falls back to
    /// deciding now if its TABLE_MAP was not seen through [`Self::on_table_map`].
    #[inline]
    pub fn wants(&mut self, info: &TableInfo) -> bool {
        match self.by_id.get(&info.table_id) {
            Some((d, t, dec)) if d == &info.schema && t == &info.table => dec.wanted,
            _ => self.on_table_map(info).wanted,
        }
    }

    /// Forgets every decision (after a DDL renamed columns, for example).
    pub fn clear(&mut self) {
        self.by_id.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(cfg: FilterConfig) -> Filter {
        Filter::new(&cfg).unwrap()
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_rules_replicates_everything() {
        assert!(Filter::default().wants_table("a", "b"));
    }

    #[test]
    fn do_db_excludes_other_databases_and_disables_ignore_db() {
        let flt = f(FilterConfig {
            do_db: v(&["app"]),
            ignore_db: v(&["app"]),
            ..Default::default()
        });
        assert!(flt.wants_table("app", "t"));
        assert!(!flt.wants_table("other", "t"));
        let flt = f(FilterConfig {
            ignore_db: v(&["junk"]),
            ..Default::default()
        });
        assert!(!flt.wants_table("junk", "t"));
        assert!(flt.wants_table("app", "t"));
    }

    #[test]
    fn db_rules_come_before_table_rules() {
        // A do_table in an ignored database is still ignored.
        let flt = f(FilterConfig {
            ignore_db: v(&["junk"]),
            do_table: v(&["junk.t"]),
            ..Default::default()
        });
        assert!(!flt.wants_table("junk", "t"));
    }

    #[test]
    fn table_rules_first_match_decides_in_mysql_order() {
        // do_table beats ignore_table.
        let flt = f(FilterConfig {
            do_table: v(&["a.t"]),
            ignore_table: v(&["a.t"]),
            ..Default::default()
        });
        assert!(flt.wants_table("a", "t"));
        // ignore_table beats wild_do_table.
        let flt = f(FilterConfig {
            ignore_table: v(&["a.t"]),
            wild_do_table: v(&["a.%"]),
            ..Default::default()
        });
        assert!(!flt.wants_table("a", "t"));
        assert!(flt.wants_table("a", "u"));
        assert!(
            !flt.wants_table("b", "u"),
            "a do rule exists: unmatched is ignored"
        );
        // wild_do_table beats wild_ignore_table.
        let flt = f(FilterConfig {
            wild_do_table: v(&["a.t%"]),
            wild_ignore_table: v(&["a.%"]),
            ..Default::default()
        });
        assert!(flt.wants_table("a", "t1"));
        assert!(!flt.wants_table("a", "u1"));
        // Only ignore rules: everything else is replicated.
        let flt = f(FilterConfig {
            wild_ignore_table: v(&["%.tmp\\_%"]),
            ..Default::default()
        });
        assert!(!flt.wants_table("x", "tmp_1"));
        assert!(flt.wants_table("x", "tmpx1"));
        assert!(flt.wants_table("x", "t"));
    }

    #[test]
    fn like_patterns() {
        let m = |p: &str, s: &str| like_match(&like_compile(p), s);
        assert!(m("%", ""));
        assert!(m("a%c", "abbbc"));
        assert!(m("a%c", "ac"));
        assert!(!m("a%c", "ab"));
        assert!(m("a_c", "abc"));
        assert!(!m("a_c", "abbc"));
        assert!(m("%b%b%", "abxxbz"));
        assert!(m("a\\%", "a%"));
        assert!(!m("a\\%", "ab"));
        assert!(m("ta%", "table"));
        assert!(!m("Ta%", "table"), "case-sensitive");
    }

    #[test]
    fn unqualified_table_rules_are_rejected() {
        let e = Filter::new(&FilterConfig {
            do_table: v(&["t"]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("do_table"), "{e}");
    }

    #[test]
    fn column_plans_and_masks() {
        let flt = f(FilterConfig {
            columns: vec![
                ColumnRule {
                    table: "app.user%".into(),
                    exclude: v(&["Password"]),
                    mask: v(&["email", "nope"]),
                },
                ColumnRule {
                    table: "%.%".into(),
                    exclude: vec![],
                    mask: v(&["password"]),
                },
            ],
            mask_key: Some("k".into()),
            ..Default::default()
        });
        let names = ["id", "email", "password"];
        let plan = flt.column_plan("app", "users", names.iter().copied());
        assert_eq!(
            plan.actions,
            [
                ColumnAction::Keep,
                ColumnAction::Mask,
                ColumnAction::Exclude
            ],
            "exclude wins over mask"
        );
        assert_eq!(plan.unmatched, ["nope"]);
        let plan = flt.column_plan("x", "y", ["a"].iter().copied());
        assert!(plan.is_identity());
        let mut out = String::new();
        flt.mask_into(b"a@b", &mut out);
        assert_eq!(out.len(), 64);
        let mut h = Sha256::new();
        h.update(b"ka@b");
        let want: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let r: Result<FilterConfig, _> = serde_json::from_str(r#"{"do_dbs": ["a"]}"#);
        assert!(r.is_err());
        let r: FilterConfig = serde_json::from_str(
            r#"{"do_db": ["a"], "columns": [{"table": "a.b", "mask": ["c"]}]}"#,
        )
        .unwrap();
        assert_eq!(r.columns[0].mask, ["c"]);
    }
}
