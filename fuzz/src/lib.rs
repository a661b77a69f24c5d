//! Helpers shared by the fuzz targets: drain every row of an event and render every value
//! the way a consumer would, so that the decoders behind `Display` and `write_json` run on
//! fuzzed bytes too, not only the slicing done by the row iterator.

use std::fmt::Write as _;

use outflow_binlog::{RowIter, Value};

/// Largest event the targets accept. Real events can reach 1 GiB; the fuzzer must not be
/// able to make the buffer allocate that much, and nothing interesting needs more.
pub const MAX_EVENT: usize = 1 << 20;

/// Bound on decompressed sizes, for the same reason.
pub const MAX_INFLATE: usize = 4 << 20;

/// Iterates every row change and every value of `rows`, rendering each value into `out`.
/// Stops at the first error, as a consumer would; the point is that nothing panics.
pub fn drain_rows(rows: RowIter<'_>, out: &mut String) {
    for change in rows {
        let Ok(change) = change else { return };
        for row in [change.before, change.after].into_iter().flatten() {
            for value in row.values() {
                let Ok((_, value)) = value else { return };
                render_value(&value, out);
            }
        }
    }
}

/// Renders one value with every renderer that applies to it.
pub fn render_value(value: &Value<'_>, out: &mut String) {
    // Errors are expected on forged input; only panics and hangs matter here.
    if let Value::Decimal(d) = value {
        // Display of an invalid decimal prints `NaN`: render it even when validation fails,
        // since a consumer may skip validation.
        out.clear();
        let _ = write!(out, "{d}");
    }
    if let Value::Timestamp(t) = value {
        let _ = write!(out, "{}", t.to_utc_datetime());
    }
    match value.render_text(out) {
        Ok(true) | Err(_) => {}
        Ok(false) => {
            let _ = write!(out, "{value:?}");
        }
    }
}

/// A small deterministic generator (xorshift32), seeded from fuzz input, for choices that
/// should vary with the input without consuming the bytes under test.
pub struct Rng(u32);

impl Rng {
    /// A generator seeded with `seed` (any value; zero is remapped).
    pub fn new(seed: u32) -> Self {
        Rng(seed | 1)
    }

    /// The next pseudo-random number.
    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    /// A piece size: mostly small, sometimes a whole network read, so events get split at
    /// every kind of boundary (inside the header, inside the body, several per piece).
    pub fn piece_len(&mut self) -> usize {
        let r = self.next_u32() as usize;
        let max = match r & 3 {
            0 => 8,
            1 => 64,
            2 => 4096,
            _ => 65536,
        };
        1 + (r >> 2) % max
    }
}
