//! The license file grammar: SERVER, VENDOR, USE_SERVER, FEATURE and INCREMENT lines.
//!
//! Parsing is all-or-nothing for syntax: a file with one malformed line is refused with
//! the position of the first problem, because serving "the lines we understood" would hide
//! a damaged file from the administrator. Signatures are *not* checked here; a line whose
//! signature does not verify is still a well-formed line, and [`crate::check`] reports it
//! without taking the rest of the file down.

mod feature;
mod values;

use std::fmt;

use feature::parse_entitlement;
use values::parse_hostid;

use crate::entitlement::MAX_NAME_LEN;
use crate::lex::{self, LexError, LogicalLine, Pos, Token};
use crate::{AttributeProblem, Entitlement, HostId, LineKind};

/// A syntax error, located in the original text.
///
/// Displays as `file:line:column: message`, the form editors and terminals recognise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The file name given to [`parse`].
    pub file: String,
    /// 1-based line in the original text (continuations are not joined here).
    pub line: usize,
    /// 1-based column, counted in characters (a tab counts as one).
    pub column: usize,
    /// What was expected and what was found.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// A `SERVER host hostid [port]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLine {
    /// Host name or address, as written.
    pub host: String,
    /// The host id the server must have (`ANY` for none).
    pub hostid: HostId,
    /// TCP port, if given (usher's default is 1648).
    pub port: Option<u16>,
    /// 1-based line number of the SERVER keyword.
    pub line: usize,
}

/// A lowercase `key=value` attribute on an entitlement line.
///
/// These are the administrator's notes (FlexLM's `asset_info=`, `sort=`, ...): they are
/// not signed, may be added or edited freely, and never change what is licensed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAttribute {
    /// Index into [`LicenseFile::entitlements`] of the line that carries it.
    pub entitlement: usize,
    /// The lowercase key.
    pub key: String,
    /// The value (quotes removed).
    pub value: String,
}

/// A parsed license file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseFile {
    /// The file name given to [`parse`], used in messages.
    pub name: String,
    /// FEATURE and INCREMENT lines in file order, signed or not.
    pub entitlements: Vec<Entitlement>,
    /// SERVER lines in file order.
    pub servers: Vec<ServerLine>,
    /// Names from VENDOR lines in file order (the rest of a VENDOR line is ignored).
    pub vendors: Vec<String>,
    /// Whether a USE_SERVER line is present.
    pub use_server: bool,
    /// Lowercase (unsigned, administrator-editable) attributes of the entitlements, in
    /// file order.
    pub user_attrs: Vec<UserAttribute>,
    /// Vendor attributes whose value is not one their keyword takes, or whose keyword usher
    /// does not know, in file order (see [`crate::attribute_value`]). The lines still
    /// parse: signing refuses them, checking marks them bad, the server serves them as
    /// [`AttributeProblem::served_as`] says.
    pub attribute_problems: Vec<AttributeProblem>,
}

/// Parses a license file. `file_name` is only used in error messages and
/// [`LicenseFile::name`].
///
/// Never panics, whatever the input.
pub fn parse(file_name: &str, text: &str) -> Result<LicenseFile, ParseError> {
    parse_with_ends(file_name, text).map(|(file, _)| file)
}

/// Like [`parse`], also returning for each entitlement the byte offset in `text` just after
/// its last token (before trailing whitespace and comments), where the signer inserts
/// `SIGN=`.
pub(crate) fn parse_with_ends(
    file_name: &str,
    text: &str,
) -> Result<(LicenseFile, Vec<usize>), ParseError> {
    let located = |LexError { pos, message }| ParseError {
        file: file_name.to_string(),
        line: pos.line,
        column: pos.column,
        message,
    };
    let mut file = LicenseFile {
        name: file_name.to_string(),
        entitlements: Vec::new(),
        servers: Vec::new(),
        vendors: Vec::new(),
        use_server: false,
        user_attrs: Vec::new(),
        attribute_problems: Vec::new(),
    };
    let mut ends = Vec::new();
    for line in lex::logical_lines(text).map_err(located)? {
        parse_line(&line, &mut file, &mut ends).map_err(located)?;
    }
    for problem in &mut file.attribute_problems {
        problem.file = file_name.to_string();
    }
    Ok((file, ends))
}

fn error(pos: Pos, message: impl Into<String>) -> LexError {
    LexError {
        pos,
        message: message.into(),
    }
}

fn parse_line(
    line: &LogicalLine,
    file: &mut LicenseFile,
    ends: &mut Vec<usize>,
) -> Result<(), LexError> {
    let mut fields = Fields {
        tokens: &line.tokens,
        next: 0,
        end: line.end(),
    };
    let expected_keyword = "SERVER, VENDOR, USE_SERVER, FEATURE or INCREMENT";
    let (keyword, at) = fields.bare(expected_keyword)?;
    let upper = keyword.to_ascii_uppercase();
    match upper.as_str() {
        "SERVER" => {
            let server = parse_server(&mut fields, at.line)?;
            file.servers.push(server);
        }
        "VENDOR" => {
            // Paths, options files and ports after the name belong to other products'
            // daemons; usher has one daemon and its own configuration, so they are ignored.
            let (name, at) = fields.bare("a vendor name")?;
            file.vendors.push(check_name(name, at, "a vendor name")?);
        }
        "USE_SERVER" => {
            if let Some(extra) = fields.peek() {
                return Err(error(extra.pos, "USE_SERVER takes no arguments"));
            }
            file.use_server = true;
        }
        "FEATURE" | "INCREMENT" => {
            let kind = match upper.as_str() {
                "FEATURE" => LineKind::Feature,
                _ => LineKind::Increment,
            };
            let index = file.entitlements.len();
            let (entitlement, user_attrs, problems) =
                parse_entitlement(kind, at.line, &mut fields)?;
            file.attribute_problems
                .extend(
                    problems
                        .into_iter()
                        .map(|(key, at, message)| AttributeProblem {
                            file: String::new(),
                            line: at.line,
                            column: at.column,
                            entitlement: index,
                            key,
                            message,
                        }),
                );
            file.entitlements.push(entitlement);
            file.user_attrs
                .extend(user_attrs.into_iter().map(|(key, value)| UserAttribute {
                    entitlement: index,
                    key,
                    value,
                }));
            ends.push(line.end_offset());
        }
        "DAEMON" => return Err(error(at, "DAEMON lines are not supported; write VENDOR")),
        _ => {
            return Err(error(
                at,
                format!("expected {expected_keyword}, found {keyword:?}"),
            ));
        }
    }
    Ok(())
}

/// The tokens of one logical line, consumed left to right.
struct Fields<'a> {
    tokens: &'a [Token],
    next: usize,
    /// Where "found end of line" is reported.
    end: Pos,
}

impl<'a> Fields<'a> {
    fn peek(&self) -> Option<&'a Token> {
        self.tokens.get(self.next)
    }

    fn next_token(&mut self) -> Option<&'a Token> {
        let token = self.tokens.get(self.next)?;
        self.next += 1;
        Some(token)
    }

    /// The next token, which must be a plain word (no `=`, no quotes).
    fn bare(&mut self, expected: &str) -> Result<(&'a str, Pos), LexError> {
        let end = self.end;
        match self.next_token() {
            None => Err(error(
                end,
                format!("expected {expected}, found end of line"),
            )),
            Some(token) => match token.bare() {
                Some(word) => Ok((word, token.pos)),
                None => Err(error(
                    token.pos,
                    format!("expected {expected}, found {:?}", token.as_written()),
                )),
            },
        }
    }
}

fn parse_server(fields: &mut Fields<'_>, line: usize) -> Result<ServerLine, LexError> {
    let (host, _) = fields.bare("a server host name")?;
    let hostid = match fields.next_token() {
        None => {
            return Err(error(
                fields.end,
                "expected a server host id, found end of line",
            ));
        }
        // A host id is usually `TYPE=value`, which the lexer splits like an attribute.
        Some(token) if !token.quoted => parse_hostid(&token.as_written(), token.pos)?,
        Some(token) => {
            return Err(error(
                token.pos,
                format!("expected a server host id, found {:?}", token.as_written()),
            ));
        }
    };
    let port = match fields.peek() {
        None => None,
        Some(_) => {
            let expected = "a port number (1-65535)";
            let (text, at) = fields.bare(expected)?;
            match text.parse::<u16>() {
                Ok(port) if port > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Some(port),
                _ => return Err(error(at, format!("expected {expected}, found {text:?}"))),
            }
        }
    };
    if let Some(extra) = fields.peek() {
        return Err(error(
            extra.pos,
            format!(
                "unexpected {:?} after the SERVER port: usher's SERVER line is \
                 `SERVER host hostid [port]`",
                extra.as_written()
            ),
        ));
    }
    Ok(ServerLine {
        host: host.to_string(),
        hostid,
        port,
        line,
    })
}

fn check_name(name: &str, at: Pos, what: &str) -> Result<String, LexError> {
    let valid = !name.is_empty()
        && name.chars().count() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(name.to_string())
    } else {
        Err(error(
            at,
            format!(
                "expected {what} (letters, digits, '_' and '-', at most {MAX_NAME_LEN} \
                 characters), found {name:?}"
            ),
        ))
    }
}
