//! Reading definitions from the server's `information_schema`: at start, and to
//! resynchronise a table whose DDL the tracker could not follow.
//!
//! Needs `SELECT` on the tables concerned (the server shows in `information_schema` only
//! what the user may see). Column types are read from `COLUMNS.COLUMN_TYPE` with the same
//! parser as DDL, collations from `COLLATION_NAME`, the key from `STATISTICS` where
//! `INDEX_NAME = 'PRIMARY'`.

use std::collections::BTreeMap;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use outflow_core::SchemaVersion;

use super::{
    types, Catalog, Defaults, EventPosition, SchemaState, SchemaTracker, ServerTraits, TrackedTable,
};
use crate::filter::Filter;

/// Why definitions could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A query failed (retry: the connection may have dropped).
    #[error("reading the schema from the server ({what}): {source}")]
    Sql {
        /// Which query.
        what: &'static str,
        /// The driver's error.
        source: mysql_async::Error,
    },
    /// The server described a column this version cannot represent.
    #[error("{table}: column `{column}` of type `{column_type}`: {reason}")]
    Column {
        /// `db.table`.
        table: String,
        /// Column name.
        column: String,
        /// `COLUMN_TYPE`.
        column_type: String,
        /// Why.
        reason: String,
    },
}

fn sql(what: &'static str) -> impl FnOnce(mysql_async::Error) -> LoadError {
    move |source| LoadError::Sql { what, source }
}

/// Server flavour, name case rules and the collation catalogue.
pub async fn load_traits(conn: &mut Conn) -> Result<ServerTraits, LoadError> {
    let row: Option<(String, u32, String)> = conn
        .query_first("SELECT VERSION(), @@lower_case_table_names, @@collation_server")
        .await
        .map_err(sql("server variables"))?;
    let (version, lctn, server_collation) = row.unwrap_or_default();
    let mut catalog = Catalog {
        server_collation: Some(server_collation),
        ..Catalog::default()
    };
    let rows: Vec<(String, String, u64)> = conn
        .query(
            "SELECT COLLATION_NAME, CHARACTER_SET_NAME, ID FROM information_schema.COLLATIONS \
             WHERE ID IS NOT NULL",
        )
        .await
        .map_err(sql("collations"))?;
    for (name, cs, id) in rows {
        if let Ok(id) = u16::try_from(id) {
            catalog
                .collations
                .insert(name.to_ascii_lowercase(), (id, cs));
        }
    }
    let rows: Vec<(String, String, u64)> = conn
        .query(
            "SELECT CHARACTER_SET_NAME, DEFAULT_COLLATE_NAME, MAXLEN \
             FROM information_schema.CHARACTER_SETS",
        )
        .await
        .map_err(sql("character sets"))?;
    for (cs, coll, max) in rows {
        catalog
            .charsets
            .insert(cs, (coll.to_ascii_lowercase(), max.min(8) as u8));
    }
    Ok(ServerTraits {
        mariadb: version.contains("MariaDB"),
        lower_case_table_names: lctn != 0,
        catalog,
    })
}

/// A table being read: defaults, columns, primary-key indexes.
type Loading = (Defaults, Vec<outflow_core::ColumnSchema>, Vec<u16>);

/// Databases never in a binlog.
const SYSTEM_DBS: &str = "'information_schema','performance_schema'";

/// Loads every table (or only `only`, as (db, table) pairs) that `scope` wants.
pub async fn load_tables(
    conn: &mut Conn,
    traits: &ServerTraits,
    scope: &Filter,
    only: Option<&[(String, String)]>,
) -> Result<SchemaState, LoadError> {
    let mut state = SchemaState::default();
    let rows: Vec<(String, Option<String>, Option<String>)> = conn
        .query(format!(
            "SELECT SCHEMA_NAME, DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME \
             FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ({SYSTEM_DBS})"
        ))
        .await
        .map_err(sql("databases"))?;
    for (db, charset, collation) in rows {
        state.databases.insert(db, Defaults { charset, collation });
    }
    let wanted = |db: &str, t: &str| {
        scope.wants_table(db, t) && only.is_none_or(|o| o.iter().any(|(d, n)| d == db && n == t))
    };
    let rows: Vec<(String, String, Option<String>)> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_COLLATION FROM information_schema.TABLES \
             WHERE TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') \
             AND TABLE_SCHEMA NOT IN ({SYSTEM_DBS})"
        ))
        .await
        .map_err(sql("tables"))?;
    let mut tables: BTreeMap<(String, String), Loading> = BTreeMap::new();
    for (db, t, coll) in rows {
        if wanted(&db, &t) {
            let defaults = Defaults {
                charset: coll
                    .as_deref()
                    .and_then(|c| traits.catalog.charset_of(c))
                    .map(str::to_string),
                collation: coll,
            };
            tables.insert((db, t), (defaults, Vec::new(), Vec::new()));
        }
    }
    type ColRow = (String, String, String, String, String, Option<String>);
    let rows: Vec<ColRow> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, \
             COLLATION_NAME FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA NOT IN ({SYSTEM_DBS}) \
             ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION"
        ))
        .await
        .map_err(sql("columns"))?;
    for (db, t, name, column_type, nullable, coll) in rows {
        let Some(entry) = tables.get_mut(&(db.clone(), t.clone())) else {
            continue;
        };
        let bad = |reason: String| LoadError::Column {
            table: format!("{db}.{t}"),
            column: name.clone(),
            column_type: column_type.clone(),
            reason,
        };
        let def = crate::ddl::parse_column(&name, &column_type).map_err(|e| bad(e.to_string()))?;
        let coll = coll.and_then(|c| {
            let c = c.to_ascii_lowercase();
            traits
                .catalog
                .collations
                .get(&c)
                .map(|(id, _)| (c.clone(), *id))
        });
        let flavor = if traits.mariadb {
            outflow_binlog::Flavor::MariaDb
        } else {
            outflow_binlog::Flavor::MySql
        };
        let mut col = types::column_from_def(&def, coll, &traits.catalog, flavor).map_err(bad)?;
        col.nullable = nullable == "YES";
        entry.1.push(col);
    }
    let rows: Vec<(String, String, String)> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE INDEX_NAME = 'PRIMARY' AND TABLE_SCHEMA NOT IN ({SYSTEM_DBS}) \
             ORDER BY TABLE_SCHEMA, TABLE_NAME, SEQ_IN_INDEX"
        ))
        .await
        .map_err(sql("primary keys"))?;
    for (db, t, col) in rows {
        if let Some(entry) = tables.get_mut(&(db, t)) {
            if let Some(i) = entry
                .1
                .iter()
                .position(|c| crate::filter::eq_column(&c.name, &col))
            {
                entry.2.push(i as u16);
            }
        }
    }
    for ((db, t), (defaults, columns, primary_key)) in tables {
        state.next_version += 1;
        let schema = outflow_core::TableSchema {
            version: SchemaVersion(state.next_version),
            db: db.clone(),
            table: t.clone(),
            columns,
            primary_key,
        };
        state.tables.entry(db).or_default().insert(
            t,
            TrackedTable {
                schema,
                defaults,
                implicit_versioning: false,
            },
        );
    }
    state.next_version += 1;
    Ok(state)
}

/// A tracker initialised from the server: what outflow uses when it starts without a
/// schema history.
pub async fn tracker_from_server(
    conn: &mut Conn,
    scope: Filter,
) -> Result<SchemaTracker, LoadError> {
    let traits = load_traits(conn).await?;
    let state = load_tables(conn, &traits, &scope, None).await?;
    Ok(SchemaTracker::new(state, traits, scope, 0))
}

/// Reloads `tables` from the server into the tracker (one history entry each): the way
/// out of a [`super::SchemaError`] for a table. The server's definition is the one of
/// *now*, which is right only if no later DDL on the table is still ahead in the stream;
/// the TABLE_MAP check then catches a wrong guess.
pub async fn resync_tables(
    conn: &mut Conn,
    tracker: &mut SchemaTracker,
    at: &EventPosition,
    tables: &[(String, String)],
) -> Result<Vec<u64>, LoadError> {
    let traits = tracker.traits().clone();
    let state = load_tables(conn, &traits, &Filter::default(), Some(tables)).await?;
    let mut seqs = Vec::new();
    for (db, t) in tables {
        let found = state.get(db, t).cloned();
        seqs.push(tracker.put_table(at, "(resync from information_schema)", db, t, found));
    }
    Ok(seqs)
}
