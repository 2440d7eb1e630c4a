//! The few words every usher program writes and reads the same way: counts of things in
//! messages ("1 seat", "3 seats"), lease handles, and on/off settings. The server, the
//! client library, `usher` and `usherd` all call these, so a handle printed by one is the
//! handle another accepts, and `USHER_INSECURE_PLAINTEXT=1` means what `=yes` means.

/// `n` and the noun, pluralised: `plural(1, "seat")` is `1 seat`, `plural(3, "seat")` is
/// `3 seats`. Nouns whose plural is not `+s` give it after a `|`: `"checkout is|checkouts
/// are"`.
pub fn plural(n: u64, noun: &str) -> String {
    format!("{n} {}", plural_noun(n, noun))
}

/// The noun alone, in the form `n` needs (see [`plural`]).
pub fn plural_noun(n: u64, noun: &str) -> String {
    match noun.split_once('|') {
        Some((one, many)) => if n == 1 { one } else { many }.to_string(),
        None if n == 1 => noun.to_string(),
        None => format!("{noun}s"),
    }
}

/// A lease's handle as every view shows it (`usher status`, `lmstat`, the admin API, the
/// usage log export, `usher run`): the lease id in decimal, as FlexLM prints handles.
pub fn lease_handle(lease_id: u64) -> String {
    lease_id.to_string()
}

/// Reads a handle as [`lease_handle`] writes it (surrounding spaces allowed).
pub fn parse_lease_handle(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The spellings every boolean setting accepts (command-line values, `USHER_*` and
/// `USHERD_*` variables), case-insensitively: `1/0`, `true/false`, `yes/no`, `on/off`.
pub const BOOLEAN_SPELLINGS: &str = "1/0, true/false, yes/no, on/off";

/// Reads a boolean setting; the error names the accepted spellings.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "{text:?} is not a boolean (expected one of {BOOLEAN_SPELLINGS})"
        )),
    }
}

/// An error and its causes on one line (`reading x: permission denied`), each said once: a
/// cause whose text its effect already quotes (as many errors do, `path: {source}`) is
/// not repeated. Every program prints its fatal errors through this.
pub fn error_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals() {
        assert_eq!(plural(0, "seat"), "0 seats");
        assert_eq!(plural(1, "seat"), "1 seat");
        assert_eq!(plural(2, "seat"), "2 seats");
        assert_eq!(plural(1, "checkout is|checkouts are"), "1 checkout is");
        assert_eq!(plural(4, "checkout is|checkouts are"), "4 checkouts are");
    }

    #[test]
    fn handles_round_trip_in_decimal() {
        for id in [0, 7, 35, 36, u64::MAX] {
            assert_eq!(parse_lease_handle(&lease_handle(id)), Some(id));
        }
        assert_eq!(lease_handle(36), "36");
        assert_eq!(parse_lease_handle(" 36 "), Some(36));
        assert_eq!(parse_lease_handle("0x24"), None);
        assert_eq!(parse_lease_handle(""), None);
    }

    #[test]
    fn error_lines_say_each_cause_once() {
        #[derive(Debug)]
        struct Quoting(std::io::Error);
        impl std::fmt::Display for Quoting {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "nope.pub: {}", self.0)
            }
        }
        impl std::error::Error for Quoting {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Quoting(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "No such file",
        ));
        assert_eq!(error_line(&e), "nope.pub: No such file");
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let wrapped = std::io::Error::other(Quoting(io));
        assert_eq!(error_line(&wrapped), "nope.pub: gone");
    }

    #[test]
    fn every_boolean_spelling() {
        for t in ["1", "true", "yes", "on", "TRUE", " Yes ", "ON"] {
            assert_eq!(parse_bool(t), Ok(true), "{t}");
        }
        for f in ["0", "false", "no", "off", "False", "NO"] {
            assert_eq!(parse_bool(f), Ok(false), "{f}");
        }
        for bad in ["", "2", "maybe", "y"] {
            let e = parse_bool(bad).unwrap_err();
            assert!(e.contains("1/0, true/false, yes/no, on/off"), "{e}");
        }
    }
}
