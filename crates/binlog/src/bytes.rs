//! Bounds-checked little-endian reads over a borrowed slice.
//!
//! Every read from event bytes goes through [`Reader`], so a truncated or forged length can
//! only ever produce [`Short`], never an out-of-bounds panic.

/// A read ran past the end of the bytes available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short {
    /// Bytes the read needed.
    pub needed: usize,
    /// Bytes that were left.
    pub available: usize,
}

/// A forward-only cursor over borrowed bytes.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    #[inline]
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    #[inline]
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The unconsumed bytes, without consuming them.
    #[inline]
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Takes the next `n` bytes.
    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        if n > self.remaining() {
            return Err(Short {
                needed: n,
                available: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Takes everything that is left.
    #[inline]
    pub fn take_rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    /// Skips `n` bytes.
    #[inline]
    pub fn skip(&mut self, n: usize) -> Result<(), Short> {
        self.take(n).map(|_| ())
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// Reads one byte.
    #[inline]
    pub fn u8(&mut self) -> Result<u8, Short> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a little-endian u16.
    #[inline]
    pub fn u16(&mut self) -> Result<u16, Short> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian 3-byte unsigned integer.
    #[inline]
    pub fn u24(&mut self) -> Result<u32, Short> {
        let a = self.array::<3>()?;
        Ok(u32::from_le_bytes([a[0], a[1], a[2], 0]))
    }

    /// Reads a little-endian u32.
    #[inline]
    pub fn u32(&mut self) -> Result<u32, Short> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian 6-byte unsigned integer (table ids).
    #[inline]
    pub fn u48(&mut self) -> Result<u64, Short> {
        let a = self.array::<6>()?;
        Ok(u64::from_le_bytes([
            a[0], a[1], a[2], a[3], a[4], a[5], 0, 0,
        ]))
    }

    /// Reads a little-endian u64.
    #[inline]
    pub fn u64(&mut self) -> Result<u64, Short> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian unsigned integer of `n` (0..=8) bytes.
    #[inline]
    pub fn uint_n(&mut self, n: usize) -> Result<u64, Short> {
        let s = self.take(n.min(8))?;
        Ok(le_uint(s))
    }

    /// Reads a MySQL packed ("length-encoded") integer.
    ///
    /// 0xfb is NULL in result sets but never appears in binlog packed integers, so it is
    /// treated like the single-byte form there would be no way to interpret: an error.
    #[inline]
    pub fn packed(&mut self) -> Result<u64, Packed> {
        let first = self.u8().map_err(Packed::Short)?;
        match first {
            0..=250 => Ok(u64::from(first)),
            252 => self.u16().map(u64::from).map_err(Packed::Short),
            253 => self.u24().map(u64::from).map_err(Packed::Short),
            254 => self.u64().map_err(Packed::Short),
            _ => Err(Packed::Invalid(first)),
        }
    }

    /// Reads a packed length and then that many bytes.
    #[inline]
    pub fn packed_bytes(&mut self) -> Result<&'a [u8], Packed> {
        let n = self.packed()?;
        let n = usize::try_from(n).map_err(|_| Packed::Invalid(0xfe))?;
        self.take(n).map_err(Packed::Short)
    }
}

/// A packed integer that could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packed {
    /// The bytes ran out.
    Short(Short),
    /// The first byte is not a valid packed-integer prefix.
    Invalid(u8),
}

/// Little-endian unsigned integer from up to 8 bytes.
#[inline]
pub fn le_uint(s: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = s.len().min(8);
    a[..n].copy_from_slice(&s[..n]);
    u64::from_le_bytes(a)
}

/// The little-endian length of `width` (1 to 4) bytes at `buf[pos..]`, or `None` if the
/// bytes run out (or the width is out of range). Row images prefix every string with one.
#[inline(always)]
pub fn prefix_at(buf: &[u8], pos: usize, width: usize) -> Option<usize> {
    let b = buf.get(pos..)?;
    Some(match width {
        1 => usize::from(*b.first()?),
        2 => usize::from(u16::from_le_bytes(*b.first_chunk::<2>()?)),
        3 => {
            let &[x, y, z] = b.first_chunk::<3>()?;
            u32::from_le_bytes([x, y, z, 0]) as usize
        }
        4 => u32::from_le_bytes(*b.first_chunk::<4>()?) as usize,
        _ => return None,
    })
}

/// Number of bytes of a bitmap over `bits` bits.
#[inline]
pub fn bitmap_len(bits: usize) -> usize {
    bits.div_ceil(8)
}

/// Whether bit `i` of a least-significant-bit-first bitmap (row events) is set.
/// Out-of-range bits read as unset; callers size bitmaps with [`bitmap_len`].
#[inline]
pub fn bit(bitmap: &[u8], i: usize) -> bool {
    bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// Whether bit `i` of a most-significant-bit-first bitmap (TABLE_MAP optional metadata) is set.
#[inline]
pub fn bit_msb(bitmap: &[u8], i: usize) -> bool {
    bitmap
        .get(i / 8)
        .is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_forms() {
        let mut r = Reader::new(&[
            5, 252, 0x34, 0x12, 253, 1, 2, 3, 254, 1, 0, 0, 0, 0, 0, 0, 0x80,
        ]);
        assert_eq!(r.packed(), Ok(5));
        assert_eq!(r.packed(), Ok(0x1234));
        assert_eq!(r.packed(), Ok(0x030201));
        assert_eq!(r.packed(), Ok(0x8000_0000_0000_0001));
        assert!(matches!(r.packed(), Err(Packed::Short(_))));
        assert_eq!(Reader::new(&[255]).packed(), Err(Packed::Invalid(255)));
    }

    #[test]
    fn short_reads_never_panic() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(
            r.u32(),
            Err(Short {
                needed: 4,
                available: 3
            })
        );
        assert_eq!(r.u16(), Ok(0x0201));
        assert_eq!(
            r.take(2),
            Err(Short {
                needed: 2,
                available: 1
            })
        );
        assert_eq!(r.u8(), Ok(3));
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn bitmaps() {
        assert!(bit(&[0b0000_0100], 2));
        assert!(!bit(&[0b0000_0100], 3));
        assert!(!bit(&[], 3));
        assert!(bit_msb(&[0b0010_0000], 2));
        assert_eq!(bitmap_len(9), 2);
    }
}
