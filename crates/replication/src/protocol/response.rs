//! Generic replies: OK, ERR, EOF, and text result sets.

use std::fmt;

use outflow_binlog::bytes::Reader;

use super::ProtocolError;

/// An ERR packet: the server refused a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// Error number, e.g. 1045 (access denied) or 1236 (binlog read error).
    pub code: u16,
    /// SQLSTATE, e.g. `28000`; empty when the server sent none (before the handshake).
    pub sqlstate: String,
    /// The server's message.
    pub message: String,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sqlstate.is_empty() {
            write!(f, "ERROR {}: {}", self.code, self.message)
        } else {
            write!(
                f,
                "ERROR {} ({}): {}",
                self.code, self.sqlstate, self.message
            )
        }
    }
}

/// Parses an ERR packet (`0xFF` first).
pub fn parse_err(payload: &[u8]) -> Result<ServerError, ProtocolError> {
    const WHAT: &str = "ERR packet";
    let sh = ProtocolError::short(WHAT);
    let mut r = Reader::new(payload);
    if r.u8().map_err(&sh)? != 0xFF {
        return Err(ProtocolError::new(WHAT, "does not start with 0xFF"));
    }
    let code = r.u16().map_err(&sh)?;
    let mut sqlstate = String::new();
    if r.rest().first() == Some(&b'#') && r.remaining() >= 6 {
        let s = r.take(6).map_err(&sh)?;
        sqlstate = String::from_utf8_lossy(&s[1..]).into_owned();
    }
    let message = String::from_utf8_lossy(r.take_rest()).into_owned();
    Ok(ServerError {
        code,
        sqlstate,
        message,
    })
}

/// Whether `payload` is an EOF packet (`0xFE` and shorter than 9 bytes; a longer one
/// starting with `0xFE` is a length-encoded integer or an auth switch).
pub fn is_eof(payload: &[u8]) -> bool {
    payload.first() == Some(&0xFE) && payload.len() < 9
}

/// What a reply to a command was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// OK (`0x00`).
    Ok,
    /// ERR (`0xFF`).
    Err(ServerError),
    /// Anything else: the start of a result set, or command-specific data.
    Other,
}

/// Classifies a reply by its first byte.
pub fn classify(payload: &[u8]) -> Result<Reply, ProtocolError> {
    match payload.first() {
        Some(0x00) => Ok(Reply::Ok),
        Some(0xFF) => parse_err(payload).map(Reply::Err),
        Some(_) => Ok(Reply::Other),
        None => Err(ProtocolError::new("reply", "empty payload")),
    }
}

/// A text result set, fully read: column names and rows of optional strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultSet {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows; `None` is SQL NULL.
    pub rows: Vec<Vec<Option<String>>>,
    /// Server status flags of the closing EOF packet (see
    /// [`crate::protocol::stmt::SERVER_MORE_RESULTS_EXISTS`]).
    pub status: u16,
}

impl ResultSet {
    /// The value in the first row of column `name` (case-insensitive), if any.
    pub fn first(&self, name: &str) -> Option<&str> {
        let i = self
            .columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name))?;
        self.rows.first()?.get(i)?.as_deref()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Start,
    Columns { left: u64 },
    ColumnsEof,
    Rows,
    Done,
}

/// Reads a text-protocol result set one payload at a time (without `DEPRECATE_EOF`).
#[derive(Debug, Clone)]
pub struct ResultSetReader {
    stage: Stage,
    set: ResultSet,
}

impl Default for ResultSetReader {
    fn default() -> Self {
        Self::new()
    }
}

/// Progress of a [`ResultSetReader`].
#[derive(Debug)]
pub enum ReadStep {
    /// More payloads needed.
    More,
    /// The result set is complete (a statement without rows gives an empty one).
    Done(ResultSet),
    /// The server answered with an error.
    Err(ServerError),
}

impl ResultSetReader {
    /// A reader waiting for the first payload of the reply.
    pub fn new() -> Self {
        ResultSetReader {
            stage: Stage::Start,
            set: ResultSet::default(),
        }
    }

    /// Consumes the next payload of the reply.
    pub fn feed(&mut self, payload: &[u8]) -> Result<ReadStep, ProtocolError> {
        const WHAT: &str = "result set";
        if payload.first() == Some(&0xFF) {
            self.stage = Stage::Done;
            return Ok(ReadStep::Err(parse_err(payload)?));
        }
        match self.stage {
            Stage::Start => {
                if payload.first() == Some(&0x00) {
                    self.stage = Stage::Done;
                    return Ok(ReadStep::Done(std::mem::take(&mut self.set)));
                }
                let n = Reader::new(payload)
                    .packed()
                    .map_err(ProtocolError::packed(WHAT))?;
                if n == 0 || n > 4096 {
                    return Err(ProtocolError::new(WHAT, format!("{n} columns")));
                }
                self.stage = Stage::Columns { left: n };
                Ok(ReadStep::More)
            }
            Stage::Columns { left } => {
                self.set.columns.push(column_name(payload)?);
                self.stage = if left > 1 {
                    Stage::Columns { left: left - 1 }
                } else {
                    Stage::ColumnsEof
                };
                Ok(ReadStep::More)
            }
            Stage::ColumnsEof => {
                if !is_eof(payload) {
                    return Err(ProtocolError::new(
                        WHAT,
                        "no EOF after the column definitions",
                    ));
                }
                self.stage = Stage::Rows;
                Ok(ReadStep::More)
            }
            Stage::Rows => {
                if is_eof(payload) {
                    self.stage = Stage::Done;
                    // 0xFE, warnings (2), status (2); a 4.0-style bare 0xFE has none.
                    self.set.status = payload
                        .get(3..5)
                        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
                    return Ok(ReadStep::Done(std::mem::take(&mut self.set)));
                }
                let mut r = Reader::new(payload);
                let mut row = Vec::with_capacity(self.set.columns.len());
                for _ in 0..self.set.columns.len() {
                    if r.rest().first() == Some(&0xFB) {
                        r.skip(1).map_err(ProtocolError::short(WHAT))?;
                        row.push(None);
                    } else {
                        let v = r.packed_bytes().map_err(ProtocolError::packed(WHAT))?;
                        row.push(Some(String::from_utf8_lossy(v).into_owned()));
                    }
                }
                self.set.rows.push(row);
                Ok(ReadStep::More)
            }
            Stage::Done => Err(ProtocolError::new(WHAT, "data after the end")),
        }
    }
}

/// The `name` of a column definition (protocol 4.1).
fn column_name(payload: &[u8]) -> Result<String, ProtocolError> {
    const WHAT: &str = "column definition";
    let mut r = Reader::new(payload);
    // catalog, schema, table, org_table, then name.
    for _ in 0..4 {
        r.packed_bytes().map_err(ProtocolError::packed(WHAT))?;
    }
    let name = r.packed_bytes().map_err(ProtocolError::packed(WHAT))?;
    Ok(String::from_utf8_lossy(name).into_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::put_lenenc;

    pub(crate) fn column(name: &str) -> Vec<u8> {
        let mut p = vec![];
        for s in ["def", "", "", "", name, ""] {
            put_lenenc(&mut p, s.len() as u64);
            p.extend_from_slice(s.as_bytes());
        }
        p.extend_from_slice(&[0x0c, 45, 0, 0, 0, 0, 0, 253, 0, 0, 0, 0, 0]);
        p
    }

    pub(crate) fn row(values: &[Option<&str>]) -> Vec<u8> {
        let mut p = vec![];
        for v in values {
            match v {
                None => p.push(0xFB),
                Some(s) => {
                    put_lenenc(&mut p, s.len() as u64);
                    p.extend_from_slice(s.as_bytes());
                }
            }
        }
        p
    }

    const EOF: &[u8] = &[0xFE, 0, 0, 2, 0];

    #[test]
    fn reads_a_result_set() {
        let mut r = ResultSetReader::new();
        let packets = [
            vec![2],
            column("Log_name"),
            column("File_size"),
            EOF.to_vec(),
            row(&[Some("binlog.000001"), Some("1234")]),
            row(&[Some("binlog.000002"), None]),
        ];
        for p in &packets {
            assert!(matches!(r.feed(p).unwrap(), ReadStep::More));
        }
        let ReadStep::Done(set) = r.feed(EOF).unwrap() else {
            panic!("not done")
        };
        assert_eq!(set.columns, ["Log_name", "File_size"]);
        assert_eq!(set.first("log_name"), Some("binlog.000001"));
        assert_eq!(set.rows[1][1], None);
    }

    #[test]
    fn ok_and_err_replies() {
        assert!(matches!(
            ResultSetReader::new().feed(&[0, 0, 0, 2, 0, 0, 0]).unwrap(),
            ReadStep::Done(s) if s.rows.is_empty()
        ));
        let mut err = vec![0xFF];
        err.extend_from_slice(&1227u16.to_le_bytes());
        err.extend_from_slice(b"#42000Access denied; you need (at least one of) the REPLICATION SLAVE privilege(s) for this operation");
        let ReadStep::Err(e) = ResultSetReader::new().feed(&err).unwrap() else {
            panic!("no error")
        };
        assert_eq!(e.code, 1227);
        assert_eq!(e.sqlstate, "42000");
        assert!(e.message.starts_with("Access denied"));
        assert!(e.to_string().starts_with("ERROR 1227 (42000): Access"));
    }

    #[test]
    fn eof_is_short() {
        assert!(is_eof(EOF));
        assert!(!is_eof(&[0xFE, 1, 2, 3, 4, 5, 6, 7, 8]));
        assert!(!is_eof(&[]));
    }
}
