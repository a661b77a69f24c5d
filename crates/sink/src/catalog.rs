//! What a server says about a table: its columns (with charset, collation and whether they
//! are generated) and its keys, read from `information_schema`. Used by `verify` on both
//! sides and by the applier on the target.

use std::collections::HashMap;

use std::future::Future;

use mysql_async::prelude::Queryable;

use crate::sql::push_text_literal;
use crate::target::{value, Rows, Session, TargetError};

/// A connection that runs a query and returns its rows as text: the applier's
/// [`Session`], or a mysql_async connection (`verify`).
pub trait TextQuery {
    /// Its error.
    type Error: From<TargetError>;
    /// Runs `sql` and returns the rows of its result set.
    fn text_rows(&mut self, sql: String) -> impl Future<Output = Result<Rows, Self::Error>> + Send;
}

impl TextQuery for Session {
    type Error = TargetError;
    async fn text_rows(&mut self, sql: String) -> Result<Rows, TargetError> {
        self.rows(sql).await
    }
}

impl TextQuery for mysql_async::Conn {
    type Error = mysql_async::Error;
    async fn text_rows(&mut self, sql: String) -> Result<Rows, mysql_async::Error> {
        let rows: Vec<mysql_async::Row> = self.query(sql).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                row.unwrap_raw()
                    .into_iter()
                    .map(|v| match v {
                        None | Some(mysql_async::Value::NULL) => None,
                        Some(mysql_async::Value::Bytes(b)) => {
                            Some(String::from_utf8_lossy(&b).into_owned())
                        }
                        // The text protocol gives bytes; anything else as SQL would write it.
                        Some(other) => Some(other.as_sql(true)),
                    })
                    .collect()
            })
            .collect())
    }
}

impl From<TargetError> for mysql_async::Error {
    fn from(e: TargetError) -> Self {
        mysql_async::Error::Other(e.to_string().into())
    }
}

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

/// Reads `db.table`'s description; `None` when the table does not exist.
pub async fn load_table<C: TextQuery>(
    conn: &mut C,
    db: &str,
    table: &str,
) -> Result<Option<CatalogTable>, C::Error> {
    let filter = table_filter(db, table);
    let rows = conn
        .text_rows(format!(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, CHARACTER_SET_NAME, \
             COLLATION_NAME, GENERATION_EXPRESSION FROM information_schema.COLUMNS \
             WHERE {filter} ORDER BY ORDINAL_POSITION"
        ))
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    const WHAT: &str = "information_schema.COLUMNS";
    let mut columns = Vec::with_capacity(rows.len());
    for mut row in rows {
        if row.len() != 7 {
            return Err(TargetError::Unexpected(format!("{WHAT}: {} columns", row.len())).into());
        }
        let mut take = |i: usize| row[i].take();
        let text = |v: Option<String>| v.unwrap_or_default();
        columns.push(CatalogColumn {
            name: text(take(0)),
            data_type: text(take(1)).to_ascii_lowercase(),
            column_type: text(take(2)),
            nullable: take(3).as_deref() == Some("YES"),
            charset: take(4),
            collation: take(5),
            generated: take(6).is_some_and(|g| !g.is_empty()),
        });
    }
    // COLUMN_NAME is NULL for a functional key part (MySQL 8): such a key cannot match rows.
    let keys = conn
        .text_rows(format!(
            "SELECT INDEX_NAME, COLUMN_NAME, NON_UNIQUE FROM information_schema.STATISTICS \
             WHERE {filter} ORDER BY INDEX_NAME <> 'PRIMARY', INDEX_NAME, SEQ_IN_INDEX"
        ))
        .await?;
    let mut table = CatalogTable {
        columns,
        primary_key: Vec::new(),
        unique_keys: Vec::new(),
    };
    let mut last: Option<String> = None;
    let mut functional: Vec<String> = Vec::new();
    for mut row in keys {
        let non_unique: u64 = value(&row, 2, "information_schema.STATISTICS")?.unwrap_or_default();
        if non_unique != 0 {
            continue;
        }
        let index = row[0].take().unwrap_or_default();
        let Some(c) = row[1].take().and_then(|c| table.column_index(&c)) else {
            functional.push(index);
            continue;
        };
        if index == "PRIMARY" {
            table.primary_key.push(c);
        } else if last.as_ref() == Some(&index) {
            if let Some((_, cols)) = table.unique_keys.last_mut() {
                cols.push(c);
            }
        } else {
            table.unique_keys.push((index.clone(), vec![c]));
        }
        last = Some(index);
    }
    for name in functional {
        table.unique_keys.retain(|(n, _)| *n != name);
    }
    Ok(Some(table))
}

/// Collation id to (character set, collation) names, for the introducers of text values
/// whose source collation is known by id.
pub async fn load_collations(
    conn: &mut Session,
) -> Result<HashMap<u16, (String, String)>, TargetError> {
    let rows = conn
        .rows("SELECT ID, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLLATIONS")
        .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for mut row in rows {
        // MariaDB 10.10+ lists UCA-14 collations without an id or charset here.
        let id: Option<u16> = value(&row, 0, "information_schema.COLLATIONS")?;
        if let (Some(id), Some(charset), Some(collation)) = (id, row[1].take(), row[2].take()) {
            out.insert(id, (charset, collation));
        }
    }
    Ok(out)
}
