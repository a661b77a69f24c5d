//! Schema tracking: the definition of every table at every point of the stream.
//!
//! [`SchemaTracker`] is sans-IO. It starts from a [`SchemaState`] read from
//! `information_schema` ([`load`]), then follows the DDL the stream carries: each QUERY
//! event's text goes to [`SchemaTracker::apply_query`] with the event's default database,
//! and each TABLE_MAP goes to [`SchemaTracker::complete_table_map`], which checks the
//! binlog's column count and types against the tracked definition and fills in what the
//! binlog lacks (names, signedness, charsets, ENUM/SET members, primary key) so row values
//! decode right. Every change is one [`HistoryEntry`]; [`history::HistoryStore`] keeps them
//! on disk so that a restart from an older checkpoint rewinds to the schema of that point.
//!
//! Why DDL replay rather than asking the server at each DDL: the server answers with its
//! definition *now*, which is wrong for a reader behind the head of the binlog (after a
//! restart, a backlog, or several DDLs in a row). Replaying the statements gives the
//! definition at each point, and the TABLE_MAP check catches the cases replay got wrong.

pub mod history;
pub mod load;
pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use outflow_binlog::decoder::TableHook;
use outflow_binlog::{Flavor, TableInfo};
use outflow_core::schema::BINARY_COLLATION;
use outflow_core::{BinlogPosition, ColumnSchema, ColumnType, Gtid, SchemaVersion, TableSchema};
use serde::{Deserialize, Serialize};

use crate::ddl::{self, AlterOp, ColumnDef, CreateBody, Ddl, Head, Placement, TableRef};
use crate::filter::{eq_column, Filter};
pub use types::Catalog;

/// Where a statement or event sits in the stream, for history entries and messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPosition {
    /// File and end offset of the event, when known.
    pub binlog: Option<BinlogPosition>,
    /// GTID of the transaction, when GTIDs are on.
    pub gtid: Option<Gtid>,
}

impl fmt::Display for EventPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.binlog, &self.gtid) {
            (Some(b), Some(g)) => write!(f, "{b} (GTID {g})"),
            (Some(b), None) => write!(f, "{b}"),
            (None, Some(g)) => write!(f, "GTID {g}"),
            (None, None) => f.write_str("an unknown position"),
        }
    }
}

/// Why the tracker cannot vouch for a table's schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// A DDL statement on a tracked table could not be followed. Table-scoped: the table can
    /// be resynchronised from `information_schema` (see [`load::resync_tables`]).
    #[error("at {at}: cannot follow DDL on {}: {reason}; statement: {statement}", table.as_deref().unwrap_or("an unknown table"))]
    Unparsed {
        /// Position of the statement.
        at: String,
        /// `db.table` (or `db`) the statement is about, if that much was read.
        table: Option<String>,
        /// The statement, shortened to 300 characters.
        statement: String,
        /// What went wrong.
        reason: String,
    },
    /// A TABLE_MAP disagrees with the tracked definition. Table-scoped.
    #[error(
        "at {at}: {table}: the binlog's TABLE_MAP does not match the tracked schema: {reason}"
    )]
    Mismatch {
        /// Position of the TABLE_MAP.
        at: String,
        /// `db.table`.
        table: String,
        /// The first difference.
        reason: String,
    },
    /// Rows of a table the tracker has no definition for, and whose TABLE_MAP carries no
    /// column names. Table-scoped.
    #[error("at {at}: no schema known for {table} (created before the start position by DDL outflow did not see?); resync it or use binlog_row_metadata=FULL")]
    UnknownTable {
        /// Position.
        at: String,
        /// `db.table`.
        table: String,
    },
}

impl SchemaError {
    /// The `db.table` concerned, if any: what a resync would reload.
    pub fn table(&self) -> Option<&str> {
        match self {
            SchemaError::Unparsed { table, .. } => table.as_deref(),
            SchemaError::Mismatch { table, .. } | SchemaError::UnknownTable { table, .. } => {
                Some(table)
            }
        }
    }
}

/// Default charset and collation of a database or table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Defaults {
    /// Charset name.
    pub charset: Option<String>,
    /// Collation name.
    pub collation: Option<String>,
}

impl From<ddl::CharsetOpts> for Defaults {
    fn from(c: ddl::CharsetOpts) -> Self {
        Defaults {
            charset: c.charset,
            collation: c.collation,
        }
    }
}

/// A tracked table: its definition and what new columns inherit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackedTable {
    /// The definition.
    pub schema: TableSchema,
    /// Table default charset and collation.
    pub defaults: Defaults,
    /// Whether the server added invisible `row_start`/`row_end` columns (system versioning).
    #[serde(default)]
    pub implicit_versioning: bool,
}

/// Every known database and table definition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaState {
    /// Databases and their defaults.
    pub databases: BTreeMap<String, Defaults>,
    /// Tables by database, then name.
    pub tables: BTreeMap<String, BTreeMap<String, TrackedTable>>,
    /// The next [`SchemaVersion`] to hand out.
    pub next_version: u64,
}

impl SchemaState {
    /// The tracked table `db`.`table`.
    pub fn get(&self, db: &str, table: &str) -> Option<&TrackedTable> {
        self.tables.get(db)?.get(table)
    }

    fn apply(&mut self, change: &Change) {
        match change {
            Change::PutTable(t) => {
                self.next_version = self.next_version.max(t.schema.version.0 + 1);
                self.tables
                    .entry(t.schema.db.clone())
                    .or_default()
                    .insert(t.schema.table.clone(), t.clone());
            }
            Change::DropTable { db, table } => {
                if let Some(m) = self.tables.get_mut(db) {
                    m.remove(table);
                    if m.is_empty() {
                        self.tables.remove(db);
                    }
                }
            }
            Change::PutDatabase { name, defaults } => {
                self.databases.insert(name.clone(), defaults.clone());
            }
            Change::DropDatabase { name } => {
                self.databases.remove(name);
                self.tables.remove(name);
            }
        }
    }
}

/// One change to the tracked state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A table is (re)defined.
    PutTable(TrackedTable),
    /// A table is gone (or no longer known).
    DropTable {
        /// Database.
        db: String,
        /// Table.
        table: String,
    },
    /// A database is created or its defaults change.
    PutDatabase {
        /// Name.
        name: String,
        /// Defaults.
        defaults: Defaults,
    },
    /// A database and all its tables are gone.
    DropDatabase {
        /// Name.
        name: String,
    },
}

/// One step of the schema history: the changes one statement (or one resync) made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Sequence number, from 1, without gaps.
    pub seq: u64,
    /// Where the statement was.
    pub at: EventPosition,
    /// What caused it: the statement text, or `(resync)`, `(table map)`.
    pub cause: String,
    /// The changes, in order.
    pub changes: Vec<Change>,
}

/// What a QUERY event did to the schema.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryOutcome {
    /// Tables whose definition changed, appeared or went away (`(db, table)`).
    pub changed: Vec<(String, String)>,
    /// Tables emptied by TRUNCATE: their rows are gone without row events.
    pub truncated: Vec<(String, String)>,
    /// The history entry recorded, if the schema changed.
    pub seq: Option<u64>,
}

/// Settings that are fixed for a source server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerTraits {
    /// MariaDB (true) or MySQL: decides what JSON is.
    pub mariadb: bool,
    /// `lower_case_table_names` is 1 or 2: names are stored in lower case.
    pub lower_case_table_names: bool,
    /// Collations and charsets.
    pub catalog: Catalog,
}

impl ServerTraits {
    fn flavor(&self) -> Flavor {
        if self.mariadb {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        }
    }
}

/// Follows DDL through the stream; see the module docs.
#[derive(Debug, Clone)]
pub struct SchemaTracker {
    state: SchemaState,
    traits: ServerTraits,
    scope: Filter,
    seq: u64,
    unsaved: Vec<HistoryEntry>,
    /// Errors found by [`table_hook`] for a table id, collected by [`Self::take_table_map_error`].
    hook_errors: HashMap<u64, SchemaError>,
}

fn shorten(s: &str) -> String {
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

impl SchemaTracker {
    /// A tracker at history position `seq` with `state`. `scope` says which tables matter:
    /// DDL the tracker cannot follow is an error only for them; others are forgotten.
    pub fn new(state: SchemaState, traits: ServerTraits, scope: Filter, seq: u64) -> Self {
        SchemaTracker {
            state,
            traits,
            scope,
            seq,
            unsaved: Vec::new(),
            hook_errors: HashMap::new(),
        }
    }

    /// The tracked state.
    pub fn state(&self) -> &SchemaState {
        &self.state
    }

    /// Server settings.
    pub fn traits(&self) -> &ServerTraits {
        &self.traits
    }

    /// The sequence number of the last history entry applied (0: the initial load).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The definition of `db`.`table` at this point of the stream.
    pub fn table(&self, db: &str, table: &str) -> Option<&TableSchema> {
        self.state.get(db, table).map(|t| &t.schema)
    }

    /// History entries not yet handed to a [`history::HistoryStore`].
    pub fn take_unsaved(&mut self) -> Vec<HistoryEntry> {
        std::mem::take(&mut self.unsaved)
    }

    /// Whether there are entries to save.
    pub fn has_unsaved(&self) -> bool {
        !self.unsaved.is_empty()
    }

    /// Applies a saved entry (replay on open). Entries must come in sequence.
    pub fn replay(&mut self, e: &HistoryEntry) {
        for c in &e.changes {
            self.state.apply(c);
        }
        self.seq = e.seq;
    }

    fn record(&mut self, at: &EventPosition, cause: &str, changes: Vec<Change>) -> u64 {
        self.seq += 1;
        let e = HistoryEntry {
            seq: self.seq,
            at: at.clone(),
            cause: shorten(cause),
            changes,
        };
        self.replay(&e);
        self.unsaved.push(e);
        self.seq
    }

    fn next_version(&mut self) -> SchemaVersion {
        let v = self.state.next_version.max(1);
        self.state.next_version = v + 1;
        SchemaVersion(v)
    }

    fn norm(&self, name: &str) -> String {
        if self.traits.lower_case_table_names {
            name.to_lowercase()
        } else {
            name.to_string()
        }
    }

    fn resolve(&self, t: &TableRef, default_db: &str) -> Option<(String, String)> {
        let db = t.db.as_deref().unwrap_or(default_db);
        if db.is_empty() {
            return None;
        }
        Some((self.norm(db), self.norm(&t.name)))
    }

    /// Replaces (or removes, with `None`) a table's definition, e.g. after reloading it
    /// from `information_schema` because its DDL could not be followed.
    pub fn put_table(
        &mut self,
        at: &EventPosition,
        cause: &str,
        db: &str,
        table: &str,
        t: Option<TrackedTable>,
    ) -> u64 {
        let change = match t {
            Some(mut t) => {
                t.schema.version = self.next_version();
                t.schema.db = db.to_string();
                t.schema.table = table.to_string();
                Change::PutTable(t)
            }
            None => Change::DropTable {
                db: db.into(),
                table: table.into(),
            },
        };
        self.record(at, cause, vec![change])
    }

    /// Whether a standalone statement is to be shipped to the sink as DDL, by the filters:
    /// a table statement if any table it names is kept (RENAME and CREATE ... LIKE name
    /// two), an index statement if its table is, a database statement if its database is,
    /// and any other statement (views, routines, grants, ...) if its default database is,
    /// as native replication filters statements. Statements about temporary tables are
    /// never shipped: row-based binlogs do not use them.
    pub fn ships_ddl(&self, default_db: &str, sql: &str) -> bool {
        let wants_db = |db: &str| self.scope.wants_db(&self.norm(db));
        let wants = |t: &TableRef| match self.resolve(t, default_db) {
            Some((db, name)) => self.scope.wants_table(&db, &name),
            // No database: the statement fails on the source too; let the sink say so.
            None => true,
        };
        match ddl::parse(sql) {
            Ok(Ddl::Temporary) => false,
            Ok(Ddl::CreateDatabase { name, .. } | Ddl::DropDatabase { name }) => wants_db(&name),
            Ok(Ddl::AlterDatabase { name, .. }) => wants_db(name.as_deref().unwrap_or(default_db)),
            Ok(d) if !d.tables().is_empty() => d.tables().into_iter().any(wants),
            Ok(_) => match ddl::index_table(sql) {
                Some(t) => wants(&t),
                None => wants_db(default_db),
            },
            Err(_) => match ddl::head(sql) {
                Head::Table(t) => wants(&t),
                Head::Database(Some(db)) => wants_db(&db),
                Head::Database(None) | Head::Other => wants_db(default_db),
            },
        }
    }

    /// Follows one QUERY event: `default_db` is the event's database, `sql` its text.
    pub fn apply_query(
        &mut self,
        at: &EventPosition,
        default_db: &str,
        sql: &str,
    ) -> Result<QueryOutcome, SchemaError> {
        let unparsed = |table: Option<String>, reason: String| SchemaError::Unparsed {
            at: at.to_string(),
            table,
            statement: shorten(sql),
            reason,
        };
        let parsed = ddl::parse(sql);
        let ddl = match parsed {
            Ok(d) => d,
            Err(e) => {
                return match ddl::head(sql) {
                    Head::Table(t) => {
                        let Some((db, name)) = self.resolve(&t, default_db) else {
                            return Err(unparsed(Some(t.to_string()), e.reason));
                        };
                        if self.scope.wants_table(&db, &name) {
                            Err(unparsed(Some(format!("{db}.{name}")), e.reason))
                        } else {
                            self.forget(at, sql, &db, &name)
                        }
                    }
                    Head::Database(Some(db)) if !self.scope.wants_db(&self.norm(&db)) => {
                        Ok(QueryOutcome::default())
                    }
                    Head::Database(db) => Err(unparsed(db, e.reason)),
                    Head::Other => Err(unparsed(None, e.reason)),
                };
            }
        };
        let mut out = QueryOutcome::default();
        let mut changes = Vec::new();
        // A scratch copy: statements apply in order (RENAME a TO b, b TO c), and only a
        // statement that fully succeeds is recorded.
        let mut work = self.state.clone();
        let r = self.plan(&ddl, default_db, &mut work, &mut changes, &mut out);
        if let Err((table, reason)) = r {
            let in_scope = table
                .as_ref()
                .and_then(|t| t.split_once('.'))
                .is_none_or(|(d, t)| self.scope.wants_table(d, t));
            if in_scope {
                return Err(unparsed(table, reason));
            }
            let (db, name) = table
                .as_deref()
                .and_then(|t| t.split_once('.'))
                .unwrap_or_default();
            let (db, name) = (db.to_string(), name.to_string());
            return self.forget(at, sql, &db, &name);
        }
        if !changes.is_empty() {
            out.seq = Some(self.record(at, sql, changes));
        }
        Ok(out)
    }

    /// Drops what we knew about a table outside the scope whose DDL we cannot follow: its
    /// rows are filtered out, and a stale definition must not be used if it comes into
    /// scope later.
    fn forget(
        &mut self,
        at: &EventPosition,
        sql: &str,
        db: &str,
        table: &str,
    ) -> Result<QueryOutcome, SchemaError> {
        let mut out = QueryOutcome::default();
        if self.state.get(db, table).is_some() {
            out.changed.push((db.to_string(), table.to_string()));
            out.seq = Some(self.record(
                at,
                sql,
                vec![Change::DropTable {
                    db: db.into(),
                    table: table.into(),
                }],
            ));
        }
        Ok(out)
    }

    /// Works out the changes of one statement on `work`. Errors name the table.
    fn plan(
        &mut self,
        ddl: &Ddl,
        default_db: &str,
        work: &mut SchemaState,
        changes: &mut Vec<Change>,
        out: &mut QueryOutcome,
    ) -> Result<(), (Option<String>, String)> {
        let mut push = |work: &mut SchemaState, c: Change, out: &mut QueryOutcome| {
            match &c {
                Change::PutTable(t) => out
                    .changed
                    .push((t.schema.db.clone(), t.schema.table.clone())),
                Change::DropTable { db, table } => out.changed.push((db.clone(), table.clone())),
                Change::DropDatabase { name } => {
                    if let Some(m) = work.tables.get(name) {
                        out.changed
                            .extend(m.keys().map(|t| (name.clone(), t.clone())));
                    }
                }
                Change::PutDatabase { .. } => {}
            }
            work.apply(&c);
            changes.push(c);
        };
        let need = |s: &Self, t: &TableRef| -> Result<(String, String), (Option<String>, String)> {
            s.resolve(t, default_db)
                .ok_or_else(|| (Some(t.to_string()), "no database selected".to_string()))
        };
        match ddl {
            Ddl::Other | Ddl::Temporary => {}
            Ddl::CreateDatabase {
                name,
                if_not_exists,
                charset,
            } => {
                let name = self.norm(name);
                if !(work.databases.contains_key(&name) && *if_not_exists) {
                    push(
                        work,
                        Change::PutDatabase {
                            name,
                            defaults: charset.clone().into(),
                        },
                        out,
                    );
                }
            }
            Ddl::AlterDatabase { name, charset } => {
                let name = self.norm(name.as_deref().unwrap_or(default_db));
                let mut d = work.databases.get(&name).cloned().unwrap_or_default();
                if charset.charset.is_some() {
                    d.charset = charset.charset.clone();
                    d.collation = None;
                }
                if charset.collation.is_some() {
                    d.collation = charset.collation.clone();
                }
                push(work, Change::PutDatabase { name, defaults: d }, out);
            }
            Ddl::DropDatabase { name } => {
                let name = self.norm(name);
                push(work, Change::DropDatabase { name }, out);
            }
            Ddl::CreateTable {
                table,
                if_not_exists,
                or_replace,
                body,
            } => {
                let (db, name) = need(self, table)?;
                let qn = format!("{db}.{name}");
                if work.get(&db, &name).is_some() && *if_not_exists && !*or_replace {
                    return Ok(());
                }
                let t = match body {
                    CreateBody::Like(src) => {
                        let (sdb, sname) = need(self, src)?;
                        let mut t = work.get(&sdb, &sname).cloned().ok_or_else(|| {
                            (
                                Some(qn.clone()),
                                format!(
                                    "CREATE TABLE ... LIKE {sdb}.{sname}, which is not tracked"
                                ),
                            )
                        })?;
                        t.schema.db = db.clone();
                        t.schema.table = name.clone();
                        t
                    }
                    CreateBody::Columns {
                        columns,
                        primary_key,
                        charset,
                        system_versioning,
                    } => {
                        let defaults: Defaults = charset.clone().into();
                        let dbd = work.databases.get(&db).cloned().unwrap_or_default();
                        let mut cols = Vec::with_capacity(columns.len());
                        for c in columns {
                            cols.push(
                                self.column(c, &defaults, &dbd)
                                    .map_err(|e| (Some(qn.clone()), e))?,
                            );
                        }
                        let mut pk: Vec<String> = primary_key.clone().unwrap_or_default();
                        if *system_versioning {
                            add_versioning(&mut cols);
                        }
                        let schema = build_schema(&db, &name, cols, &mut pk)
                            .map_err(|e| (Some(qn.clone()), e))?;
                        TrackedTable {
                            schema,
                            defaults,
                            implicit_versioning: *system_versioning,
                        }
                    }
                };
                let mut t = t;
                t.schema.version = self.next_version();
                push(work, Change::PutTable(t), out);
            }
            Ddl::DropTables(tables) => {
                for t in tables {
                    let (db, name) = need(self, t)?;
                    if work.get(&db, &name).is_some() {
                        push(work, Change::DropTable { db, table: name }, out);
                    }
                }
            }
            Ddl::RenameTables(pairs) => {
                for (from, to) in pairs {
                    let (fdb, fname) = need(self, from)?;
                    let (tdb, tname) = need(self, to)?;
                    self.rename(
                        work,
                        &fdb,
                        &fname,
                        &tdb,
                        &tname,
                        &mut |w, c, o| push(w, c, o),
                        out,
                    )?;
                }
            }
            Ddl::Truncate(t) => {
                let (db, name) = need(self, t)?;
                out.truncated.push((db, name));
            }
            Ddl::AlterTable { table, ops } => {
                let (db, name) = need(self, table)?;
                let qn = format!("{db}.{name}");
                let Some(mut t) = work.get(&db, &name).cloned() else {
                    // An ALTER of a table we never knew: if it leaves columns alone, nothing
                    // is lost; otherwise we cannot know the result.
                    if ops.is_empty() {
                        return Ok(());
                    }
                    return Err((
                        Some(qn),
                        "ALTER TABLE of a table that is not tracked".into(),
                    ));
                };
                let dbd = work.databases.get(&db).cloned().unwrap_or_default();
                let mut cols = t.schema.columns.clone();
                let mut pk: Vec<String> = t
                    .schema
                    .primary_key
                    .iter()
                    .filter_map(|&k| cols.get(usize::from(k)).map(|c| c.name.clone()))
                    .collect();
                let mut new_name: Option<(String, String)> = None;
                for op in ops {
                    self.alter(
                        op,
                        &mut t,
                        &dbd,
                        &mut cols,
                        &mut pk,
                        &mut new_name,
                        default_db,
                    )
                    .map_err(|e| (Some(qn.clone()), e))?;
                }
                if ops.is_empty() {
                    return Ok(());
                }
                let (ndb, nname) = new_name.unwrap_or((db.clone(), name.clone()));
                let mut schema =
                    build_schema(&ndb, &nname, cols, &mut pk).map_err(|e| (Some(qn.clone()), e))?;
                schema.version = self.next_version();
                t.schema = schema;
                if (ndb.as_str(), nname.as_str()) != (db.as_str(), name.as_str()) {
                    push(work, Change::DropTable { db, table: name }, out);
                }
                push(work, Change::PutTable(t), out);
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn rename(
        &mut self,
        work: &mut SchemaState,
        fdb: &str,
        fname: &str,
        tdb: &str,
        tname: &str,
        push: &mut dyn FnMut(&mut SchemaState, Change, &mut QueryOutcome),
        out: &mut QueryOutcome,
    ) -> Result<(), (Option<String>, String)> {
        let Some(mut t) = work.get(fdb, fname).cloned() else {
            return Err((
                Some(format!("{tdb}.{tname}")),
                format!("RENAME of {fdb}.{fname}, which is not tracked"),
            ));
        };
        t.schema.db = tdb.to_string();
        t.schema.table = tname.to_string();
        t.schema.version = self.next_version();
        push(
            work,
            Change::DropTable {
                db: fdb.into(),
                table: fname.into(),
            },
            out,
        );
        push(work, Change::PutTable(t), out);
        Ok(())
    }

    fn column(
        &self,
        c: &ColumnDef,
        table: &Defaults,
        db: &Defaults,
    ) -> Result<ColumnSchema, String> {
        let coll = self.traits.catalog.resolve(
            &[
                (c.charset.as_deref(), c.collation.as_deref()),
                (table.charset.as_deref(), table.collation.as_deref()),
                (db.charset.as_deref(), db.collation.as_deref()),
            ],
            c.binary_attr,
        );
        types::column_from_def(c, coll, &self.traits.catalog, self.traits.flavor())
            .map_err(|e| format!("column `{}`: {e}", c.name))
    }

    #[allow(clippy::too_many_arguments)]
    fn alter(
        &self,
        op: &AlterOp,
        t: &mut TrackedTable,
        dbd: &Defaults,
        cols: &mut Vec<ColumnSchema>,
        pk: &mut Vec<String>,
        new_name: &mut Option<(String, String)>,
        default_db: &str,
    ) -> Result<(), String> {
        let find = |cols: &[ColumnSchema], n: &str| cols.iter().position(|c| eq_column(&c.name, n));
        let place =
            |cols: &mut Vec<ColumnSchema>, c: ColumnSchema, p: &Placement, at: usize| match p {
                Placement::Default => {
                    cols.insert(at.min(cols.len()), c);
                    Ok(())
                }
                Placement::First => {
                    cols.insert(0, c);
                    Ok(())
                }
                Placement::After(a) => match find(cols, a) {
                    Some(i) => {
                        cols.insert(i + 1, c);
                        Ok(())
                    }
                    None => Err(format!("AFTER `{a}`: no such column")),
                },
            };
        match op {
            AlterOp::AddColumn {
                def,
                place: p,
                if_not_exists,
            } => {
                if find(cols, &def.name).is_some() {
                    if *if_not_exists {
                        return Ok(());
                    }
                    return Err(format!("ADD COLUMN `{}`: the column exists", def.name));
                }
                let c = self.column(def, &t.defaults, dbd)?;
                // New columns go before the invisible system-versioning columns.
                let end = if t.implicit_versioning {
                    cols.len().saturating_sub(2)
                } else {
                    cols.len()
                };
                place(cols, c, p, end)?;
                if def.primary_key {
                    *pk = vec![def.name.clone()];
                }
            }
            AlterOp::DropColumn { name, if_exists } => match find(cols, name) {
                Some(i) => {
                    cols.remove(i);
                    pk.retain(|k| !eq_column(k, name));
                }
                None if *if_exists => {}
                None => return Err(format!("DROP COLUMN `{name}`: no such column")),
            },
            AlterOp::ChangeColumn {
                old,
                def,
                place: p,
                if_exists,
            } => {
                let Some(i) = find(cols, old) else {
                    if *if_exists {
                        return Ok(());
                    }
                    return Err(format!("CHANGE/MODIFY `{old}`: no such column"));
                };
                let c = self.column(def, &t.defaults, dbd)?;
                cols.remove(i);
                place(cols, c, p, i)?;
                for k in pk.iter_mut() {
                    if eq_column(k, old) {
                        *k = def.name.clone();
                    }
                }
                if def.primary_key {
                    *pk = vec![def.name.clone()];
                }
            }
            AlterOp::RenameColumn { old, new } => {
                let Some(i) = find(cols, old) else {
                    return Err(format!("RENAME COLUMN `{old}`: no such column"));
                };
                cols[i].name = new.clone();
                for k in pk.iter_mut() {
                    if eq_column(k, old) {
                        *k = new.clone();
                    }
                }
            }
            AlterOp::AddPrimaryKey(k) => *pk = k.clone(),
            AlterOp::DropPrimaryKey => pk.clear(),
            AlterOp::RenameTable(r) => {
                let db =
                    r.db.as_deref()
                        .or(new_name.as_ref().map(|n| n.0.as_str()))
                        .unwrap_or(default_db);
                *new_name = Some((self.norm(db), self.norm(&r.name)));
            }
            AlterOp::DefaultCharset(cs) => {
                if cs.charset.is_some() {
                    t.defaults.charset = cs.charset.clone();
                    t.defaults.collation = None;
                }
                if cs.collation.is_some() {
                    t.defaults.collation = cs.collation.clone();
                }
            }
            AlterOp::ConvertCharset(cs) => {
                let Some((_, id)) = self
                    .traits
                    .catalog
                    .resolve(&[(cs.charset.as_deref(), cs.collation.as_deref())], false)
                else {
                    return Err(format!("CONVERT TO {:?}: unknown charset or collation", cs));
                };
                let cat = &self.traits.catalog;
                for c in cols.iter_mut() {
                    let old = match c.collation {
                        Some(BINARY_COLLATION) | None => continue,
                        Some(o) => o,
                    };
                    let (old_per, new_per) = (cat.max_len(old), cat.max_len(id));
                    match &mut c.ty {
                        ColumnType::String {
                            max_bytes,
                            binary: false,
                        } => {
                            *max_bytes = *max_bytes / old_per.max(1) * new_per;
                        }
                        // The server widens TEXT types so they keep holding as many
                        // characters: TEXT in latin1 becomes MEDIUMTEXT in utf8mb4.
                        ColumnType::Blob {
                            len_bytes,
                            binary: false,
                        } => {
                            let cap = (1u64 << (8 * u32::from(*len_bytes))) - 1;
                            let chars = cap / u64::from(old_per.max(1));
                            *len_bytes =
                                (*len_bytes).max(types::blob_len_bytes(chars * u64::from(new_per)));
                        }
                        ColumnType::Enum { .. } | ColumnType::Set { .. } => {}
                        _ => continue,
                    }
                    c.collation = Some(id);
                }
                t.defaults = cs.clone().into();
            }
            AlterOp::SystemVersioning(true) => {
                if !t.implicit_versioning {
                    add_versioning(cols);
                    t.implicit_versioning = true;
                }
            }
            AlterOp::SystemVersioning(false) => {
                if t.implicit_versioning {
                    cols.truncate(cols.len().saturating_sub(2));
                    t.implicit_versioning = false;
                }
            }
        }
        Ok(())
    }

    /// Checks a freshly parsed TABLE_MAP against the tracked definition and completes it
    /// (names, signedness, charsets, members, key). Tables outside the scope are left as
    /// they are. A table the tracker does not know is adopted from the TABLE_MAP when it
    /// carries column names (`binlog_row_metadata=FULL`), else it is an error.
    pub fn complete_table_map(
        &mut self,
        info: &mut TableInfo,
        at: &EventPosition,
    ) -> Result<(), SchemaError> {
        let (db, name) = (self.norm(&info.schema), self.norm(&info.table));
        if !self.scope.wants_table(&db, &name) {
            return Ok(());
        }
        let qn = || format!("{db}.{name}");
        match self.state.get(&db, &name) {
            Some(t) => {
                types::cross_check(info, &t.schema).map_err(|reason| SchemaError::Mismatch {
                    at: at.to_string(),
                    table: qn(),
                    reason,
                })?;
                types::complete(info, &t.schema);
            }
            None => {
                let Some(schema) = types::schema_from_table_map(info) else {
                    return Err(SchemaError::UnknownTable {
                        at: at.to_string(),
                        table: qn(),
                    });
                };
                let t = TrackedTable {
                    schema,
                    defaults: Defaults::default(),
                    implicit_versioning: false,
                };
                self.put_table(at, "(table map)", &db, &name, Some(t));
            }
        }
        Ok(())
    }

    /// The error [`table_hook`] found for `table_id`'s TABLE_MAP, if any; call when the
    /// TABLE_MAP event is seen, to fail with its position.
    pub fn take_table_map_error(
        &mut self,
        table_id: u64,
        at: &EventPosition,
    ) -> Result<(), SchemaError> {
        match self.hook_errors.remove(&table_id) {
            None => Ok(()),
            Some(mut e) => {
                if let SchemaError::Mismatch { at: a, .. }
                | SchemaError::UnknownTable { at: a, .. } = &mut e
                {
                    *a = at.to_string();
                }
                Err(e)
            }
        }
    }
}

/// MariaDB's implicit system-versioning columns, invisible, at the end of the table.
fn add_versioning(cols: &mut Vec<ColumnSchema>) {
    for n in ["row_start", "row_end"] {
        let mut c = ColumnSchema::new(n, ColumnType::Timestamp { fsp: 6 });
        c.nullable = false;
        cols.push(c);
    }
}

/// Assembles a schema; primary-key columns become NOT NULL, as the server makes them.
fn build_schema(
    db: &str,
    table: &str,
    mut cols: Vec<ColumnSchema>,
    pk: &mut [String],
) -> Result<TableSchema, String> {
    let mut key = Vec::with_capacity(pk.len());
    for k in pk.iter() {
        let i = cols
            .iter()
            .position(|c| eq_column(&c.name, k))
            .ok_or_else(|| format!("primary key column `{k}` is not a column"))?;
        cols[i].nullable = false;
        key.push(u16::try_from(i).map_err(|_| "too many columns".to_string())?);
    }
    let s = TableSchema {
        version: SchemaVersion(0),
        db: db.into(),
        table: table.into(),
        columns: cols,
        primary_key: key,
    };
    s.validate()?;
    Ok(s)
}

/// A tracker shared between the decoder's table hook and the code that feeds QUERY
/// events, for streams where TABLE_MAPs are decoded inside one call with their rows
/// (MySQL TRANSACTION_PAYLOAD).
pub type SharedTracker = Arc<Mutex<SchemaTracker>>;

/// A [`outflow_binlog::Decoder::set_table_hook`] hook that completes every new TABLE_MAP
/// from the tracker. Errors are kept by table id for
/// [`SchemaTracker::take_table_map_error`], since a hook cannot fail.
pub fn table_hook(shared: SharedTracker) -> TableHook {
    Box::new(move |info: &mut TableInfo| {
        // A poisoned lock means another thread panicked mid-update; leaving the table
        // uncompleted is caught by the error path below on the next event.
        let Ok(mut t) = shared.lock() else { return };
        let id = info.table_id;
        match t.complete_table_map(info, &EventPosition::default()) {
            Ok(()) => {
                t.hook_errors.remove(&id);
            }
            Err(e) => {
                t.hook_errors.insert(id, e);
            }
        }
    })
}

#[cfg(test)]
mod tests;
