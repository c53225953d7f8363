//! Series keys of fabric ports. A port is keyed by its node's GUID and its port number,
//! `0x0002c90300f172a0:2`: on a switch every port shares one port GUID, so the node GUID is
//! what tells switches apart, and sources spell GUIDs differently even within one answer
//! (`0x0002c90300f172a0`, `2c90300f172a0`, `0xc42a1030079989c`), so every spelling is brought
//! to one form before it becomes a key.

/// A GUID in the one form keys use: `0x` and 16 lowercase hex digits. Accepts an optional
/// `0x`/`0X`, 1 to 16 hex digits in any case; `None` for anything else.
pub fn normalize_guid(text: &str) -> Option<String> {
    let text = text.trim();
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let value = u64::from_str_radix(digits, 16).ok()?;
    Some(format!("0x{value:016x}"))
}

/// A port number as keys write it: decimal without leading zeros (`"02"` → `2`); `None` for
/// anything that is not a number up to 65535 (switches have at most a few hundred ports).
pub fn normalize_port(text: &str) -> Option<u16> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The key of a port: `0x<16 hex digits>:<port>`.
pub fn port_key(guid: &str, port: &str) -> Option<String> {
    let guid = normalize_guid(guid)?;
    let port = normalize_port(port)?;
    Some(format!("{guid}:{port}"))
}

/// Whether a label or column names a GUID (and so is normalised as one when it is part of a
/// key): `node_guid`, `Node_GUID`, `guid`, `local_guid`.
pub fn is_guid_name(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with("guid")
}

/// One shard of N (`--shard I/N`): the series whose key's FNV-1a 64-bit hash is I modulo N.
/// The hash is fixed (FNV-1a, offset basis 0xcbf29ce484222325, prime 0x100000001b3, over the
/// key's UTF-8 bytes), so every server, version and machine splits a fabric the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

/// FNV-1a, 64 bits.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Shard {
    /// `I/N` with `0 <= I < N`.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let (index, count) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not I/N (like 0/2)"))?;
        let index: u64 = index
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: {index:?} is not a number"))?;
        let count: u64 = count
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: {count:?} is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!("{text:?}: I/N needs 0 <= I < N"));
        }
        Ok(Shard { index, count })
    }

    /// Whether this shard keeps the series `key`.
    pub fn owns(&self, key: &str) -> bool {
        fnv1a(key.as_bytes()) % self.count == self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_guid_spelling_gives_one_key() {
        for spelling in [
            "0x0002c90300f172a0",
            "2c90300f172a0",
            "0X2C90300F172A0",
            " 0x2c90300f172a0 ",
        ] {
            assert_eq!(
                port_key(spelling, "2").as_deref(),
                Some("0x0002c90300f172a0:2"),
                "{spelling}"
            );
        }
        assert_eq!(
            normalize_guid("0xc42a1030079989c").as_deref(),
            Some("0x0c42a1030079989c")
        );
        assert_eq!(
            port_key("0x7cfe9003009ce5b0", "01").as_deref(),
            Some("0x7cfe9003009ce5b0:1")
        );
    }

    #[test]
    fn shards_split_keys_stably_and_completely() {
        // The published FNV-1a test vectors pin the hash down.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let shards: Vec<Shard> = (0..3)
            .map(|i| Shard::parse(&format!("{i}/3")).expect("valid"))
            .collect();
        let mut sizes = [0; 3];
        for n in 0..3_000 {
            let key = format!("0x0002c90300f172a0:{n}");
            let owners: Vec<usize> = (0..3).filter(|&i| shards[i].owns(&key)).collect();
            assert_eq!(owners.len(), 1, "{key}");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&s| (800..1200).contains(&s)), "{sizes:?}");
        for bad in ["", "1", "2/2", "0/0", "a/2", "-1/2"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_guids_and_ports_give_no_key() {
        for guid in ["", "0x", "0x12345678901234567", "xyz", "0x12-34", "-1"] {
            assert_eq!(normalize_guid(guid), None, "{guid:?}");
        }
        for port in ["", "-1", "1.0", "65536", "a"] {
            assert_eq!(normalize_port(port), None, "{port:?}");
        }
    }
}
