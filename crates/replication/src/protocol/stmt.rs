//! Prepared statements (binary protocol): `COM_STMT_PREPARE`, `COM_STMT_EXECUTE` with
//! parameters borrowed from the caller, `COM_STMT_CLOSE`, and the OK packet that ends an
//! execute without rows.
//!
//! Written here rather than taken from mysql_async because the driver cannot do what the
//! measurement asked for (`cargo bench --bench statements`): it binds each text parameter
//! as an owned `Vec` (an allocation per value) and runs one execute per round trip. These
//! functions write an execute straight into a reused buffer from borrowed values, and the
//! connection ([`crate::Connection::queue_execute`]) sends several before reading replies.

use outflow_binlog::bytes::Reader;

use super::response::{parse_err, ServerError};
use super::ProtocolError;

/// `COM_STMT_PREPARE`.
pub const COM_STMT_PREPARE: u8 = 0x16;
/// `COM_STMT_EXECUTE`.
pub const COM_STMT_EXECUTE: u8 = 0x17;
/// `COM_STMT_CLOSE` (no reply).
pub const COM_STMT_CLOSE: u8 = 0x19;

/// Column type codes used for parameters.
mod types {
    pub const LONGLONG: u8 = 0x08;
    pub const NULL: u8 = 0x06;
    pub const DOUBLE: u8 = 0x05;
    pub const VAR_STRING: u8 = 0xFD;
    pub const NEWDECIMAL: u8 = 0xF6;
    /// Second type byte: the integer is unsigned.
    pub const UNSIGNED: u8 = 0x80;
}

/// The most parameters one statement can have (the count is a `u16`).
pub const MAX_PARAMS: usize = u16::MAX as usize;

/// One parameter of an execute, borrowed from the caller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param<'a> {
    /// SQL NULL.
    Null,
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A double.
    Double(f64),
    /// Bytes, sent as a string; the server converts them to the column's type.
    Bytes(&'a [u8]),
    /// A DECIMAL's text (`-?digits[.digits]`), sent as an exact decimal value: a string
    /// compared with a DECIMAL column would be compared as a double.
    Decimal(&'a [u8]),
}

/// Tags of [`push_tagged`]'s form.
const TAG_NULL: u8 = 0;
const TAG_INT: u8 = 1;
const TAG_UINT: u8 = 2;
const TAG_DOUBLE: u8 = 3;
const TAG_BYTES: u8 = 4;
const TAG_DECIMAL: u8 = 5;

/// Appends `p` in a compact self-delimiting form (a tag byte, then the value as an execute
/// carries it), for callers that collect rows of parameters before they know which
/// statement will take them; read back with [`read_tagged`].
pub fn push_tagged(out: &mut Vec<u8>, p: Param<'_>) {
    match p {
        Param::Null => out.push(TAG_NULL),
        Param::Int(v) => {
            out.push(TAG_INT);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Param::UInt(v) => {
            out.push(TAG_UINT);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Param::Double(v) => {
            out.push(TAG_DOUBLE);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Param::Bytes(b) | Param::Decimal(b) => {
            out.push(if matches!(p, Param::Bytes(_)) {
                TAG_BYTES
            } else {
                TAG_DECIMAL
            });
            super::put_lenenc(out, b.len() as u64);
            out.extend_from_slice(b);
        }
    }
}

/// Appends a byte-string parameter of `len` bytes in [`push_tagged`]'s form, its content
/// written by `write` (which must write exactly `len` bytes): for values that are
/// formatted or padded on the way in.
pub fn push_tagged_bytes_with(out: &mut Vec<u8>, len: usize, write: impl FnOnce(&mut Vec<u8>)) {
    out.push(TAG_BYTES);
    super::put_lenenc(out, len as u64);
    let start = out.len();
    write(out);
    debug_assert_eq!(out.len() - start, len);
}

/// The first parameter of `buf` (written by [`push_tagged`]) and the bytes it took;
/// `None` if `buf` does not start with one.
pub fn read_tagged(buf: &[u8]) -> Option<(Param<'_>, usize)> {
    let (&tag, rest) = buf.split_first()?;
    let fixed = |rest: &[u8]| -> Option<[u8; 8]> { rest.get(..8)?.try_into().ok() };
    match tag {
        TAG_NULL => Some((Param::Null, 1)),
        TAG_INT => Some((Param::Int(i64::from_le_bytes(fixed(rest)?)), 9)),
        TAG_UINT => Some((Param::UInt(u64::from_le_bytes(fixed(rest)?)), 9)),
        TAG_DOUBLE => Some((Param::Double(f64::from_le_bytes(fixed(rest)?)), 9)),
        TAG_BYTES | TAG_DECIMAL => {
            let mut r = Reader::new(rest);
            let bytes = r.packed_bytes().ok()?;
            let used = r.position();
            let p = if tag == TAG_BYTES {
                Param::Bytes(bytes)
            } else {
                Param::Decimal(bytes)
            };
            Some((p, 1 + used))
        }
        _ => None,
    }
}

/// `COM_STMT_PREPARE` of `sql`.
pub fn prepare(sql: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(1 + sql.len());
    p.push(COM_STMT_PREPARE);
    p.extend_from_slice(sql);
    p
}

/// `COM_STMT_CLOSE` of statement `id`.
pub fn close(id: u32) -> [u8; 5] {
    let b = id.to_le_bytes();
    [COM_STMT_CLOSE, b[0], b[1], b[2], b[3]]
}

/// Why an execute could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecuteError {
    /// The caller gave another number of parameters than the statement has.
    #[error("statement {id} takes {expected} parameters, {given} given")]
    Count {
        /// Statement id.
        id: u32,
        /// Parameters the statement has.
        expected: usize,
        /// Parameters given.
        given: usize,
    },
}

/// Appends a `COM_STMT_EXECUTE` payload for statement `id`, which has `count` parameters,
/// to `out` (which the caller reuses). One pass over `params`: the null bitmap and the
/// type list sit before the values, so their room is reserved first and filled in as the
/// values are appended. On error `out` is left as it was.
pub fn execute<'a>(
    out: &mut Vec<u8>,
    id: u32,
    count: usize,
    params: impl IntoIterator<Item = Param<'a>>,
) -> Result<(), ExecuteError> {
    let start = out.len();
    out.push(COM_STMT_EXECUTE);
    out.extend_from_slice(&id.to_le_bytes());
    out.push(0); // CURSOR_TYPE_NO_CURSOR
    out.extend_from_slice(&1u32.to_le_bytes()); // iteration count, always 1
    if count == 0 {
        return match params.into_iter().count() {
            0 => Ok(()),
            given => {
                out.truncate(start);
                Err(ExecuteError::Count {
                    id,
                    expected: 0,
                    given,
                })
            }
        };
    }
    let bitmap = out.len();
    let bitmap_len = count.div_ceil(8);
    out.resize(bitmap + bitmap_len, 0);
    out.push(1); // new-params-bound: types follow
    let types = out.len();
    out.resize(types + 2 * count, 0);
    let mut given = 0;
    for p in params {
        if given == count {
            given += 1;
            break;
        }
        let (ty, flags) = match p {
            Param::Null => {
                out[bitmap + given / 8] |= 1 << (given % 8);
                (types::NULL, 0)
            }
            Param::Int(v) => {
                out.extend_from_slice(&v.to_le_bytes());
                (types::LONGLONG, 0)
            }
            Param::UInt(v) => {
                out.extend_from_slice(&v.to_le_bytes());
                (types::LONGLONG, types::UNSIGNED)
            }
            Param::Double(v) => {
                out.extend_from_slice(&v.to_le_bytes());
                (types::DOUBLE, 0)
            }
            Param::Bytes(b) => {
                super::put_lenenc(out, b.len() as u64);
                out.extend_from_slice(b);
                (types::VAR_STRING, 0)
            }
            Param::Decimal(b) => {
                super::put_lenenc(out, b.len() as u64);
                out.extend_from_slice(b);
                (types::NEWDECIMAL, 0)
            }
        };
        out[types + 2 * given] = ty;
        out[types + 2 * given + 1] = flags;
        given += 1;
    }
    if given != count {
        out.truncate(start);
        return Err(ExecuteError::Count {
            id,
            expected: count,
            given,
        });
    }
    Ok(())
}

/// A successful `COM_STMT_PREPARE`: the statement's id and shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    /// The statement id, for executes and close.
    pub id: u32,
    /// Result columns (0 for statements without rows).
    pub columns: u16,
    /// Parameters (`?` placeholders).
    pub params: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrepareStage {
    Start,
    /// In definition group `group` (0: parameters, 1: columns), `left` definitions
    /// before its EOF.
    Definitions {
        group: usize,
        left: u16,
    },
    Done,
}

/// Reads the reply to `COM_STMT_PREPARE` one payload at a time (without
/// `DEPRECATE_EOF`): the OK header, then a definition per parameter and an EOF, then a
/// definition per column and an EOF (a group with no definitions has no EOF either). The
/// definitions are skipped.
#[derive(Debug, Clone)]
pub struct PrepareReader {
    stage: PrepareStage,
    ok: Prepared,
}

impl Default for PrepareReader {
    fn default() -> Self {
        Self::new()
    }
}

/// Progress of a [`PrepareReader`].
#[derive(Debug)]
pub enum PrepareStep {
    /// More payloads needed.
    More,
    /// The statement is prepared.
    Done(Prepared),
    /// The server refused the statement.
    Err(ServerError),
}

impl PrepareReader {
    /// A reader waiting for the first payload of the reply.
    pub fn new() -> Self {
        PrepareReader {
            stage: PrepareStage::Start,
            ok: Prepared {
                id: 0,
                columns: 0,
                params: 0,
            },
        }
    }

    /// Consumes the next payload of the reply.
    pub fn feed(&mut self, payload: &[u8]) -> Result<PrepareStep, ProtocolError> {
        const WHAT: &str = "COM_STMT_PREPARE reply";
        match self.stage {
            PrepareStage::Start => {
                if payload.first() == Some(&0xFF) {
                    self.stage = PrepareStage::Done;
                    return Ok(PrepareStep::Err(parse_err(payload)?));
                }
                let sh = ProtocolError::short(WHAT);
                let mut r = Reader::new(payload);
                if r.u8().map_err(&sh)? != 0x00 {
                    return Err(ProtocolError::new(WHAT, "does not start with 0x00"));
                }
                self.ok.id = r.u32().map_err(&sh)?;
                self.ok.columns = r.u16().map_err(&sh)?;
                self.ok.params = r.u16().map_err(&sh)?;
                // A filler byte and the warning count follow; nothing needs them.
                Ok(self.enter(0))
            }
            PrepareStage::Definitions { group, left } => {
                let eof = super::response::is_eof(payload);
                match (left, eof) {
                    (0, true) => Ok(self.enter(group + 1)),
                    (0, false) => Err(ProtocolError::new(WHAT, "no EOF after the definitions")),
                    (_, true) => Err(ProtocolError::new(WHAT, "EOF before the last definition")),
                    (left, false) => {
                        self.stage = PrepareStage::Definitions {
                            group,
                            left: left - 1,
                        };
                        Ok(PrepareStep::More)
                    }
                }
            }
            PrepareStage::Done => Err(ProtocolError::new(WHAT, "data after the end")),
        }
    }

    /// Moves to the first non-empty definition group from `group` on, or finishes.
    fn enter(&mut self, group: usize) -> PrepareStep {
        let counts = [self.ok.params, self.ok.columns];
        match (group..2).find(|&g| counts[g] > 0) {
            Some(g) => {
                self.stage = PrepareStage::Definitions {
                    group: g,
                    left: counts[g],
                };
                PrepareStep::More
            }
            None => {
                self.stage = PrepareStage::Done;
                PrepareStep::Done(self.ok)
            }
        }
    }
}

/// An OK packet's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OkPacket {
    /// Rows the statement affected (found, with `CLIENT_FOUND_ROWS`).
    pub affected_rows: u64,
    /// The last AUTO_INCREMENT value generated.
    pub last_insert_id: u64,
    /// Server status flags.
    pub status: u16,
    /// Warnings.
    pub warnings: u16,
    /// The human-readable info, e.g. `Records: 3  Duplicates: 1  Warnings: 0` after a
    /// multi-row INSERT (empty, and not allocated, for most statements).
    pub info: String,
}

/// `SERVER_MORE_RESULTS_EXISTS`: another result of the same query follows.
pub const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;

impl OkPacket {
    /// Whether another result of the same multi-statement query follows.
    pub fn more_results(&self) -> bool {
        self.status & SERVER_MORE_RESULTS_EXISTS != 0
    }
}

/// The reply to a command that returns no rows: OK, or the server's error.
pub fn parse_ok_or_err(payload: &[u8]) -> Result<Result<OkPacket, ServerError>, ProtocolError> {
    const WHAT: &str = "OK packet";
    match payload.first() {
        Some(0xFF) => return parse_err(payload).map(Err),
        Some(0x00) => {}
        Some(b) => {
            return Err(ProtocolError::new(
                WHAT,
                format!(
                    "reply starts with {b:#04x}, not OK or ERR (did the statement return rows?)"
                ),
            ))
        }
        None => return Err(ProtocolError::new(WHAT, "empty payload")),
    }
    let mut r = Reader::new(&payload[1..]);
    let affected_rows = r.packed().map_err(ProtocolError::packed(WHAT))?;
    let last_insert_id = r.packed().map_err(ProtocolError::packed(WHAT))?;
    let sh = ProtocolError::short(WHAT);
    let status = r.u16().map_err(&sh)?;
    let warnings = r.u16().map_err(&sh)?;
    // MariaDB length-prefixes the info; MySQL (without CLIENT_SESSION_TRACK) sends it to
    // the end of the packet. A prefix that spans exactly the rest is taken as one (a MySQL
    // info would have to start with a byte equal to its remaining length).
    let rest = r.take_rest();
    let mut inner = Reader::new(rest);
    let info = match inner.packed_bytes() {
        Ok(v) if inner.remaining() == 0 => v,
        _ => rest,
    };
    let info = String::from_utf8_lossy(info).into_owned();
    Ok(Ok(OkPacket {
        affected_rows,
        last_insert_id,
        status,
        warnings,
        info,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::response::tests::column;
    use mysql_common::packets::ComStmtExecuteRequestBuilder;
    use mysql_common::proto::MySerialize;
    use mysql_common::value::Value;

    #[test]
    fn tagged_parameters_read_back_as_written() {
        let big = vec![7u8; 70_000];
        let params = [
            Param::Null,
            Param::Int(i64::MIN),
            Param::UInt(u64::MAX),
            Param::Double(-0.0),
            Param::Bytes(b""),
            Param::Bytes(&big),
            Param::Decimal(b"-12345678901234567890.5"),
        ];
        let mut buf = Vec::new();
        for p in params {
            push_tagged(&mut buf, p);
        }
        push_tagged_bytes_with(&mut buf, 3, |out| out.extend_from_slice(b"abc"));
        let mut at = 0;
        let mut back = Vec::new();
        while at < buf.len() {
            let (p, n) = read_tagged(&buf[at..]).expect("a parameter");
            back.push(p);
            at += n;
        }
        assert_eq!(&back[..7], &params[..]);
        assert_eq!(back[7], Param::Bytes(b"abc"));
        // Anything cut short, or an unknown tag, is refused rather than misread.
        assert_eq!(read_tagged(&[TAG_INT, 1, 2]), None);
        assert_eq!(read_tagged(&[TAG_BYTES, 5, b'a']), None);
        assert_eq!(read_tagged(&[9]), None);
        assert_eq!(read_tagged(&[]), None);
    }

    #[test]
    fn a_decimal_parameter_is_typed_newdecimal() {
        let mut out = Vec::new();
        execute(&mut out, 1, 1, [Param::Decimal(b"1.5")]).unwrap();
        // header (10), bitmap (1), bound flag (1), then the type.
        assert_eq!(&out[12..14], &[types::NEWDECIMAL, 0]);
        assert_eq!(&out[14..], b"\x031.5");
    }

    /// The independent encoder's bytes for the same parameters.
    fn oracle(id: u32, values: &[Value]) -> Vec<u8> {
        let (req, long) = ComStmtExecuteRequestBuilder::new(id).build(values);
        assert!(!long);
        let mut out = Vec::new();
        req.serialize(&mut out);
        out
    }

    #[test]
    fn execute_matches_mysql_common() {
        let text = vec![b'x'; 300];
        let cases: Vec<(Vec<Param>, Vec<Value>)> = vec![
            (vec![], vec![]),
            (vec![Param::Int(-5)], vec![Value::Int(-5)]),
            (
                vec![
                    Param::Int(i64::MIN),
                    Param::Null,
                    Param::Bytes(b"abc"),
                    Param::UInt(u64::MAX),
                    Param::Double(1.5),
                    Param::Bytes(&text),
                    Param::Null,
                    Param::Null,
                    Param::Null,
                    Param::Bytes(b""),
                ],
                vec![
                    Value::Int(i64::MIN),
                    Value::NULL,
                    Value::Bytes(b"abc".to_vec()),
                    Value::UInt(u64::MAX),
                    Value::Double(1.5),
                    Value::Bytes(text.clone()),
                    Value::NULL,
                    Value::NULL,
                    Value::NULL,
                    Value::Bytes(vec![]),
                ],
            ),
        ];
        for (params, values) in cases {
            let mut out = vec![0xAA]; // appends after what is there
            execute(&mut out, 77, params.len(), params.iter().copied()).unwrap();
            assert_eq!(out[0], 0xAA);
            assert_eq!(&out[1..], &oracle(77, &values)[..], "{params:?}");
        }
    }

    #[test]
    fn execute_refuses_a_wrong_count_and_leaves_the_buffer() {
        let mut out = b"kept".to_vec();
        let e = execute(&mut out, 3, 2, [Param::Int(1)]).unwrap_err();
        assert_eq!(
            e,
            ExecuteError::Count {
                id: 3,
                expected: 2,
                given: 1
            }
        );
        assert_eq!(out, b"kept");
        let e = execute(&mut out, 3, 1, [Param::Int(1), Param::Int(2)]).unwrap_err();
        assert!(matches!(e, ExecuteError::Count { given: 2, .. }));
        assert!(execute(&mut out, 3, 0, [Param::Null]).is_err());
        assert_eq!(out, b"kept");
    }

    fn header(id: u32, columns: u16, params: u16) -> Vec<u8> {
        let mut p = vec![0];
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&columns.to_le_bytes());
        p.extend_from_slice(&params.to_le_bytes());
        p.extend_from_slice(&[0, 0, 0]);
        p
    }

    const EOF: &[u8] = &[0xFE, 0, 0, 2, 0];

    fn feed_all(payloads: &[Vec<u8>]) -> Result<Prepared, String> {
        let mut r = PrepareReader::new();
        for (i, p) in payloads.iter().enumerate() {
            match r.feed(p).map_err(|e| e.to_string())? {
                PrepareStep::More => {}
                PrepareStep::Done(ok) if i + 1 == payloads.len() => return Ok(ok),
                PrepareStep::Done(_) => return Err(format!("done early, at {i}")),
                PrepareStep::Err(e) => return Err(e.to_string()),
            }
        }
        Err("needs more".into())
    }

    #[test]
    fn prepare_replies() {
        let ok = |id, c, p| Prepared {
            id,
            columns: c,
            params: p,
        };
        assert_eq!(feed_all(&[header(1, 0, 0)]), Ok(ok(1, 0, 0)));
        let two_params = vec![header(2, 0, 2), column("?"), column("?"), EOF.to_vec()];
        assert_eq!(feed_all(&two_params), Ok(ok(2, 0, 2)));
        let both = vec![
            header(3, 1, 1),
            column("?"),
            EOF.to_vec(),
            column("a"),
            EOF.to_vec(),
        ];
        assert_eq!(feed_all(&both), Ok(ok(3, 1, 1)));
        let cols = vec![header(4, 2, 0), column("a"), column("b"), EOF.to_vec()];
        assert_eq!(feed_all(&cols), Ok(ok(4, 2, 0)));
        // Missing or early EOFs are named.
        let e = feed_all(&[header(5, 0, 1), column("?"), column("?")]).unwrap_err();
        assert!(e.contains("no EOF"), "{e}");
        let e = feed_all(&[header(5, 0, 2), column("?"), EOF.to_vec()]).unwrap_err();
        assert!(e.contains("EOF before"), "{e}");
        let e = feed_all(&[header(6, 0, 0)[..5].to_vec()]).unwrap_err();
        assert!(e.contains("needed"), "{e}");
        let mut err = vec![0xFF, 0x28, 0x04, b'#'];
        err.extend_from_slice(b"42000syntax");
        assert_eq!(feed_all(&[err]), Err("ERROR 1064 (42000): syntax".into()));
    }

    #[test]
    fn ok_packets() {
        let ok = parse_ok_or_err(&[0, 0xFC, 0x10, 0x27, 5, 2, 0, 1, 0])
            .unwrap()
            .unwrap();
        assert_eq!(
            ok,
            OkPacket {
                affected_rows: 10_000,
                last_insert_id: 5,
                status: 2,
                warnings: 1,
                info: String::new(),
            }
        );
        assert!(!ok.more_results());
        // MySQL's info runs to the end; MariaDB's is length-prefixed.
        let info = b"Records: 3  Duplicates: 1  Warnings: 0";
        let mut mysql = vec![0, 3, 0, 0x08, 0, 0, 0];
        mysql.extend_from_slice(info);
        let mut mariadb = vec![0, 3, 0, 0x08, 0, 0, 0, info.len() as u8];
        mariadb.extend_from_slice(info);
        for p in [mysql, mariadb] {
            let ok = parse_ok_or_err(&p).unwrap().unwrap();
            assert_eq!(ok.info.as_bytes(), info);
            assert!(ok.more_results());
        }
        let e = parse_ok_or_err(&[0xFF, 0x26, 0x04, b'#', b'2', b'3', b'0', b'0', b'0', b'd'])
            .unwrap()
            .unwrap_err();
        assert_eq!(e.code, 1062);
        assert!(parse_ok_or_err(&[1, 2]).is_err());
        assert!(parse_ok_or_err(&[0, 1]).is_err());
        assert!(parse_ok_or_err(&[]).is_err());
    }

    #[test]
    fn close_layout() {
        assert_eq!(close(0x0102_0304), [0x19, 4, 3, 2, 1]);
    }
}
