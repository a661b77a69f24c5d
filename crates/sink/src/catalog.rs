//! What a server says about a table: its columns (with charset, collation and whether they
//! are generated) and its keys, read from `information_schema`. Used by `verify` on both
//! sides and by the applier on the target.

use std::collections::HashMap;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use crate::sql::{push_text_literal, typed};

/// One column of a table as the server describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogColumn {
    /// Name.
    pub name: String,
    /// `DATA_TYPE`, lower case (`int`, `varchar`, `json`, ...).
    pub data_type: String,
    /// `COLUMN_TYPE`, the full type (`int(10) unsigned`, `enum('a','b')`, ...).
    pub column_type: String,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// Character set of a character column.
    pub charset: Option<String>,
    /// Collation of a character column.
    pub collation: Option<String>,
    /// A generated (virtual or stored) column, which takes no values from outside.
    pub generated: bool,
}

/// A table as the server describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogTable {
    /// Columns in table order.
    pub columns: Vec<CatalogColumn>,
    /// PRIMARY KEY columns (indexes into `columns`), empty when there is none.
    pub primary_key: Vec<usize>,
    /// Other UNIQUE keys: name and columns.
    pub unique_keys: Vec<(String, Vec<usize>)>,
}

impl CatalogTable {
    /// The column called `name` (names are case-insensitive in MySQL and MariaDB).
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// The key rows can be matched by: the PRIMARY KEY, or else the first UNIQUE key whose
    /// columns are all NOT NULL (the one InnoDB clusters on). `None` when there is neither.
    pub fn row_key(&self) -> Option<(Option<&str>, &[usize])> {
        if !self.primary_key.is_empty() {
            return Some((None, &self.primary_key));
        }
        self.unique_keys
            .iter()
            .find(|(_, cols)| cols.iter().all(|&c| !self.columns[c].nullable))
            .map(|(name, cols)| (Some(name.as_str()), cols.as_slice()))
    }
}

/// `TABLE_SCHEMA = ... AND TABLE_NAME = ...` for information_schema, as literals: MariaDB
/// 10.11.19 crashed now and then on the same query as a prepared statement.
fn table_filter(db: &str, table: &str) -> String {
    let mut out = String::from("TABLE_SCHEMA = ");
    push_text_literal(&mut out, db);
    out.push_str(" AND TABLE_NAME = ");
    push_text_literal(&mut out, table);
    out
}

fn text(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Reads `db.table`'s description; `None` when the table does not exist.
pub async fn load_table(
    conn: &mut Conn,
    db: &str,
    table: &str,
) -> Result<Option<CatalogTable>, mysql_async::Error> {
    let filter = table_filter(db, table);
    // Read as bytes: the applier's session has `SET NAMES binary`.
    type ColumnRow = (
        Vec<u8>,
        Vec<u8>,
        Vec<u8>,
        Vec<u8>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
    );
    let rows: Vec<ColumnRow> = typed(
        conn.query::<Row, _>(format!(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, CHARACTER_SET_NAME, \
             COLLATION_NAME, GENERATION_EXPRESSION FROM information_schema.COLUMNS \
             WHERE {filter} ORDER BY ORDINAL_POSITION"
        ))
        .await?,
    )?;
    if rows.is_empty() {
        return Ok(None);
    }
    let columns: Vec<CatalogColumn> = rows
        .into_iter()
        .map(
            |(name, data_type, column_type, nullable, charset, collation, generation)| {
                CatalogColumn {
                    name: String::from_utf8_lossy(&name).into_owned(),
                    data_type: String::from_utf8_lossy(&data_type).to_ascii_lowercase(),
                    column_type: String::from_utf8_lossy(&column_type).into_owned(),
                    nullable: nullable == b"YES",
                    charset: text(charset),
                    collation: text(collation),
                    generated: generation.is_some_and(|g| !g.is_empty()),
                }
            },
        )
        .collect();
    // COLUMN_NAME is NULL for a functional key part (MySQL 8): such a key cannot match rows.
    let keys: Vec<(Vec<u8>, Option<Vec<u8>>, u64)> = typed(
        conn.query::<Row, _>(format!(
            "SELECT INDEX_NAME, COLUMN_NAME, NON_UNIQUE FROM information_schema.STATISTICS \
             WHERE {filter} ORDER BY INDEX_NAME <> 'PRIMARY', INDEX_NAME, SEQ_IN_INDEX"
        ))
        .await?,
    )?;
    let mut table = CatalogTable {
        columns,
        primary_key: Vec::new(),
        unique_keys: Vec::new(),
    };
    let mut last: Option<Vec<u8>> = None;
    let mut functional: Vec<Vec<u8>> = Vec::new();
    for (index, column, non_unique) in keys {
        if non_unique != 0 {
            continue;
        }
        let Some(c) = column.and_then(|c| table.column_index(&String::from_utf8_lossy(&c))) else {
            functional.push(index);
            continue;
        };
        if index == b"PRIMARY" {
            table.primary_key.push(c);
        } else if last.as_ref() == Some(&index) {
            if let Some((_, cols)) = table.unique_keys.last_mut() {
                cols.push(c);
            }
        } else {
            table
                .unique_keys
                .push((String::from_utf8_lossy(&index).into_owned(), vec![c]));
        }
        last = Some(index);
    }
    for index in functional {
        let name = String::from_utf8_lossy(&index);
        table.unique_keys.retain(|(n, _)| *n != name);
    }
    Ok(Some(table))
}

/// Collation id to (character set, collation) names, for the introducers of text values
/// whose source collation is known by id.
pub async fn load_collations(
    conn: &mut Conn,
) -> Result<HashMap<u16, (String, String)>, mysql_async::Error> {
    // MariaDB 10.10+ lists UCA-14 collations without an id or charset here.
    type CollationRow = (Option<u64>, Option<Vec<u8>>, Option<Vec<u8>>);
    let rows: Vec<CollationRow> = typed(
        conn.query::<Row, _>(
            "SELECT ID, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLLATIONS",
        )
        .await?,
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, charset, collation)| {
            let id = u16::try_from(id?).ok()?;
            let (charset, collation) = (charset?, collation?);
            Some((
                id,
                (
                    String::from_utf8_lossy(&charset).into_owned(),
                    String::from_utf8_lossy(&collation).into_owned(),
                ),
            ))
        })
        .collect())
}
