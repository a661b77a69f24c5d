//! A DDL reader for the statements that change what a table's rows look like.
//!
//! It understands CREATE/DROP/ALTER/RENAME/TRUNCATE TABLE and CREATE/DROP/ALTER DATABASE in
//! the MariaDB and MySQL grammars far enough to know the column list (names, types, type
//! parameters, signedness, charset, nullability), the primary key and the table's name. Any
//! clause that cannot change those (indexes, foreign keys, checks, table options,
//! partitioning, ALGORITHM/LOCK, ...) is stepped over by balanced-parenthesis skipping, so
//! new options in later server versions cost nothing. A clause it does not know at a place
//! where it could matter is an error, never a guess.
//!
//! Why not the `sqlparser` crate (measured with version 0.63, `MySqlDialect`, on this
//! machine): it adds 12 s to a debug build and 60 s to a release build, and it rejects
//! common MariaDB DDL: `ADD COLUMN IF NOT EXISTS`, `ALTER ONLINE TABLE`, `ADD (a INT, b
//! INT)`, `ENGINE=` among ALTER operations, `CONVERT TO CHARACTER SET`, `ZEROFILL`,
//! `PRIMARY KEY USING BTREE (...)`, `PARTITION BY`, `WITH SYSTEM VERSIONING`. A schema
//! tracker must accept what the server accepted, and only a small part of each statement
//! matters to it, so this module reads that part and skips the rest.

use std::fmt;

/// Why a statement could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse DDL near token {at}: {reason}")]
pub struct DdlError {
    /// 0-based token index where reading stopped.
    pub at: usize,
    /// What was expected or found.
    pub reason: String,
}

/// A table name, qualified or not (`None` means the statement's default database).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableRef {
    /// Database, when the statement names one.
    pub db: Option<String>,
    /// Table.
    pub name: String,
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.db {
            Some(db) => write!(f, "{db}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// One column definition as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ColumnDef {
    /// Column name as written (column names compare case-insensitively).
    pub name: String,
    /// Lower-case base type, synonyms resolved (`integer` → `int`, `bool` → `tinyint`).
    pub data_type: String,
    /// Parenthesised type arguments: lengths and precisions, or ENUM/SET members.
    pub args: Vec<String>,
    /// `UNSIGNED` (or `ZEROFILL`, which implies it).
    pub unsigned: bool,
    /// `NOT NULL` (false) or `NULL` (true); `None` when not said.
    pub nullable: Option<bool>,
    /// `CHARACTER SET x` / `CHARSET x` / `ASCII` / `UNICODE`.
    pub charset: Option<String>,
    /// `COLLATE x`.
    pub collation: Option<String>,
    /// The `BINARY` attribute of a character type (`VARCHAR(10) BINARY`: a `_bin` collation).
    pub binary_attr: bool,
    /// `PRIMARY KEY` or `KEY` in the column definition.
    pub primary_key: bool,
}

/// Where ALTER puts a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// At the end (ADD) or where it was (MODIFY/CHANGE).
    Default,
    /// `FIRST`.
    First,
    /// `AFTER col`.
    After(String),
}

/// Table-level charset options (`[DEFAULT] CHARSET=x COLLATE=y`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CharsetOpts {
    /// Character set name.
    pub charset: Option<String>,
    /// Collation name.
    pub collation: Option<String>,
}

/// The body of a CREATE TABLE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateBody {
    /// Explicit columns.
    Columns {
        /// Columns in order.
        columns: Vec<ColumnDef>,
        /// Columns of a table-level `PRIMARY KEY (...)`, if any.
        primary_key: Option<Vec<String>>,
        /// Table default charset and collation.
        charset: CharsetOpts,
        /// `WITH SYSTEM VERSIONING` without explicit period columns: the server adds
        /// invisible `row_start`/`row_end` columns.
        system_versioning: bool,
    },
    /// `LIKE other`.
    Like(TableRef),
}

/// One operation of an ALTER TABLE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterOp {
    /// `ADD [COLUMN] [IF NOT EXISTS] def [FIRST|AFTER x]`.
    AddColumn {
        /// The new column.
        def: ColumnDef,
        /// Where it goes.
        place: Placement,
        /// `IF NOT EXISTS`.
        if_not_exists: bool,
    },
    /// `DROP [COLUMN] [IF EXISTS] name`.
    DropColumn {
        /// Column name.
        name: String,
        /// `IF EXISTS`.
        if_exists: bool,
    },
    /// `MODIFY` (old name = new name) or `CHANGE old def`.
    ChangeColumn {
        /// The column changed.
        old: String,
        /// Its new definition.
        def: ColumnDef,
        /// Where it goes.
        place: Placement,
        /// `IF EXISTS`.
        if_exists: bool,
    },
    /// `RENAME COLUMN a TO b`.
    RenameColumn {
        /// Old name.
        old: String,
        /// New name.
        new: String,
    },
    /// `ADD [CONSTRAINT [x]] PRIMARY KEY (cols)`.
    AddPrimaryKey(Vec<String>),
    /// `DROP PRIMARY KEY` (or `DROP INDEX PRIMARY`).
    DropPrimaryKey,
    /// `RENAME [TO|AS] name`.
    RenameTable(TableRef),
    /// `CONVERT TO CHARACTER SET x [COLLATE y]`: every character column changes.
    ConvertCharset(CharsetOpts),
    /// `[DEFAULT] CHARACTER SET x [COLLATE y]`: the default for new columns only.
    DefaultCharset(CharsetOpts),
    /// `ADD SYSTEM VERSIONING` / `DROP SYSTEM VERSIONING`.
    SystemVersioning(bool),
}

/// A statement, as far as table definitions are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ddl {
    /// `CREATE DATABASE`.
    CreateDatabase {
        /// Name.
        name: String,
        /// `IF NOT EXISTS`.
        if_not_exists: bool,
        /// Default charset and collation.
        charset: CharsetOpts,
    },
    /// `ALTER DATABASE` (charset defaults).
    AlterDatabase {
        /// Name, or the default database.
        name: Option<String>,
        /// New defaults.
        charset: CharsetOpts,
    },
    /// `DROP DATABASE`.
    DropDatabase {
        /// Name.
        name: String,
    },
    /// `CREATE [OR REPLACE] TABLE`.
    CreateTable {
        /// The table.
        table: TableRef,
        /// `IF NOT EXISTS`.
        if_not_exists: bool,
        /// `OR REPLACE`.
        or_replace: bool,
        /// Columns or LIKE.
        body: CreateBody,
    },
    /// `DROP TABLE a, b`.
    DropTables(Vec<TableRef>),
    /// `RENAME TABLE a TO b, c TO d` (applied in order).
    RenameTables(Vec<(TableRef, TableRef)>),
    /// `ALTER TABLE t op, op, ...`.
    AlterTable {
        /// The table.
        table: TableRef,
        /// Operations that change columns, key or name, in order.
        ops: Vec<AlterOp>,
    },
    /// `TRUNCATE [TABLE] t`: no definition change, but every row is gone.
    Truncate(TableRef),
    /// A statement about temporary tables, which row-based binlogs never use.
    Temporary,
    /// Not a statement that changes a table definition (DML, GRANT, views, indexes, ...).
    Other,
}

impl Ddl {
    /// The tables the statement reads or changes definitions of, for error messages and
    /// filters (a CREATE ... LIKE also names its source).
    pub fn tables(&self) -> Vec<&TableRef> {
        match self {
            Ddl::CreateTable { table, body, .. } => match body {
                CreateBody::Like(src) => vec![table, src],
                CreateBody::Columns { .. } => vec![table],
            },
            Ddl::DropTables(t) => t.iter().collect(),
            Ddl::RenameTables(p) => p.iter().flat_map(|(a, b)| [a, b]).collect(),
            Ddl::AlterTable { table, ops } => {
                let mut v = vec![table];
                for op in ops {
                    if let AlterOp::RenameTable(t) = op {
                        v.push(t);
                    }
                }
                v
            }
            Ddl::Truncate(t) => vec![t],
            _ => Vec::new(),
        }
    }
}

/// What a statement is about, read from its first words only. Even when the statement
/// itself cannot be parsed, this says which table an error concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// A table statement on this table.
    Table(TableRef),
    /// A database statement.
    Database(Option<String>),
    /// Not a definition-changing statement.
    Other,
}

// ---------------------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// An unquoted word: keyword or identifier.
    Word(String),
    /// A backtick-quoted identifier.
    Quoted(String),
    /// A string literal; `true` when it was double-quoted (an identifier in ANSI_QUOTES).
    Str(String, bool),
    /// A number.
    Num(String),
    /// Any other single character.
    Punct(char),
}

fn tokenize(sql: &str) -> Result<Vec<Tok>, DdlError> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    // Depth of `/*! ... */` executable comments, whose contents are statement text.
    let mut exec = 0u32;
    let err = |reason: &str, n: usize| DdlError {
        at: n,
        reason: reason.to_string(),
    };
    while i < b.len() {
        let c = b[i];
        match c {
            _ if c.is_ascii_whitespace() => i += 1,
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-')
                && b.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) =>
            {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let rest = &b[i + 2..];
                let marker = if rest.first() == Some(&b'!') {
                    Some(1)
                } else if rest.starts_with(b"M!") {
                    Some(2)
                } else {
                    None
                };
                if let Some(m) = marker {
                    i += 2 + m;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    exec += 1;
                } else {
                    let end = find(b, i + 2, b"*/")
                        .ok_or_else(|| err("unterminated comment", out.len()))?;
                    i = end + 2;
                }
            }
            b'*' if exec > 0 && b.get(i + 1) == Some(&b'/') => {
                exec -= 1;
                i += 2;
            }
            b'`' => {
                let mut s = Vec::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err(err("unterminated quoted identifier", out.len())),
                        Some(b'`') if b.get(i + 1) == Some(&b'`') => {
                            s.push(b'`');
                            i += 2;
                        }
                        Some(b'`') => {
                            i += 1;
                            break;
                        }
                        Some(&c) => {
                            s.push(c);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Quoted(String::from_utf8_lossy(&s).into_owned()));
            }
            b'\'' | b'"' => {
                let q = c;
                let mut s = Vec::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err(err("unterminated string", out.len())),
                        Some(&c) if c == q && b.get(i + 1) == Some(&q) => {
                            s.push(q);
                            i += 2;
                        }
                        Some(&c) if c == q => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') if i + 1 < b.len() => {
                            s.push(unescape(b[i + 1]));
                            i += 2;
                        }
                        Some(&c) => {
                            s.push(c);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(
                    String::from_utf8_lossy(&s).into_owned(),
                    q == b'"',
                ));
            }
            _ if is_word_byte(c) => {
                let start = i;
                while i < b.len() && is_word_byte(b[i]) {
                    i += 1;
                }
                let w = &sql[start..i];
                if w.bytes().all(|c| c.is_ascii_digit()) {
                    // A decimal number: digits, optional fraction and exponent.
                    if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                        i += 1;
                        while i < b.len() && is_word_byte(b[i]) {
                            i += 1;
                        }
                    }
                    out.push(Tok::Num(sql[start..i].to_string()));
                } else {
                    out.push(Tok::Word(w.to_string()));
                }
            }
            _ => {
                // Multi-byte UTF-8 is handled by is_word_byte; anything else is punctuation.
                out.push(Tok::Punct(c as char));
                i += 1;
            }
        }
    }
    Ok(out)
}

fn unescape(c: u8) -> u8 {
    match c {
        b'n' => b'\n',
        b't' => b'\t',
        b'r' => b'\r',
        b'0' => 0,
        b'Z' => 26,
        c => c,
    }
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

// ---------------------------------------------------------------------------------------
// Parser

struct P {
    toks: Vec<Tok>,
    i: usize,
}

type R<T> = Result<T, DdlError>;

impl P {
    fn err<T>(&self, reason: impl Into<String>) -> R<T> {
        Err(DdlError {
            at: self.i,
            reason: reason.into(),
        })
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i)
    }

    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.i + k)
    }

    fn is_kw_at(&self, k: usize, kw: &str) -> bool {
        matches!(self.peek_at(k), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn is_kw(&self, kw: &str) -> bool {
        self.is_kw_at(0, kw)
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Eats a sequence of keywords only if all are there.
    fn eat_kws(&mut self, kws: &[&str]) -> bool {
        if kws.iter().enumerate().all(|(k, kw)| self.is_kw_at(k, kw)) {
            self.i += kws.len();
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, kw: &str) -> R<()> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            self.err(format!("expected {kw}, found {}", self.describe()))
        }
    }

    fn is_punct(&self, c: char) -> bool {
        matches!(self.peek(), Some(Tok::Punct(p)) if *p == c)
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if self.is_punct(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, c: char) -> R<()> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            self.err(format!("expected `{c}`, found {}", self.describe()))
        }
    }

    fn at_end(&self) -> bool {
        self.i >= self.toks.len() || (self.is_punct(';') && self.i + 1 == self.toks.len())
    }

    fn describe(&self) -> String {
        match self.peek() {
            None => "the end of the statement".into(),
            Some(Tok::Word(w)) => format!("`{w}`"),
            Some(Tok::Quoted(w)) => format!("`{w}`"),
            Some(Tok::Str(..)) => "a string".into(),
            Some(Tok::Num(n)) => format!("number {n}"),
            Some(Tok::Punct(c)) => format!("`{c}`"),
        }
    }

    /// An identifier: a word, a backtick-quoted name, or a double-quoted one.
    fn ident(&mut self) -> R<String> {
        match self.peek() {
            Some(Tok::Word(w)) => {
                let w = w.clone();
                self.i += 1;
                Ok(w)
            }
            Some(Tok::Quoted(w)) | Some(Tok::Str(w, true)) => {
                let w = w.clone();
                self.i += 1;
                Ok(w)
            }
            _ => self.err(format!("expected a name, found {}", self.describe())),
        }
    }

    /// A name that may be a string (charset and collation names may be quoted).
    fn name_or_string(&mut self) -> R<String> {
        match self.peek() {
            Some(Tok::Str(w, _)) => {
                let w = w.clone();
                self.i += 1;
                Ok(w)
            }
            _ => self.ident(),
        }
    }

    fn table_ref(&mut self) -> R<TableRef> {
        let first = self.ident()?;
        if self.is_punct('.') {
            self.i += 1;
            let name = self.ident()?;
            Ok(TableRef {
                db: Some(first),
                name,
            })
        } else {
            Ok(TableRef {
                db: None,
                name: first,
            })
        }
    }

    /// Skips one token, or a whole balanced parenthesised group.
    fn skip_one(&mut self) -> R<()> {
        if self.eat_punct('(') {
            let mut depth = 1;
            while depth > 0 {
                match self.peek() {
                    None => return self.err("unbalanced parentheses"),
                    Some(Tok::Punct('(')) => depth += 1,
                    Some(Tok::Punct(')')) => depth -= 1,
                    _ => {}
                }
                self.i += 1;
            }
        } else {
            self.i += 1;
        }
        Ok(())
    }

    /// Skips to the next `,` or `)` at this nesting level (or the end), not consuming it.
    fn skip_item(&mut self) -> R<()> {
        while !self.at_end() && !self.is_punct(',') && !self.is_punct(')') {
            self.skip_one()?;
        }
        Ok(())
    }

    fn wait_nowait(&mut self) {
        if self.eat_kw("NOWAIT") {
            return;
        }
        if self.is_kw("WAIT") && matches!(self.peek_at(1), Some(Tok::Num(_))) {
            self.i += 2;
        }
    }

    fn if_exists(&mut self) -> bool {
        self.eat_kws(&["IF", "EXISTS"])
    }

    fn if_not_exists(&mut self) -> bool {
        self.eat_kws(&["IF", "NOT", "EXISTS"])
    }

    /// `( name [(len)] [ASC|DESC], ... )` of a key; prefix lengths and order are dropped.
    fn key_columns(&mut self) -> R<Vec<String>> {
        self.expect_punct('(')?;
        let mut cols = Vec::new();
        loop {
            cols.push(self.ident()?);
            self.skip_item()?;
            if self.eat_punct(',') {
                continue;
            }
            self.expect_punct(')')?;
            return Ok(cols);
        }
    }

    /// After `PRIMARY KEY`: `[USING x] (cols) [index options]`.
    fn primary_key_rest(&mut self) -> R<Vec<String>> {
        if self.eat_kw("USING") {
            self.ident()?;
        }
        let cols = self.key_columns()?;
        self.skip_item()?;
        Ok(cols)
    }

    /// `[=] charset [COLLATE [=] collation]`, after `CHARACTER SET`.
    fn charset_then_collation(&mut self) -> R<CharsetOpts> {
        let charset = Some(self.option_value()?);
        let collation = if self.eat_kw("COLLATE") {
            Some(self.option_value()?)
        } else {
            None
        };
        Ok(CharsetOpts { charset, collation })
    }

    /// `[=] value` of a charset or collation option.
    fn option_value(&mut self) -> R<String> {
        self.eat_punct('=');
        self.name_or_string()
    }

    /// Reads a column definition after its name, up to `,` / `)` / end / FIRST / AFTER.
    fn column_def(&mut self, name: String) -> R<ColumnDef> {
        let mut c = ColumnDef {
            name,
            ..ColumnDef::default()
        };
        let Some(Tok::Word(t)) = self.peek() else {
            return self.err(format!(
                "expected the type of column `{}`, found {}",
                c.name,
                self.describe()
            ));
        };
        let mut t = t.to_ascii_lowercase();
        self.i += 1;
        // Two-word types and synonyms.
        match t.as_str() {
            "double" => {
                self.eat_kw("PRECISION");
            }
            "long" => {
                t = if self.eat_kw("VARBINARY") {
                    "mediumblob".into()
                } else {
                    let _ = self.eat_kw("VARCHAR") || self.eat_kw("CHAR") && self.eat_kw("VARYING");
                    "mediumtext".into()
                };
            }
            "national" | "nchar" | "nvarchar" | "character" | "char" => {
                if t == "national" {
                    t = if self.eat_kw("VARCHAR") {
                        "varchar".into()
                    } else {
                        let _ = self.eat_kw("CHAR") || self.eat_kw("CHARACTER");
                        "char".into()
                    };
                    c.charset = Some("utf8mb3".into());
                } else if t == "nchar" || t == "nvarchar" {
                    c.charset = Some("utf8mb3".into());
                }
                if t == "nvarchar" {
                    t = "varchar".into();
                } else if t == "nchar" || t == "character" {
                    t = "char".into();
                }
                if t == "char" && self.eat_kw("VARYING") {
                    t = "varchar".into();
                }
            }
            _ => {}
        }
        c.data_type = normalize_type(&t).to_string();
        if self.eat_punct('(') {
            loop {
                match self.peek() {
                    Some(Tok::Num(n)) | Some(Tok::Str(n, _)) | Some(Tok::Word(n)) => {
                        c.args.push(n.clone());
                        self.i += 1;
                    }
                    _ => return self.err(format!("bad type arguments for `{}`", c.name)),
                }
                if self.eat_punct(',') {
                    continue;
                }
                self.expect_punct(')')?;
                break;
            }
        }
        if c.data_type == "serial" {
            c.data_type = "bigint".into();
            c.unsigned = true;
            c.nullable = Some(false);
        }
        if c.data_type == "bool" || c.data_type == "boolean" {
            c.data_type = "tinyint".into();
            c.args = vec!["1".into()];
        }
        // Attributes, in any order.
        while !self.at_end() && !self.is_punct(',') && !self.is_punct(')') {
            if self.is_kw("FIRST") || self.is_kw("AFTER") {
                break;
            }
            if self.eat_kw("UNSIGNED") || self.eat_kw("ZEROFILL") {
                c.unsigned = true;
            } else if self.eat_kw("SIGNED") {
            } else if self.eat_kws(&["NOT", "NULL"]) {
                c.nullable = Some(false);
            } else if self.eat_kw("NULL") {
                c.nullable = Some(true);
            } else if self.eat_kws(&["CHARACTER", "SET"]) || self.eat_kw("CHARSET") {
                c.charset = Some(self.option_value()?);
            } else if self.eat_kw("COLLATE") {
                c.collation = Some(self.option_value()?);
            } else if self.eat_kw("ASCII") {
                c.charset = Some("latin1".into());
            } else if self.eat_kw("UNICODE") {
                c.charset = Some("ucs2".into());
            } else if self.eat_kw("BYTE") {
                c.charset = Some("binary".into());
            } else if self.eat_kw("BINARY") {
                c.binary_attr = true;
            } else if self.eat_kws(&["PRIMARY", "KEY"]) {
                c.primary_key = true;
            } else if self.eat_kw("UNIQUE") {
                self.eat_kw("KEY");
            } else if self.eat_kw("KEY") {
                // A bare KEY in a column definition is PRIMARY KEY.
                c.primary_key = true;
            } else if self.eat_kw("DEFAULT")
                || self.eat_kw("COMMENT")
                || self.eat_kw("CHECK")
                || self.eat_kw("SRID")
                || self.eat_kws(&["ON", "UPDATE"])
            {
                // One value: a literal, a signed number, a function call or a group.
                let _ = self.eat_punct('-') || self.eat_punct('+');
                if matches!(self.peek(), Some(Tok::Word(_)))
                    && matches!(self.peek_at(1), Some(Tok::Punct('(')))
                {
                    self.i += 1;
                }
                self.skip_one()?;
            } else if self.eat_kw("REFERENCES") {
                self.table_ref()?;
                while !self.at_end() && !self.is_punct(',') && !self.is_punct(')') {
                    self.skip_one()?;
                }
            } else {
                // AUTO_INCREMENT, INVISIBLE, VIRTUAL, STORED, PERSISTENT, GENERATED ALWAYS
                // AS (...), COLUMN_FORMAT x, STORAGE x, WITH/WITHOUT SYSTEM VERSIONING,
                // COMPRESSED, ...: nothing that changes what the binlog carries.
                self.skip_one()?;
            }
        }
        Ok(c)
    }

    fn placement(&mut self) -> R<Placement> {
        if self.eat_kw("FIRST") {
            Ok(Placement::First)
        } else if self.eat_kw("AFTER") {
            Ok(Placement::After(self.ident()?))
        } else {
            Ok(Placement::Default)
        }
    }

    /// Table options after the column list; returns charset options and whether the table
    /// is system-versioned. Stops at the end or at a SELECT.
    fn table_options(&mut self) -> R<(CharsetOpts, bool, bool)> {
        let mut cs = CharsetOpts::default();
        let mut versioning = false;
        let mut select = false;
        while !self.at_end() {
            if self.eat_kw("DEFAULT") {
                continue;
            }
            if self.eat_kws(&["CHARACTER", "SET"]) || self.eat_kw("CHARSET") {
                cs.charset = Some(self.option_value()?);
            } else if self.eat_kw("COLLATE") {
                cs.collation = Some(self.option_value()?);
            } else if self.eat_kws(&["WITH", "SYSTEM", "VERSIONING"]) {
                versioning = true;
            } else if self.is_kw("SELECT")
                || self.is_kw("AS")
                || self.is_kw("IGNORE")
                || self.is_kw("REPLACE")
                || self.is_kw("WITH")
                || self.is_punct('(') && self.is_kw_at(1, "SELECT")
            {
                select = true;
                break;
            } else {
                self.skip_one()?;
            }
        }
        Ok((cs, versioning, select))
    }

    fn create_table(&mut self, or_replace: bool) -> R<Ddl> {
        let if_not_exists = self.if_not_exists();
        let table = self.table_ref()?;
        if self.eat_kw("LIKE") {
            return Ok(Ddl::CreateTable {
                table,
                if_not_exists,
                or_replace,
                body: CreateBody::Like(self.table_ref()?),
            });
        }
        if self.is_punct('(') && self.is_kw_at(1, "LIKE") {
            self.i += 2;
            let src = self.table_ref()?;
            self.expect_punct(')')?;
            return Ok(Ddl::CreateTable {
                table,
                if_not_exists,
                or_replace,
                body: CreateBody::Like(src),
            });
        }
        if !self.eat_punct('(') {
            return self.err(
                "CREATE TABLE without a column list (CREATE ... SELECT): the columns come from \
                 a query",
            );
        }
        let mut columns = Vec::new();
        let mut primary_key = None;
        let mut explicit_period = false;
        loop {
            if self.eat_punct(')') {
                break;
            }
            let quoted = matches!(self.peek(), Some(Tok::Quoted(_)) | Some(Tok::Str(_, true)));
            let is = |p: &P, kw: &str| !quoted && p.is_kw(kw);
            if is(self, "CONSTRAINT") {
                self.i += 1;
                if !self.is_kw("PRIMARY")
                    && !self.is_kw("UNIQUE")
                    && !self.is_kw("FOREIGN")
                    && !self.is_kw("CHECK")
                {
                    self.ident()?;
                }
                if self.eat_kws(&["PRIMARY", "KEY"]) {
                    primary_key = Some(self.primary_key_rest()?);
                } else {
                    self.skip_item()?;
                }
            } else if is(self, "PRIMARY") {
                self.i += 1;
                self.expect_kw("KEY")?;
                primary_key = Some(self.primary_key_rest()?);
            } else if is(self, "PERIOD") && self.is_kw_at(1, "FOR") {
                explicit_period = true;
                self.skip_item()?;
            } else if [
                "INDEX", "KEY", "UNIQUE", "FULLTEXT", "SPATIAL", "FOREIGN", "CHECK",
            ]
            .iter()
            .any(|k| is(self, k))
            {
                self.skip_item()?;
            } else {
                let name = self.ident()?;
                let def = self.column_def(name)?;
                columns.push(def);
            }
            if self.eat_punct(',') {
                continue;
            }
            self.expect_punct(')')?;
            break;
        }
        let (charset, versioning, select) = self.table_options()?;
        if select {
            return self.err("CREATE TABLE ... SELECT: the columns come partly from a query");
        }
        if primary_key.is_none() {
            let inline: Vec<String> = columns
                .iter()
                .filter(|c| c.primary_key)
                .map(|c| c.name.clone())
                .collect();
            if !inline.is_empty() {
                primary_key = Some(inline);
            }
        }
        Ok(Ddl::CreateTable {
            table,
            if_not_exists,
            or_replace,
            body: CreateBody::Columns {
                columns,
                primary_key,
                charset,
                system_versioning: versioning && !explicit_period,
            },
        })
    }

    fn alter_op(&mut self, ops: &mut Vec<AlterOp>) -> R<()> {
        let kw = |p: &P, k: &str| p.is_kw(k);
        if self.eat_kw("ADD") {
            if self.eat_kws(&["SYSTEM", "VERSIONING"]) {
                ops.push(AlterOp::SystemVersioning(true));
                return Ok(());
            }
            let column = self.eat_kw("COLUMN");
            let if_not_exists = self.if_not_exists();
            if !column {
                if self.eat_kw("CONSTRAINT") {
                    self.if_not_exists();
                    if !kw(self, "PRIMARY")
                        && !kw(self, "UNIQUE")
                        && !kw(self, "FOREIGN")
                        && !kw(self, "CHECK")
                    {
                        self.ident()?;
                    }
                    if self.eat_kws(&["PRIMARY", "KEY"]) {
                        ops.push(AlterOp::AddPrimaryKey(self.primary_key_rest()?));
                    } else {
                        self.skip_item()?;
                    }
                    return Ok(());
                }
                if self.eat_kws(&["PRIMARY", "KEY"]) {
                    ops.push(AlterOp::AddPrimaryKey(self.primary_key_rest()?));
                    return Ok(());
                }
                let quoted = matches!(self.peek(), Some(Tok::Quoted(_)) | Some(Tok::Str(_, true)));
                if !quoted
                    && [
                        "INDEX",
                        "KEY",
                        "UNIQUE",
                        "FULLTEXT",
                        "SPATIAL",
                        "FOREIGN",
                        "CHECK",
                        "PARTITION",
                    ]
                    .iter()
                    .any(|k| kw(self, k))
                    || kw(self, "PERIOD") && self.is_kw_at(1, "FOR")
                {
                    self.skip_item()?;
                    return Ok(());
                }
            }
            if self.eat_punct('(') {
                loop {
                    let name = self.ident()?;
                    let def = self.column_def(name)?;
                    ops.push(AlterOp::AddColumn {
                        def,
                        place: Placement::Default,
                        if_not_exists,
                    });
                    if self.eat_punct(',') {
                        continue;
                    }
                    self.expect_punct(')')?;
                    return Ok(());
                }
            }
            let name = self.ident()?;
            let def = self.column_def(name)?;
            let place = self.placement()?;
            ops.push(AlterOp::AddColumn {
                def,
                place,
                if_not_exists,
            });
            return Ok(());
        }
        if self.eat_kw("DROP") {
            if self.eat_kws(&["PRIMARY", "KEY"]) {
                ops.push(AlterOp::DropPrimaryKey);
                return Ok(());
            }
            if self.eat_kws(&["SYSTEM", "VERSIONING"]) {
                ops.push(AlterOp::SystemVersioning(false));
                return Ok(());
            }
            let quoted = matches!(self.peek(), Some(Tok::Quoted(_)) | Some(Tok::Str(_, true)));
            if !quoted && (kw(self, "INDEX") || kw(self, "KEY")) {
                self.i += 1;
                self.if_exists();
                let name = self.ident()?;
                if name.eq_ignore_ascii_case("PRIMARY") {
                    ops.push(AlterOp::DropPrimaryKey);
                }
                return Ok(());
            }
            if !quoted
                && ["FOREIGN", "CONSTRAINT", "CHECK", "PARTITION", "PERIOD"]
                    .iter()
                    .any(|k| kw(self, k))
            {
                self.skip_item()?;
                return Ok(());
            }
            self.eat_kw("COLUMN");
            let if_exists = self.if_exists();
            let name = self.ident()?;
            let _ = self.eat_kw("RESTRICT") || self.eat_kw("CASCADE");
            ops.push(AlterOp::DropColumn { name, if_exists });
            return Ok(());
        }
        if self.eat_kw("MODIFY") {
            self.eat_kw("COLUMN");
            let if_exists = self.if_exists();
            let name = self.ident()?;
            let def = self.column_def(name.clone())?;
            let place = self.placement()?;
            ops.push(AlterOp::ChangeColumn {
                old: name,
                def,
                place,
                if_exists,
            });
            return Ok(());
        }
        if self.eat_kw("CHANGE") {
            self.eat_kw("COLUMN");
            let if_exists = self.if_exists();
            let old = self.ident()?;
            let name = self.ident()?;
            let def = self.column_def(name)?;
            let place = self.placement()?;
            ops.push(AlterOp::ChangeColumn {
                old,
                def,
                place,
                if_exists,
            });
            return Ok(());
        }
        if self.eat_kw("RENAME") {
            if self.eat_kw("COLUMN") {
                let old = self.ident()?;
                self.expect_kw("TO")?;
                let new = self.ident()?;
                ops.push(AlterOp::RenameColumn { old, new });
                return Ok(());
            }
            if self.eat_kw("INDEX") || self.eat_kw("KEY") {
                self.skip_item()?;
                return Ok(());
            }
            let _ = self.eat_kw("TO") || self.eat_kw("AS");
            ops.push(AlterOp::RenameTable(self.table_ref()?));
            return Ok(());
        }
        if self.eat_kws(&["CONVERT", "TO"]) {
            let _ = self.eat_kws(&["CHARACTER", "SET"]) || self.eat_kw("CHARSET");
            ops.push(AlterOp::ConvertCharset(self.charset_then_collation()?));
            return Ok(());
        }
        self.eat_kw("DEFAULT");
        if self.eat_kws(&["CHARACTER", "SET"]) || self.eat_kw("CHARSET") {
            ops.push(AlterOp::DefaultCharset(self.charset_then_collation()?));
            return Ok(());
        }
        if self.eat_kw("COLLATE") {
            let cs = CharsetOpts {
                charset: None,
                collation: Some(self.option_value()?),
            };
            ops.push(AlterOp::DefaultCharset(cs));
            return Ok(());
        }
        // Operations known to leave columns, key and name alone.
        const NEUTRAL: &[&str] = &[
            "ALTER",
            "ALGORITHM",
            "LOCK",
            "FORCE",
            "ENGINE",
            "ROW_FORMAT",
            "COMMENT",
            "AUTO_INCREMENT",
            "AVG_ROW_LENGTH",
            "CHECKSUM",
            "COMPRESSION",
            "CONNECTION",
            "DATA",
            "INDEX",
            "DELAY_KEY_WRITE",
            "ENCRYPTED",
            "ENCRYPTION",
            "ENCRYPTION_KEY_ID",
            "IETF_QUOTES",
            "INSERT_METHOD",
            "KEY_BLOCK_SIZE",
            "MAX_ROWS",
            "MIN_ROWS",
            "PACK_KEYS",
            "PAGE_CHECKSUM",
            "PAGE_COMPRESSED",
            "PAGE_COMPRESSION_LEVEL",
            "PASSWORD",
            "SEQUENCE",
            "STATS_AUTO_RECALC",
            "STATS_PERSISTENT",
            "STATS_SAMPLE_PAGES",
            "TABLESPACE",
            "TRANSACTIONAL",
            "UNION",
            "ENABLE",
            "DISABLE",
            "DISCARD",
            "IMPORT",
            "ORDER",
            "PARTITION",
            "REMOVE",
            "COALESCE",
            "REORGANIZE",
            "EXCHANGE",
            "ANALYZE",
            "CHECK",
            "OPTIMIZE",
            "REBUILD",
            "REPAIR",
            "TRUNCATE",
            "WITH",
            "WITHOUT",
            "VALIDATION",
            "UPGRADE",
            "SECONDARY_ENGINE",
            "SECONDARY_LOAD",
            "SECONDARY_UNLOAD",
            "STORAGE",
            "START",
        ];
        if NEUTRAL.iter().any(|k| kw(self, k)) {
            self.skip_item()?;
            return Ok(());
        }
        self.err(format!("unknown ALTER TABLE operation {}", self.describe()))
    }

    fn alter_table(&mut self) -> R<Ddl> {
        self.if_exists();
        let table = self.table_ref()?;
        self.wait_nowait();
        let mut ops = Vec::new();
        while !self.at_end() {
            self.alter_op(&mut ops)?;
            if self.eat_punct(',') {
                continue;
            }
            if !self.at_end() {
                // Partition options follow the operations without a comma.
                if self.is_kw("PARTITION") || self.is_kw("REMOVE") {
                    while !self.at_end() {
                        self.skip_one()?;
                    }
                    break;
                }
                return self.err(format!(
                    "expected `,` between ALTER TABLE operations, found {}",
                    self.describe()
                ));
            }
        }
        Ok(Ddl::AlterTable { table, ops })
    }

    fn db_charset(&mut self) -> R<CharsetOpts> {
        let mut cs = CharsetOpts::default();
        while !self.at_end() {
            if self.eat_kw("DEFAULT") {
                continue;
            }
            if self.eat_kws(&["CHARACTER", "SET"]) || self.eat_kw("CHARSET") {
                cs.charset = Some(self.option_value()?);
            } else if self.eat_kw("COLLATE") {
                cs.collation = Some(self.option_value()?);
            } else {
                self.skip_one()?;
            }
        }
        Ok(cs)
    }

    fn statement(&mut self) -> R<Ddl> {
        if self.eat_kw("CREATE") {
            let or_replace = self.eat_kws(&["OR", "REPLACE"]);
            if self.eat_kw("TEMPORARY") {
                return Ok(Ddl::Temporary);
            }
            if self.eat_kw("TABLE") {
                return self.create_table(or_replace);
            }
            if self.eat_kw("DATABASE") || self.eat_kw("SCHEMA") {
                let if_not_exists = self.if_not_exists();
                let name = self.ident()?;
                let charset = self.db_charset()?;
                return Ok(Ddl::CreateDatabase {
                    name,
                    if_not_exists,
                    charset,
                });
            }
            return Ok(Ddl::Other);
        }
        if self.eat_kw("DROP") {
            if self.eat_kw("TEMPORARY") {
                return Ok(Ddl::Temporary);
            }
            if self.eat_kw("TABLE") || self.eat_kw("TABLES") {
                self.if_exists();
                let mut tables = vec![self.table_ref()?];
                while self.eat_punct(',') {
                    tables.push(self.table_ref()?);
                }
                return Ok(Ddl::DropTables(tables));
            }
            if self.eat_kw("DATABASE") || self.eat_kw("SCHEMA") {
                self.if_exists();
                return Ok(Ddl::DropDatabase {
                    name: self.ident()?,
                });
            }
            return Ok(Ddl::Other);
        }
        if self.eat_kw("ALTER") {
            self.eat_kw("ONLINE");
            self.eat_kw("IGNORE");
            if self.eat_kw("TABLE") {
                return self.alter_table();
            }
            if self.eat_kw("DATABASE") || self.eat_kw("SCHEMA") {
                let name = if self.is_kw("DEFAULT")
                    || self.is_kw("CHARACTER")
                    || self.is_kw("CHARSET")
                    || self.is_kw("COLLATE")
                {
                    None
                } else {
                    Some(self.ident()?)
                };
                let charset = self.db_charset()?;
                return Ok(Ddl::AlterDatabase { name, charset });
            }
            return Ok(Ddl::Other);
        }
        if self.eat_kw("RENAME") {
            if self.eat_kw("TABLE") || self.eat_kw("TABLES") {
                self.if_exists();
                let mut pairs = Vec::new();
                loop {
                    let from = self.table_ref()?;
                    self.wait_nowait();
                    self.expect_kw("TO")?;
                    let to = self.table_ref()?;
                    pairs.push((from, to));
                    if !self.eat_punct(',') {
                        break;
                    }
                }
                return Ok(Ddl::RenameTables(pairs));
            }
            return Ok(Ddl::Other);
        }
        if self.eat_kw("TRUNCATE") {
            self.eat_kw("TABLE");
            let t = self.table_ref()?;
            return Ok(Ddl::Truncate(t));
        }
        Ok(Ddl::Other)
    }

    fn head(&mut self) -> Head {
        let table = |p: &mut P| p.table_ref().map(Head::Table).unwrap_or(Head::Other);
        if self.eat_kw("CREATE") {
            self.eat_kws(&["OR", "REPLACE"]);
            if self.eat_kw("TABLE") {
                self.if_not_exists();
                return table(self);
            }
            if self.eat_kw("DATABASE") || self.eat_kw("SCHEMA") {
                self.if_not_exists();
                return Head::Database(self.ident().ok());
            }
        } else if self.eat_kw("DROP") {
            if self.eat_kw("TABLE") || self.eat_kw("TABLES") {
                self.if_exists();
                return table(self);
            }
            if self.eat_kw("DATABASE") || self.eat_kw("SCHEMA") {
                self.if_exists();
                return Head::Database(self.ident().ok());
            }
        } else if self.eat_kw("ALTER") {
            self.eat_kw("ONLINE");
            self.eat_kw("IGNORE");
            if self.eat_kw("TABLE") {
                self.if_exists();
                return table(self);
            }
            if self.eat_kw("DATABASE") || self.eat_kw("SCHEMA") {
                return Head::Database(self.ident().ok());
            }
        } else if self.eat_kw("RENAME") {
            if self.eat_kw("TABLE") || self.eat_kw("TABLES") {
                self.if_exists();
                return table(self);
            }
        } else if self.eat_kw("TRUNCATE") {
            self.eat_kw("TABLE");
            return table(self);
        }
        Head::Other
    }
}

/// Lower-case type synonyms resolved to the server's canonical names.
fn normalize_type(t: &str) -> &str {
    match t {
        "integer" | "int4" => "int",
        "int1" => "tinyint",
        "int2" => "smallint",
        "int3" | "middleint" => "mediumint",
        "int8" => "bigint",
        "dec" | "numeric" | "fixed" => "decimal",
        "real" | "float8" => "double",
        "float4" => "float",
        "character" => "char",
        other => other,
    }
}

/// Reads a statement. Statements that do not change table definitions come back as
/// [`Ddl::Other`] without being read further.
pub fn parse(sql: &str) -> Result<Ddl, DdlError> {
    let toks = tokenize(sql)?;
    let mut p = P { toks, i: 0 };
    let ddl = p.statement()?;
    if !matches!(ddl, Ddl::Other | Ddl::Temporary) && !p.at_end() {
        return p.err(format!("unexpected {} after the statement", p.describe()));
    }
    Ok(ddl)
}

/// Reads one column definition given as a name and the rest (`int(10) unsigned`, as
/// `information_schema.COLUMNS.COLUMN_TYPE` has it).
pub fn parse_column(name: &str, definition: &str) -> Result<ColumnDef, DdlError> {
    let mut p = P {
        toks: tokenize(definition)?,
        i: 0,
    };
    let c = p.column_def(name.to_string())?;
    if !p.at_end() {
        return p.err(format!("unexpected {} after the column type", p.describe()));
    }
    Ok(c)
}

/// The table of a `CREATE ... INDEX ... ON t` or `DROP INDEX ... ON t` statement (which
/// [`parse`] reads as [`Ddl::Other`]: indexes change no column), for filters.
pub fn index_table(sql: &str) -> Option<TableRef> {
    let toks = tokenize(sql).ok()?;
    let mut p = P { toks, i: 0 };
    if p.eat_kw("CREATE") {
        p.eat_kws(&["OR", "REPLACE"]);
        for kw in ["UNIQUE", "FULLTEXT", "SPATIAL", "ONLINE", "OFFLINE"] {
            p.eat_kw(kw);
        }
    } else if !p.eat_kw("DROP") {
        return None;
    }
    if !p.eat_kw("INDEX") {
        return None;
    }
    // The first ON after the index name; anything before it is a name or IF [NOT] EXISTS.
    while !p.at_end() {
        if p.eat_kw("ON") {
            return p.table_ref().ok();
        }
        p.i += 1;
    }
    None
}

/// What a statement is about, read from its first words; works on statements [`parse`]
/// rejects, so an error can name the table.
pub fn head(sql: &str) -> Head {
    match tokenize(sql) {
        Ok(toks) => P { toks, i: 0 }.head(),
        Err(_) => Head::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(d: &Ddl) -> &[ColumnDef] {
        match d {
            Ddl::CreateTable {
                body: CreateBody::Columns { columns, .. },
                ..
            } => columns,
            other => panic!("not a create with columns: {other:?}"),
        }
    }

    #[test]
    fn index_statements_name_their_table() {
        let t = |db: Option<&str>, name: &str| TableRef {
            db: db.map(str::to_string),
            name: name.into(),
        };
        assert_eq!(
            index_table("CREATE UNIQUE INDEX IF NOT EXISTS `on` ON d.t (a)"),
            Some(t(Some("d"), "t"))
        );
        assert_eq!(
            index_table("drop index i on `t` algorithm=inplace"),
            Some(t(None, "t"))
        );
        assert_eq!(index_table("CREATE TABLE t (a INT)"), None);
        assert_eq!(index_table("DROP INDEX i"), None);
    }

    #[test]
    fn create_table_as_the_server_writes_it() {
        let d = parse(
            "CREATE TABLE `sbtest1` (\n  `id` int(10) unsigned NOT NULL AUTO_INCREMENT,\n  \
             `k` int(11) NOT NULL DEFAULT 0,\n  `c` char(120) CHARACTER SET latin1 COLLATE \
             latin1_bin NOT NULL DEFAULT '',\n  `pad` varchar(60) DEFAULT 'x,)y' COMMENT \
             'a ''q''',\n  `key` enum('a','b,c') DEFAULT NULL,\n  PRIMARY KEY USING BTREE (`id`),\n  \
             KEY `k_1` (`k`)\n) ENGINE=InnoDB AUTO_INCREMENT=5 DEFAULT CHARSET=utf8mb4 \
             COLLATE=utf8mb4_general_ci /*!50100 PARTITION BY HASH (id) PARTITIONS 2 */",
        )
        .unwrap();
        let c = cols(&d);
        assert_eq!(c.len(), 5);
        assert_eq!(c[0].name, "id");
        assert!(c[0].unsigned && c[0].nullable == Some(false));
        assert_eq!(c[1].args, ["11"]);
        assert_eq!(c[2].charset.as_deref(), Some("latin1"));
        assert_eq!(c[2].collation.as_deref(), Some("latin1_bin"));
        assert_eq!(c[3].data_type, "varchar");
        assert_eq!(c[4].name, "key");
        assert_eq!(c[4].args, ["a", "b,c"]);
        let Ddl::CreateTable {
            body:
                CreateBody::Columns {
                    primary_key,
                    charset,
                    ..
                },
            ..
        } = &d
        else {
            unreachable!()
        };
        assert_eq!(primary_key.as_deref(), Some(&["id".to_string()][..]));
        assert_eq!(charset.charset.as_deref(), Some("utf8mb4"));
    }

    #[test]
    fn inline_and_constraint_keys() {
        let d = parse("create table t (a int key, b int)").unwrap();
        assert!(
            matches!(&d, Ddl::CreateTable { body: CreateBody::Columns { primary_key: Some(k), .. }, .. } if k == &["a"])
        );
        let d = parse("create table d.t (a int, b int, constraint pk primary key (b, a))").unwrap();
        assert!(
            matches!(&d, Ddl::CreateTable { table, body: CreateBody::Columns { primary_key: Some(k), .. }, .. } if k == &["b", "a"] && table.db.as_deref() == Some("d"))
        );
        let d = parse("CREATE TABLE t2 LIKE t1").unwrap();
        assert!(matches!(
            d,
            Ddl::CreateTable {
                body: CreateBody::Like(_),
                ..
            }
        ));
        let d = parse("CREATE TABLE IF NOT EXISTS t2 (LIKE d.t1)").unwrap();
        assert!(matches!(
            d,
            Ddl::CreateTable {
                if_not_exists: true,
                body: CreateBody::Like(TableRef { db: Some(_), .. }),
                ..
            }
        ));
    }

    #[test]
    fn types_and_synonyms() {
        let d = parse(
            "CREATE TABLE t (a DOUBLE PRECISION, b NATIONAL VARCHAR(5), c BOOL, d SERIAL, \
             e INTEGER UNSIGNED ZEROFILL, f LONG VARBINARY, g decimal(10,2), h bit, \
             i datetime(6) ON UPDATE current_timestamp(6) DEFAULT current_timestamp(6), \
             j varchar(3) binary, k int generated always as (a+1) virtual invisible)",
        )
        .unwrap();
        let c = cols(&d);
        let types: Vec<&str> = c.iter().map(|c| c.data_type.as_str()).collect();
        assert_eq!(
            types,
            [
                "double",
                "varchar",
                "tinyint",
                "bigint",
                "int",
                "mediumblob",
                "decimal",
                "bit",
                "datetime",
                "varchar",
                "int"
            ]
        );
        assert!(c[3].unsigned && c[4].unsigned && c[9].binary_attr);
        assert_eq!(c[6].args, ["10", "2"]);
        assert_eq!(c[8].args, ["6"]);
    }

    #[test]
    fn system_versioning_adds_columns_unless_explicit() {
        let d = parse("create table t (a int) with system versioning").unwrap();
        assert!(matches!(
            d,
            Ddl::CreateTable {
                body: CreateBody::Columns {
                    system_versioning: true,
                    ..
                },
                ..
            }
        ));
        let d = parse(
            "create table t (a int, s timestamp(6) as row start invisible, e timestamp(6) as \
             row end invisible, period for system_time(s, e)) with system versioning",
        )
        .unwrap();
        assert_eq!(cols(&d).len(), 3);
        assert!(matches!(
            d,
            Ddl::CreateTable {
                body: CreateBody::Columns {
                    system_versioning: false,
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn alter_operations() {
        let d = parse(
            "ALTER ONLINE TABLE t ADD COLUMN IF NOT EXISTS x INT FIRST, DROP COLUMN c, \
             MODIFY k BIGINT UNSIGNED AFTER id, CHANGE COLUMN x y VARCHAR(10) NULL, \
             ADD (p int, q int), ADD INDEX (a), DROP INDEX b, ENGINE=InnoDB, ALGORITHM=INSTANT, \
             ALTER COLUMN a SET DEFAULT 3, RENAME COLUMN a TO b, DROP PRIMARY KEY, \
             ADD CONSTRAINT PRIMARY KEY (a, b), RENAME TO d.t2, CONVERT TO CHARACTER SET latin1, \
             DEFAULT CHARSET = utf8mb4, LOCK=NONE, FORCE",
        )
        .unwrap();
        let Ddl::AlterTable { table, ops } = d else {
            panic!()
        };
        assert_eq!(table.name, "t");
        assert_eq!(ops.len(), 12, "{ops:#?}");
        assert!(
            matches!(&ops[0], AlterOp::AddColumn { place: Placement::First, if_not_exists: true, def } if def.name == "x")
        );
        assert!(matches!(&ops[1], AlterOp::DropColumn { name, .. } if name == "c"));
        assert!(
            matches!(&ops[2], AlterOp::ChangeColumn { old, place: Placement::After(a), def, .. } if old == "k" && a == "id" && def.unsigned)
        );
        assert!(
            matches!(&ops[3], AlterOp::ChangeColumn { old, def, .. } if old == "x" && def.name == "y")
        );
        assert!(matches!(&ops[5], AlterOp::AddColumn { def, .. } if def.name == "q"));
        assert!(matches!(&ops[6], AlterOp::RenameColumn { old, new } if old == "a" && new == "b"));
        assert_eq!(ops[7], AlterOp::DropPrimaryKey);
        assert_eq!(ops[8], AlterOp::AddPrimaryKey(vec!["a".into(), "b".into()]));
        assert!(matches!(&ops[9], AlterOp::RenameTable(t) if t.db.as_deref() == Some("d")));
        assert!(
            matches!(&ops[10], AlterOp::ConvertCharset(c) if c.charset.as_deref() == Some("latin1"))
        );
        assert!(matches!(&ops[11], AlterOp::DefaultCharset(_)));
    }

    #[test]
    fn alter_with_partitioning_and_quoted_column_named_like_a_keyword() {
        let d =
            parse("alter table t add `key` int, drop `index` partition by hash(a) partitions 3")
                .unwrap();
        let Ddl::AlterTable { ops, .. } = d else {
            panic!()
        };
        assert_eq!(ops.len(), 2);
        assert!(matches!(&ops[1], AlterOp::DropColumn { name, .. } if name == "index"));
    }

    #[test]
    fn other_statements() {
        for sql in [
            "DROP TABLE IF EXISTS `a`,`b`.`c` /* generated by server */",
            "RENAME TABLE a TO b, c.d TO e.f",
            "TRUNCATE TABLE t",
            "truncate t",
            "CREATE DATABASE IF NOT EXISTS d CHARACTER SET utf8mb4",
            "DROP SCHEMA d",
        ] {
            let d = parse(sql).unwrap();
            assert!(!matches!(d, Ddl::Other | Ddl::Temporary), "{sql}: {d:?}");
        }
        for sql in [
            "BEGIN",
            "INSERT INTO t VALUES (1)",
            "CREATE INDEX i ON t (a)",
            "CREATE VIEW v AS SELECT 1",
            "GRANT ALL ON *.* TO x",
            "CREATE USER 'a'@'%'",
            "DROP VIEW v",
        ] {
            assert_eq!(parse(sql).unwrap(), Ddl::Other, "{sql}");
        }
        assert_eq!(
            parse("DROP TEMPORARY TABLE IF EXISTS t").unwrap(),
            Ddl::Temporary
        );
        assert_eq!(
            parse("CREATE TEMPORARY TABLE t (a int)").unwrap(),
            Ddl::Temporary
        );
    }

    #[test]
    fn errors_name_the_problem_and_head_still_finds_the_table() {
        let e = parse("ALTER TABLE d.t FROBNICATE x").unwrap_err();
        assert!(e.reason.contains("FROBNICATE"), "{e}");
        assert_eq!(
            head("ALTER TABLE d.t FROBNICATE x"),
            Head::Table(TableRef {
                db: Some("d".into()),
                name: "t".into()
            })
        );
        assert!(parse("CREATE TABLE t SELECT 1").is_err());
        assert!(parse("CREATE TABLE t (a int) SELECT 1 AS b").is_err());
        assert!(parse("CREATE TABLE t (a int").is_err());
        assert!(parse("CREATE TABLE t (a 'x')").is_err());
    }

    #[test]
    fn comments_and_executable_comments() {
        let d = parse(
            "/* leading */ CREATE TABLE t ( -- line\n a int, # hash\n b int /*!80000 \
             INVISIBLE */) /*M!100301 COMMENT 'x' */",
        )
        .unwrap();
        assert_eq!(cols(&d).len(), 2);
    }

    /// Statement text comes from the binlog: no input may panic or loop. Mutates real DDL
    /// (cut, duplicate and splice pieces) with a fixed-seed generator.
    #[test]
    fn mangled_statements_never_panic() {
        let seeds = [
            "CREATE TABLE `t` (`id` int(10) unsigned NOT NULL, `c` enum('a','b') DEFAULT 'a', PRIMARY KEY (`id`)) ENGINE=InnoDB /*!50100 PARTITION BY HASH (id) */",
            "ALTER TABLE d.t ADD COLUMN IF NOT EXISTS (x INT, y VARCHAR(3) BINARY), CHANGE a b INT AFTER c, DROP PRIMARY KEY, RENAME TO e.u",
            "RENAME TABLE a TO b, c.d TO e.f",
            "CREATE OR REPLACE TABLE t (a DOUBLE PRECISION, b LONG VARBINARY, \"q\" NATIONAL CHAR(3), -- c\n d SERIAL)",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n.max(1) as u64) as usize
        };
        for round in 0..20_000 {
            let base = seeds[round % seeds.len()].as_bytes();
            let mut b = base.to_vec();
            for _ in 0..1 + next(4) {
                let i = next(b.len() + 1);
                let j = (i + next(12)).min(b.len());
                match next(3) {
                    0 => {
                        b.drain(i..j);
                    }
                    1 => {
                        let piece: Vec<u8> = b[i..j].to_vec();
                        let k = next(b.len() + 1);
                        b.splice(k..k, piece);
                    }
                    _ => {
                        let c = b"()`'\",;/*!-#\\\xff"[next(12)];
                        b.insert(i.min(b.len()), c);
                    }
                }
            }
            let sql = String::from_utf8_lossy(&b);
            let _ = parse(&sql);
            let _ = head(&sql);
        }
    }
}
