//! Echoing what a caller sent back in an answer or a message (DOMAIN.md "Devices and
//! uploads": an identifier echoed in an answer is cut to 64 characters with `…`).
//!
//! Anything from outside may hold a NUL (which PostgreSQL text refuses), other control
//! characters (which break a CSV line or a log line) or 10 kB of junk. An echo is safe to
//! store, log and send: control characters are written as Rust escapes (`\u{0}`, `\t`),
//! and the result is at most [`ECHO_MAX_CHARS`] characters.

/// Most characters of an echoed value, the `…` included.
pub const ECHO_MAX_CHARS: usize = 64;

/// `input` as it may be echoed: control characters escaped (`R5\u{0}X`), cut to
/// [`ECHO_MAX_CHARS`] characters ending in `…` when longer.
pub fn echo(input: &str) -> String {
    let pieces = input.chars().map(|c| {
        if c.is_control() {
            c.escape_default().collect::<String>()
        } else {
            c.to_string()
        }
    });
    let mut out = String::new();
    let mut chars = 0;
    let mut rest = pieces.peekable();
    while let Some(piece) = rest.next() {
        let len = piece.chars().count();
        let last = rest.peek().is_none();
        // The last piece may use the final character; any other leaves room for `…`.
        let limit = if last {
            ECHO_MAX_CHARS
        } else {
            ECHO_MAX_CHARS - 1
        };
        if chars + len > limit {
            out.push('…');
            return out;
        }
        out.push_str(&piece);
        chars += len;
    }
    out
}

/// Whether `input` can be stored as PostgreSQL `text` and written to a CSV cell as it is:
/// no control characters (NUL among them).
pub fn is_plain(input: &str) -> bool {
    !input.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_plain_values_are_echoed_as_they_are() {
        assert_eq!(echo("R58M-1"), "R58M-1");
        assert_eq!(echo("Ärzte GmbH"), "Ärzte GmbH");
        assert_eq!(echo(&"x".repeat(64)), "x".repeat(64));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(echo("R5CW\u{0}10DDD"), "R5CW\\u{0}10DDD");
        assert_eq!(echo("a\tb\n"), "a\\tb\\n");
        assert!(is_plain("Ärzte"));
        assert!(!is_plain("R5\u{0}X"));
        assert!(!is_plain("a\u{7f}"));
    }

    #[test]
    fn long_values_are_cut_to_64_characters_with_an_ellipsis() {
        let cut = echo(&"é".repeat(10_000));
        assert_eq!(cut.chars().count(), 64);
        assert!(cut.ends_with('…'));
        assert_eq!(echo(&"x".repeat(65)).chars().count(), 64);
        // An escape never pushes the echo past the limit.
        let cut = echo(&format!("{}\u{0}", "x".repeat(62)));
        assert_eq!(cut.chars().count(), 63);
        assert!(cut.ends_with('…'), "{cut}");
    }
}
