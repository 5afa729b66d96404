//! Redis's glob patterns, as KEYS and SCAN's MATCH take them: `*` matches
//! any run of bytes, `?` one byte, `[abc]`, `[a-z]` and `[^abc]` one byte
//! of (or not of) a set, and `\` makes the next byte literal. Keys are
//! bytes, so patterns match bytes, not characters. Written here rather than
//! taken from a crate: the glob crates match file paths (`*` stops at `/`,
//! `{a,b}` alternates), which is not what Redis users mean.

/// Whether `pattern` matches the whole of `key`. A `*` that fails to match
/// further on gives back one more byte, as Redis does: at worst the
/// pattern's length times the key's.
pub(crate) fn matches(pattern: &[u8], key: &[u8]) -> bool {
    let (mut p, mut k) = (0, 0);
    // The pattern after the last `*` seen, and the key byte it was tried at.
    let mut retry: Option<(usize, usize)> = None;
    while k < key.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                retry = Some((p + 1, k));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match class(pattern, p + 1, key[k]) {
                (true, next) => Some(next),
                (false, _) => None,
            },
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == key[k]).then_some(p + 2),
            Some(&literal) => (literal == key[k]).then_some(p + 1),
            None => None,
        };
        match (step, retry) {
            (Some(next), _) => {
                p = next;
                k += 1;
            }
            (None, Some((after_star, tried_at))) => {
                p = after_star;
                k = tried_at + 1;
                retry = Some((after_star, k));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Whether `byte` is in the class starting at `pattern[start]` (just after
/// its `[`), and where the pattern goes on after its `]`. A class left open
/// runs to the pattern's end, as in Redis.
fn class(pattern: &[u8], start: usize, byte: u8) -> (bool, usize) {
    let mut i = start;
    let negated = pattern.get(i) == Some(&b'^');
    if negated {
        i += 1;
    }
    let mut hit = false;
    while let Some(&b) = pattern.get(i) {
        match b {
            b']' => return (hit != negated, i + 1),
            b'\\' if i + 1 < pattern.len() => {
                hit |= pattern[i + 1] == byte;
                i += 2;
            }
            low if pattern.get(i + 1) == Some(&b'-')
                && pattern.get(i + 2).is_some_and(|&high| high != b']') =>
            {
                let high = pattern[i + 2];
                let (low, high) = (low.min(high), low.max(high));
                hit |= (low..=high).contains(&byte);
                i += 3;
            }
            literal => {
                hit |= literal == byte;
                i += 1;
            }
        }
    }
    (hit != negated, i)
}

/// The bytes every key matching `pattern` starts with: those before its
/// first `*`, `?`, `[` or `\`. A scan for the pattern need only read keys
/// with this prefix.
pub(crate) fn literal_prefix(pattern: &[u8]) -> &[u8] {
    let end = pattern
        .iter()
        .position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
        .unwrap_or(pattern.len());
    &pattern[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, key: &str) -> bool {
        matches(pattern.as_bytes(), key.as_bytes())
    }

    #[test]
    fn stars_and_question_marks() {
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("user:*", "user:1"));
        assert!(!m("user:*", "use"));
        assert!(m("*:1", "user:1"));
        assert!(m("u*r*1", "user:1"));
        assert!(!m("u*r*2", "user:1"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("a*b*c", "aXXbYYbZZc"), "the star gives back bytes");
        assert!(!m("a*b*c", "aXXbYYbZZ"));
        assert!(m("user.*", "user.1"));
        assert!(!m("user.*", "userX1"), "a dot is a literal");
        assert!(!m("", "a"));
        assert!(m("", ""));
    }

    #[test]
    fn classes_and_escapes() {
        assert!(m("h[ae]llo", "hello"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(
            m("h[b-a]llo", "hbllo"),
            "a reversed range, as Redis reads it"
        );
        assert!(!m("h[a-b]llo", "hcllo"));
        assert!(m("[\\]]", "]"));
        assert!(m("\\*", "*"));
        assert!(!m("\\*", "x"));
        assert!(m("a\\", "a\\"), "a trailing backslash is itself");
        assert!(m("[abc", "b"), "an open class runs to the end");
        assert!(!m("[]", "a"), "an empty class matches nothing");
    }

    #[test]
    fn binary_keys_match_byte_by_byte() {
        assert!(matches(b"k?\xff", b"k\x00\xff"));
        assert!(matches(b"[\x00-\x10]*", b"\x05rest"));
    }

    #[test]
    fn literal_prefixes() {
        assert_eq!(literal_prefix(b"user:*"), b"user:");
        assert_eq!(literal_prefix(b"user:1"), b"user:1");
        assert_eq!(literal_prefix(b"*x"), b"");
        assert_eq!(literal_prefix(b"a?b"), b"a");
        assert_eq!(literal_prefix(b"a[bc]"), b"a");
        assert_eq!(literal_prefix(b"a\\*"), b"a");
    }
}
