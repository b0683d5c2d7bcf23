//! The `grpc-timeout` header: how a caller tells the server how long it will wait.

use std::time::Duration;

/// Parses a `grpc-timeout` value (`"100m"`, `"5S"`, at most 8 digits and a unit).
///
/// Returns `None` for a malformed value; the gRPC spec says to treat that as no timeout.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    // ASCII only: the unit is the last byte, and splitting before it must not
    // cut a character in two (found by the fuzzer: `"Ͻ"` panicked).
    if value.len() < 2 || value.len() > 9 || !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a duration as a `grpc-timeout` value, rounding up so no precision makes it
/// shorter than asked, and choosing the finest unit that fits in 8 digits.
pub fn format_grpc_timeout(timeout: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in units {
        let value = nanos.div_ceil(per);
        if value <= MAX {
            return format!("{value}{unit}");
        }
    }
    format!("{MAX}H")
}

/// The `grpc-timeout` header a client sends for a call with `remaining` time left.
///
/// From a second up the value is whole milliseconds, rounded up (at most 0.1 %
/// longer than the truth, and the caller keeps its own deadline): calls made with
/// the same timeout then send the same value, which HPACK sends as an index into
/// the connection's table — one byte instead of Huffman-coding a new value per
/// call. Below a second the value is exact (rounded up to the finest unit that
/// fits) and marked never-indexed: a new value every call would push the headers
/// that do repeat out of the table. `None` only if the value cannot be a header
/// (it always can).
pub(crate) fn grpc_timeout_header(remaining: Duration) -> Option<http::HeaderValue> {
    use std::cell::RefCell;
    thread_local! {
        /// The last whole-millisecond value this thread made, and its header.
        static LAST: RefCell<Option<(u128, http::HeaderValue)>> = const { RefCell::new(None) };
    }
    const SECOND: Duration = Duration::from_secs(1);
    const MAX_MILLIS: u128 = 99_999_999;
    let millis = remaining.as_nanos().div_ceil(1_000_000);
    if remaining < SECOND || millis > MAX_MILLIS {
        let mut value = http::HeaderValue::from_str(&format_grpc_timeout(remaining)).ok()?;
        // Below a second: a new value nearly every call (never indexed). Past
        // 99,999,999 ms: whole minutes or hours, which repeat (indexed).
        value.set_sensitive(remaining < SECOND);
        return Some(value);
    }
    LAST.with_borrow_mut(|last| {
        if let Some((made, value)) = last
            && *made == millis
        {
            return Some(value.clone());
        }
        let mut text = itoa::Buffer::new().format(millis).to_owned();
        text.push('m');
        let value = http::HeaderValue::from_str(&text).ok()?;
        *last = Some((millis, value.clone()));
        Some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_or_more_is_sent_in_whole_milliseconds_that_repeat() {
        let header = |d: Duration| grpc_timeout_header(d).expect("a header");
        // 5 s less the few microseconds before the send: the same value as 5 s.
        let five = header(Duration::from_secs(5));
        let almost = header(Duration::from_secs(5) - Duration::from_micros(37));
        assert_eq!(five, "5000m");
        assert_eq!(almost, "5000m");
        assert!(!almost.is_sensitive(), "a repeating value is indexed");
        // Rounded up, never down: the callee never gives up before the caller.
        assert_eq!(header(Duration::from_micros(1_500_001)), "1501m");
        assert_eq!(header(Duration::from_secs(1)), "1000m");
        // Below a second: exact, and never indexed.
        let short = header(Duration::from_micros(999_999));
        assert_eq!(short, "999999u");
        assert!(short.is_sensitive());
        // Too many milliseconds for 8 digits: coarser units, which repeat.
        let long = header(Duration::from_secs(86_400 * 400));
        assert_eq!(
            parse_grpc_timeout(long.to_str().expect("ASCII")),
            Some(Duration::from_secs(3600 * 9600))
        );
        assert!(!long.is_sensitive());
        // A value that changes is made again, not the last one reused.
        assert_eq!(header(Duration::from_millis(2500)), "2500m");
        assert_eq!(header(Duration::from_millis(2501)), "2501m");
    }

    #[test]
    fn a_multibyte_character_is_malformed_not_a_panic() {
        // Found by `scripts/fuzz` (grpc_timeout): the unit was split off by byte.
        for value in ["\u{3fd}", "1\u{3fd}", "12345\u{e9}", "\u{e9}S"] {
            assert_eq!(parse_grpc_timeout(value), None, "{value:?}");
        }
    }

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in ["", "S", "10", "1x", "-1S", "123456789S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_and_parses_back_without_shortening() {
        for d in [
            Duration::from_nanos(1),
            Duration::from_millis(250),
            Duration::from_secs(5),
            Duration::from_secs(86_400 * 400),
        ] {
            let back = parse_grpc_timeout(&format_grpc_timeout(d)).unwrap();
            assert!(back >= d, "{d:?} -> {back:?}");
        }
    }
}
