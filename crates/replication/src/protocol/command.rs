//! Command payloads a replica sends.

/// `COM_QUIT`.
pub const COM_QUIT: u8 = 0x01;
/// `COM_QUERY`.
pub const COM_QUERY: u8 = 0x03;
/// `COM_BINLOG_DUMP`.
pub const COM_BINLOG_DUMP: u8 = 0x12;
/// `COM_REGISTER_SLAVE`.
pub const COM_REGISTER_SLAVE: u8 = 0x15;
/// `COM_BINLOG_DUMP_GTID` (MySQL).
pub const COM_BINLOG_DUMP_GTID: u8 = 0x1e;

/// Dump flag: end the dump with EOF at the end of the binlog instead of waiting for more.
pub const BINLOG_DUMP_NON_BLOCK: u16 = 1;
/// MariaDB dump flag: send ANNOTATE_ROWS events (the statement text before row events);
/// without it the server leaves them out.
pub const BINLOG_SEND_ANNOTATE_ROWS_EVENT: u16 = 2;
/// `COM_BINLOG_DUMP_GTID` flag: the GTID set field is present.
pub const BINLOG_THROUGH_GTID: u16 = 4;

/// `COM_QUERY` with `sql`.
pub fn query(sql: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(1 + sql.len());
    p.push(COM_QUERY);
    p.extend_from_slice(sql.as_bytes());
    p
}

/// `COM_QUIT`.
pub fn quit() -> Vec<u8> {
    vec![COM_QUIT]
}

/// Strings in `COM_REGISTER_SLAVE` carry a one-byte length; longer ones are cut.
fn put_short_str(p: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(255)];
    p.push(b.len() as u8);
    p.extend_from_slice(b);
}

/// `COM_REGISTER_SLAVE`: announces this replica (shown by `SHOW SLAVE HOSTS`).
pub fn register_slave(server_id: u32, report_host: &str, report_port: u16) -> Vec<u8> {
    let mut p = vec![COM_REGISTER_SLAVE];
    p.extend_from_slice(&server_id.to_le_bytes());
    put_short_str(&mut p, report_host);
    put_short_str(&mut p, ""); // user
    put_short_str(&mut p, ""); // password: never reported
    p.extend_from_slice(&report_port.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes()); // replication rank, unused
    p.extend_from_slice(&0u32.to_le_bytes()); // master id, filled in by the server
    p
}

/// `COM_BINLOG_DUMP` from `file` at `position`. MariaDB ignores file and position when
/// `@slave_connect_state` is set (GTID dump).
pub fn binlog_dump(server_id: u32, file: &str, position: u32, flags: u16) -> Vec<u8> {
    let mut p = vec![COM_BINLOG_DUMP];
    p.extend_from_slice(&position.to_le_bytes());
    p.extend_from_slice(&flags.to_le_bytes());
    p.extend_from_slice(&server_id.to_le_bytes());
    p.extend_from_slice(file.as_bytes());
    p
}

/// `COM_BINLOG_DUMP_GTID` (MySQL) with an encoded GTID set (see
/// [`super::gtid::encode_gtid_set`]); file and position may be empty and 4.
pub fn binlog_dump_gtid(
    server_id: u32,
    file: &str,
    position: u64,
    flags: u16,
    gtid_set: &[u8],
) -> Vec<u8> {
    let mut p = vec![COM_BINLOG_DUMP_GTID];
    p.extend_from_slice(&(flags | BINLOG_THROUGH_GTID).to_le_bytes());
    p.extend_from_slice(&server_id.to_le_bytes());
    p.extend_from_slice(&(file.len() as u32).to_le_bytes());
    p.extend_from_slice(file.as_bytes());
    p.extend_from_slice(&position.to_le_bytes());
    p.extend_from_slice(&(gtid_set.len() as u32).to_le_bytes());
    p.extend_from_slice(gtid_set);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        let r = register_slave(7, "h", 3306);
        assert_eq!(
            r,
            [0x15, 7, 0, 0, 0, 1, b'h', 0, 0, 0xea, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let d = binlog_dump(7, "binlog.000002", 4, 0);
        assert_eq!(&d[..11], &[0x12, 4, 0, 0, 0, 0, 0, 7, 0, 0, 0]);
        assert_eq!(&d[11..], b"binlog.000002");
        let g = binlog_dump_gtid(7, "", 4, 0, &[1, 2]);
        assert_eq!(
            g,
            [0x1e, 4, 0, 7, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 2]
        );
        assert_eq!(query("SELECT 1"), b"\x03SELECT 1");
    }
}
