//! The names a client sends, and what each may be: its longest length and its characters.
//!
//! A server checks every name of a request against [`Field`] before the request goes any
//! further ([`check_request`]), and refuses one that breaks its rule with a
//! `BAD_REQUEST` naming the field and the rule, so nothing unbounded reaches the ledger,
//! the usage log or a metric. `docs/protocol.md` lists the rules; they are part of the
//! protocol (a client may check them first, to fail early).

use crate::{Request, request};

/// A name-carrying field of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// A feature (`Checkout`, `Borrow`, `Return`, `Status`): as in license files.
    Feature,
    /// A version asked for (`Checkout`, `Borrow`): empty, or dot-separated numbers.
    Version,
    /// `Hello.user`.
    User,
    /// `Hello.host`.
    Host,
    /// `Hello.display`.
    Display,
    /// `Hello.program`.
    Program,
    /// `Hello.program_version`.
    ProgramVersion,
    /// `Hello.client_version`.
    ClientVersion,
    /// One of `Borrow.host_ids`.
    HostId,
    /// `Status.admin_token`.
    AdminToken,
}

/// The most host ids one borrow may name.
pub const MAX_BORROW_HOST_IDS: usize = 16;

/// The characters a field may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// ASCII letters, digits, `_` and `-` (feature names, as in license files).
    Name,
    /// ASCII digits and `.`.
    Version,
    /// Printable ASCII without spaces (host ids, tokens).
    Token,
    /// Any Unicode text without control characters (names of people, hosts, programs).
    Text,
}

impl Charset {
    fn allows(self, c: char) -> bool {
        match self {
            Charset::Name => c.is_ascii_alphanumeric() || c == '_' || c == '-',
            Charset::Version => c.is_ascii_digit() || c == '.',
            Charset::Token => c.is_ascii_graphic(),
            Charset::Text => !c.is_control(),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Charset::Name => "letters, digits, '_' and '-'",
            Charset::Version => "digits and '.'",
            Charset::Token => "printable ASCII without spaces",
            Charset::Text => "text without control characters",
        }
    }
}

impl Field {
    /// The longest value, in bytes (UTF-8).
    pub fn max_len(self) -> usize {
        match self {
            Field::Feature => 64,
            Field::Version => 32,
            Field::User | Field::Host | Field::Display | Field::Program => 256,
            Field::ProgramVersion | Field::ClientVersion => 64,
            Field::HostId | Field::AdminToken => 128,
        }
    }

    /// The characters a value may hold.
    pub fn charset(self) -> Charset {
        match self {
            Field::Feature => Charset::Name,
            Field::Version => Charset::Version,
            Field::HostId | Field::AdminToken => Charset::Token,
            _ => Charset::Text,
        }
    }

    /// The field's name, as a refusal names it.
    pub fn name(self) -> &'static str {
        match self {
            Field::Feature => "feature",
            Field::Version => "version",
            Field::User => "user",
            Field::Host => "host",
            Field::Display => "display",
            Field::Program => "program",
            Field::ProgramVersion => "program_version",
            Field::ClientVersion => "client_version",
            Field::HostId => "host id",
            Field::AdminToken => "admin token",
        }
    }

    /// Checks `value` against this field's rule.
    pub fn check(self, value: &str) -> Result<(), NameError> {
        if value.len() > self.max_len() {
            return Err(NameError {
                field: self,
                problem: Problem::TooLong(value.len()),
            });
        }
        match value.chars().find(|&c| !self.charset().allows(c)) {
            Some(c) => Err(NameError {
                field: self,
                problem: Problem::BadChar(c),
            }),
            None => Ok(()),
        }
    }
}

/// `value` made to fit `field`'s rule: characters outside its set become `?` and it is cut
/// (at a character boundary) to the longest length. For a client's own identity (user,
/// host, program), which it would rather send clipped than be refused for.
pub fn fit(field: Field, value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(field.max_len()));
    for c in value.chars() {
        let c = if field.charset().allows(c) { c } else { '?' };
        if out.len() + c.len_utf8() > field.max_len() {
            break;
        }
        out.push(c);
    }
    out
}

/// A name that breaks its field's rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {problem}: at most {} bytes of {}", field.name(), field.max_len(), field.charset().describe())]
pub struct NameError {
    /// The field.
    pub field: Field,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong with a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Longer than the field allows (the length, in bytes).
    #[error("is {0} bytes long")]
    TooLong(usize),
    /// Holds a character the field does not allow.
    #[error("holds {0:?}")]
    BadChar(char),
    /// More host ids than [`MAX_BORROW_HOST_IDS`].
    #[error("list is too long (more than {MAX_BORROW_HOST_IDS} entries)")]
    TooMany,
}

/// Checks every name `request` carries; the first that breaks its rule is the error.
pub fn check_request(request: &Request) -> Result<(), NameError> {
    let Some(kind) = &request.kind else {
        return Ok(());
    };
    match kind {
        request::Kind::Hello(h) => {
            Field::User.check(&h.user)?;
            Field::Host.check(&h.host)?;
            Field::Display.check(&h.display)?;
            Field::Program.check(&h.program)?;
            Field::ProgramVersion.check(&h.program_version)?;
            Field::ClientVersion.check(&h.client_version)
        }
        request::Kind::Checkout(c) => {
            Field::Feature.check(&c.feature)?;
            Field::Version.check(&c.version)
        }
        request::Kind::Borrow(b) => {
            Field::Feature.check(&b.feature)?;
            Field::Version.check(&b.version)?;
            if b.host_ids.len() > MAX_BORROW_HOST_IDS {
                return Err(NameError {
                    field: Field::HostId,
                    problem: Problem::TooMany,
                });
            }
            b.host_ids.iter().try_for_each(|id| Field::HostId.check(id))
        }
        request::Kind::Return(r) => Field::Feature.check(&r.feature),
        request::Kind::Status(s) => {
            Field::Feature.check(&s.feature)?;
            Field::AdminToken.check(&s.admin_token)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_admits_its_longest_value_and_refuses_one_byte_more() {
        for (field, ok) in [
            (Field::Feature, "a"),
            (Field::Version, "1"),
            (Field::User, "é"),
            (Field::HostId, "x"),
        ] {
            let longest = ok.repeat(field.max_len() / ok.len());
            assert_eq!(field.check(&longest), Ok(()), "{field:?}");
            let over = format!("{longest}{ok}");
            assert!(
                matches!(
                    field.check(&over),
                    Err(NameError {
                        problem: Problem::TooLong(_),
                        ..
                    })
                ),
                "{field:?}"
            );
        }
    }

    #[test]
    fn characters_outside_the_rule_are_refused_and_named() {
        let err = Field::Feature.check("cad;drop").unwrap_err();
        assert_eq!(err.problem, Problem::BadChar(';'));
        assert_eq!(
            err.to_string(),
            "feature holds ';': at most 64 bytes of letters, digits, '_' and '-'"
        );
        assert!(Field::Version.check("2025.10").is_ok());
        assert!(Field::Version.check("v1").is_err());
        assert!(Field::User.check("Jean Dupont").is_ok());
        assert!(Field::User.check("bob\nforged line").is_err());
        assert!(Field::HostId.check("ID=1 2").is_err());
        assert!(
            Field::Feature.check("").is_ok(),
            "empty: the field is unset"
        );
        assert_eq!(fit(Field::User, "bob\nx"), "bob?x");
        let long = fit(Field::User, &"é".repeat(200));
        assert_eq!((long.len(), Field::User.check(&long)), (256, Ok(())));
    }
}
