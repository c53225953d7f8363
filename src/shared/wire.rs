//! Little binary-encoding helpers shared by the on-disk formats (WAL records, block files) and
//! remote write's protobuf: LEB128 varints, fixed-width little-endian numbers, and a reader
//! that fails with [`Truncated`] instead of panicking on short or hostile input.

/// The input ended (or a length pointed) past its end, or a varint ran too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated;

impl std::fmt::Display for Truncated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("truncated or malformed encoding")
    }
}

pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Bytes [`put_varint`] writes for `value`.
pub fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Signed values close to zero in few bytes (protobuf's sint64).
pub fn put_zigzag(out: &mut Vec<u8>, value: i64) {
    put_varint(out, ((value << 1) ^ (value >> 63)) as u64);
}

pub fn put_i64(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub fn put_f64(out: &mut Vec<u8>, value: f64) {
    out.extend_from_slice(&value.to_bits().to_le_bytes());
}

/// A length-prefixed byte string.
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Reads what the `put_*` functions wrote, front to back.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        if n > self.rest.len() {
            return Err(Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub fn varint(&mut self) -> Result<u64, Truncated> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.take(1)?.first().ok_or(Truncated)?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(Truncated)
    }

    /// A varint that must fit `usize` and be at most `limit` (a count or a length read from
    /// input must never size an allocation beyond what the input could hold).
    pub fn count(&mut self, limit: usize) -> Result<usize, Truncated> {
        let n = usize::try_from(self.varint()?).map_err(|_| Truncated)?;
        if n > limit {
            return Err(Truncated);
        }
        Ok(n)
    }

    pub fn zigzag(&mut self) -> Result<i64, Truncated> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    pub fn u32(&mut self) -> Result<u32, Truncated> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes(bytes.try_into().map_err(|_| Truncated)?))
    }

    pub fn i64(&mut self) -> Result<i64, Truncated> {
        let bytes = self.take(8)?;
        Ok(i64::from_le_bytes(bytes.try_into().map_err(|_| Truncated)?))
    }

    pub fn f64(&mut self) -> Result<f64, Truncated> {
        let bytes = self.take(8)?;
        Ok(f64::from_bits(u64::from_le_bytes(
            bytes.try_into().map_err(|_| Truncated)?,
        )))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], Truncated> {
        let n = self.count(self.rest.len())?;
        self.take(n)
    }

    pub fn str(&mut self) -> Result<&'a str, Truncated> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_len_is_what_put_varint_writes() {
        for value in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(varint_len(value), out.len(), "{value}");
        }
    }

    #[test]
    fn everything_round_trips_and_short_input_fails_cleanly() {
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        put_varint(&mut out, u64::MAX);
        put_zigzag(&mut out, -5);
        put_zigzag(&mut out, i64::MIN);
        put_i64(&mut out, -1);
        put_f64(&mut out, f64::NAN);
        put_bytes(&mut out, "sw-1".as_bytes());
        let mut r = Reader::new(&out);
        assert_eq!(r.varint(), Ok(300));
        assert_eq!(r.varint(), Ok(u64::MAX));
        assert_eq!(r.zigzag(), Ok(-5));
        assert_eq!(r.zigzag(), Ok(i64::MIN));
        assert_eq!(r.i64(), Ok(-1));
        assert!(r.f64().is_ok_and(f64::is_nan));
        assert_eq!(r.str(), Ok("sw-1"));
        assert!(r.is_empty());
        for cut in 0..out.len() {
            let mut r = Reader::new(&out[..cut]);
            let all = (|| -> Result<(), Truncated> {
                r.varint()?;
                r.varint()?;
                r.zigzag()?;
                r.zigzag()?;
                r.i64()?;
                r.f64()?;
                r.str()?;
                Ok(())
            })();
            assert_eq!(all, Err(Truncated), "cut at {cut}");
        }
        assert_eq!(Reader::new(&[0xff; 11]).varint(), Err(Truncated));
    }
}
