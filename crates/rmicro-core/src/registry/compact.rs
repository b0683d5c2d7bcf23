//! go-micro's compact record encoding, `hex(zlib(bytes))`, used in Consul tags
//! (`e-`, `t-`, `v-`) and mDNS TXT records.

use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use std::io::{Read, Write};

/// Encodes `bytes` as lowercase hex of their zlib compression, as go-micro's
/// `encode` does.
///
/// ```
/// # extern crate rmicro_core as rmicro;
/// use rmicro::registry::compact;
/// let tag = compact::encode(b"1.0.0");
/// assert!(tag.bytes().all(|b| b.is_ascii_hexdigit()));
/// assert_eq!(compact::decode(&tag).as_deref(), Some(&b"1.0.0"[..]));
/// assert_eq!(compact::decode("not hex"), None);
/// ```
pub fn encode(bytes: &[u8]) -> String {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    // Writing to a Vec cannot fail.
    let compressed = match encoder.write_all(bytes).and_then(|()| encoder.finish()) {
        Ok(compressed) => compressed,
        Err(_) => return String::new(),
    };
    let mut hex = String::with_capacity(compressed.len() * 2);
    for byte in compressed {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    hex
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Decodes what [`encode`] (or go-micro) produced; `None` if it is not hex of zlib data.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let compressed: Option<Vec<u8>> = text
        .chunks(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect();
    let mut out = Vec::new();
    ZlibDecoder::new(compressed?.as_slice())
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_other_implementations_zlib() {
        // `binascii.hexlify(zlib.compress(b"1.0.0"))` from CPython's zlib, not ours.
        let foreign = "789c33d433d033000002ce00ee";
        assert_eq!(decode(foreign).as_deref(), Some(&b"1.0.0"[..]));
        assert_eq!(decode("789c"), None, "truncated zlib stream");
        assert_eq!(decode("abc"), None, "odd length");
    }
}
