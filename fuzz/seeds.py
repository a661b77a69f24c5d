#!/usr/bin/env python3
"""Builds seed corpora for the fuzz targets from real binlog files.

The binlogs are third-party test data, so they are read at run time and never committed:

    python3 fuzz/seeds.py [CORPUS_DIR]

CORPUS_DIR defaults to the shared corpus beside the repository (../shared/binlog-corpus).
Writes fuzz/corpus/framing/ (whole files, or their first --max-size bytes, behind the
target's 4 control bytes) and fuzz/corpus/rows/ (each row event with the TABLE_MAP it
refers to, behind the target's 9 control bytes). Both directories are git-ignored.
"""

import argparse
import hashlib
import pathlib
import re
import struct
import zlib

MAGIC = b"\xfebin"
HEADER_LEN = 19
FORMAT_DESCRIPTION = 15
TABLE_MAP = 19
ROWS_TYPES = set(range(20, 26)) | {30, 31, 32, 39} | set(range(166, 172))


def writes_checksum_alg(version: str) -> bool:
    """Mirrors crates/binlog/src/header.rs: MySQL 5.6.1+, MariaDB 5.3+."""
    parts = [int(p) if p else 0 for p in re.split(r"[^0-9]", version)[:3]]
    parts += [0] * (3 - len(parts))
    v = tuple(parts)
    return v >= (5, 3, 0) if "MariaDB" in version else v >= (5, 6, 1)


def events(data: bytes):
    """Yields (type, body, post_header_lens, mariadb) for each event, without checksum."""
    pos = 4
    checksum = False
    header_len = HEADER_LEN
    lens = b""
    mariadb = False
    while pos + HEADER_LEN <= len(data):
        size = struct.unpack_from("<I", data, pos + 9)[0]
        if size < HEADER_LEN or pos + size > len(data):
            return
        ev = data[pos : pos + size]
        pos += size
        t = ev[4]
        if t == FORMAT_DESCRIPTION and len(ev) >= HEADER_LEN + 57:
            body = ev[HEADER_LEN:]
            version = body[2:52].split(b"\0")[0].decode("latin-1")
            header_len = body[56]
            mariadb = "MariaDB" in version
            rest = body[57:]
            if writes_checksum_alg(version) and len(rest) >= 5:
                checksum = rest[-5] == 1
                lens = rest[:-5]
            else:
                checksum = False
                lens = rest
            continue
        if checksum:
            ev = ev[:-4]
        yield t, ev[header_len:], lens, mariadb


def seed_name(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def main() -> None:
    here = pathlib.Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus", nargs="?", default=here.parent.parent / "shared" / "binlog-corpus")
    ap.add_argument("--max-size", type=int, default=64 * 1024)
    ap.add_argument("--rows-per-file", type=int, default=16)
    args = ap.parse_args()

    src = pathlib.Path(args.corpus)
    framing = here / "corpus" / "framing"
    rows = here / "corpus" / "rows"
    framing.mkdir(parents=True, exist_ok=True)
    rows.mkdir(parents=True, exist_ok=True)

    n_framing = n_rows = 0
    for path in sorted(src.iterdir()):
        data = path.read_bytes()
        if not data.startswith(MAGIC):
            continue
        h = zlib.crc32(path.name.encode())
        seed = struct.pack("<I", h)[:3]
        prefix = data[: args.max_size]
        # As a file (magic, checksums not verified), and as a replication stream fed
        # through spare/commit, which has no magic.
        for ctrl, body in ((0x01, prefix), (0x08, prefix[4:])):
            s = bytes([ctrl]) + seed + body
            (framing / seed_name(s)).write_bytes(s)
            n_framing += 1
        # Checksums verified, for the files whose checksums are right.
        if h % 4 == 0:
            s = bytes([0x03]) + seed + prefix
            (framing / seed_name(s)).write_bytes(s)
            n_framing += 1

        tables = {}
        written = 0
        for t, body, lens, mariadb in events(data):
            if written >= args.rows_per_file:
                break
            if t == TABLE_MAP:
                phl = lens[TABLE_MAP - 1] if len(lens) >= TABLE_MAP else 8
                id_len = 4 if phl == 6 else 6
                tables[body[:id_len]] = (body, phl)
            elif t in ROWS_TYPES:
                phl = lens[t - 1] if len(lens) >= t else (10 if t in (30, 31, 32, 39) else 8)
                id_len = 4 if phl == 6 else 6
                tm = tables.get(body[:id_len])
                if tm is None or len(tm[0]) > 0xFFFF:
                    continue
                tm_body, tm_phl = tm
                flags = (0x01 if tm_phl == 6 else 0) | (0x08 if written % 2 else 0)
                flags |= 0x20 if mariadb else 0
                ctrl = bytes([flags, t, phl]) + struct.pack("<H", len(tm_body))
                ctrl += struct.pack("<I", len(body))[:3] + b"\0"
                s = ctrl + tm_body + body
                (rows / seed_name(s)).write_bytes(s)
                n_rows += 1
                written += 1
    print(f"{n_framing} framing seeds in {framing}, {n_rows} rows seeds in {rows}")


if __name__ == "__main__":
    main()
