//! Splitting license text into logical lines and tokens. Policy (options) files share
//! the same lexical rules (`#` comments, `\` continuations, double quotes), so the policy
//! parser uses this lexer too.
//!
//! Every character keeps its position in the original text, so that an error found after
//! `\` continuations have been joined still points at the line and column the administrator
//! sees in their editor. The lexer knows nothing about keywords; `parse` gives tokens
//! their meaning.

/// A 1-based line and column (counted in characters) in the original text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl Pos {
    /// The position just after this one on the same line.
    fn next(self) -> Pos {
        Pos {
            line: self.line,
            column: self.column + 1,
        }
    }
}

/// A problem found while lexing, before the file name is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    /// Where.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
}

/// Most characters in one logical line (a line with its continuations). Lines of license
/// and policy files are far shorter; the cap keeps the memory of lexing one line small
/// (16 bytes a character, see `Char`) whatever the file holds.
pub const MAX_LOGICAL_LINE: usize = 64 * 1024;

/// One character of a logical line with where it came from.
#[derive(Debug, Clone, Copy)]
///
/// 16 bytes, not the 32 a `Pos` and a `usize` offset would take: a logical line is held
/// as these while it is tokenized, so a long one (a `GROUP` of thousands of members)
/// costs 16 bytes per character. Input files are far below 4 GiB (see `input`).
struct Char {
    c: char,
    line: u32,
    column: u32,
    /// Byte offset in the original text. A continuation's joining space carries the offset
    /// of the backslash it replaces.
    offset: u32,
}

impl Char {
    fn pos(&self) -> Pos {
        Pos {
            line: self.line as usize,
            column: self.column as usize,
        }
    }
}

/// A whitespace-separated word: `word`, `"quoted text"`, `KEY=value` or `KEY="quoted value"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Where the token starts.
    pub pos: Pos,
    /// The part before the first `=`, if the token has one.
    pub key: Option<String>,
    /// The word, or the part after the first `=`. Quotes are removed and, inside quotes,
    /// each run of whitespace (continuations included) becomes one space and the ends are
    /// trimmed, so reflowing a quoted value never changes it.
    pub value: String,
    /// Where the value starts (the opening quote, if quoted).
    pub value_pos: Pos,
    /// Whether the value was written in double quotes.
    pub quoted: bool,
    /// Position just after the token's last character.
    pub end: Pos,
    /// Byte offset in the original text just after the token's last character.
    pub end_offset: usize,
}

impl Token {
    /// The token as a plain word, if it has neither `=` nor quotes.
    pub fn bare(&self) -> Option<&str> {
        match (&self.key, self.quoted) {
            (None, false) => Some(&self.value),
            _ => None,
        }
    }

    /// The token roughly as written, for error messages.
    pub fn as_written(&self) -> String {
        let value = if self.quoted {
            format!("\"{}\"", self.value)
        } else {
            self.value.clone()
        };
        match &self.key {
            Some(key) => format!("{key}={value}"),
            None => value,
        }
    }
}

/// A line after comments are removed and continuations joined, with at least one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalLine {
    /// The tokens, in order.
    pub tokens: Vec<Token>,
}

impl LogicalLine {
    /// Position just after the last token, where a missing field is reported.
    pub fn end(&self) -> Pos {
        self.tokens
            .last()
            .map_or(Pos { line: 1, column: 1 }, |t| t.end)
    }

    /// Byte offset just after the last token, before trailing whitespace and comments;
    /// where the signer appends `SIGN=`.
    pub fn end_offset(&self) -> usize {
        self.tokens.last().map_or(0, |t| t.end_offset)
    }
}

fn is_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Splits `text` into logical lines, dropping comments and lines with no tokens.
///
/// Rules, in order, for each physical line (a trailing `\r` is dropped first):
/// 1. `#` outside double quotes starts a comment that runs to the end of the line.
/// 2. If what remains ends with `\` (trailing whitespace allowed), the backslash and the
///    line break count as one space and the next line continues this one, inside quotes
///    too.
/// 3. Control characters other than tab are refused outside comments.
pub fn logical_lines(text: &str) -> Result<Vec<LogicalLine>, LexError> {
    let mut lines = Vec::new();
    each_logical_line(text, |line| {
        lines.push(line);
        true
    })?;
    Ok(lines)
}

/// As [`logical_lines`], but hands each line to `f` as soon as it is read and drops it
/// afterwards, so a large file never has all its tokens in memory at once; stops early
/// when `f` returns `false`.
pub fn each_logical_line(
    text: &str,
    mut f: impl FnMut(LogicalLine) -> bool,
) -> Result<(), LexError> {
    let mut chars: Vec<Char> = Vec::new();
    let mut in_quote = false;
    let mut line_start = 0;
    for (index, physical) in text.split('\n').enumerate() {
        let line = index + 1;
        let offset = line_start;
        line_start += physical.len() + 1;
        let physical = physical.strip_suffix('\r').unwrap_or(physical);

        for (column, (byte, c)) in physical.char_indices().enumerate() {
            let pos = Pos {
                line,
                column: column + 1,
            };
            if c == '#' && !in_quote {
                break;
            }
            if c.is_control() && c != '\t' {
                return Err(LexError {
                    pos,
                    message: format!("unexpected control character U+{:04X}", u32::from(c)),
                });
            }
            if c == '"' {
                in_quote = !in_quote;
            }
            if chars.len() >= MAX_LOGICAL_LINE {
                return Err(LexError {
                    pos,
                    message: format!(
                        "this line (with its continuations) is longer than {MAX_LOGICAL_LINE} \
                         characters; split it (several GROUP lines for one group add up)"
                    ),
                });
            }
            chars.push(Char {
                c,
                line: line as u32,
                column: pos.column as u32,
                offset: (offset + byte) as u32,
            });
        }

        // Only this physical line's whitespace is trimmed: a joining space from an earlier
        // continuation has an earlier line number and stays.
        while chars
            .last()
            .is_some_and(|ch| ch.line as usize == line && is_space(ch.c))
        {
            chars.pop();
        }
        if let Some(last) = chars
            .last_mut()
            .filter(|ch| ch.line as usize == line && ch.c == '\\')
        {
            last.c = ' ';
            continue;
        }

        in_quote = false;
        let logical = tokenize(&chars)?;
        // Keep the buffer's room for the next line, not its characters.
        chars.clear();
        if !logical.tokens.is_empty() && !f(logical) {
            return Ok(());
        }
    }
    // The last line of the text may itself end with a continuation.
    let logical = tokenize(&chars)?;
    if !logical.tokens.is_empty() {
        f(logical);
    }
    Ok(())
}

fn tokenize(chars: &[Char]) -> Result<LogicalLine, LexError> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if is_space(chars[i].c) {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && !is_space(chars[i].c) && chars[i].c != '"' {
            i += 1;
        }
        let run = &chars[start..i];
        let eq = run.iter().position(|ch| ch.c == '=');

        if i < chars.len() && chars[i].c == '"' {
            // A quote may open a whole token or the value of `KEY=`, nothing else.
            let key = match eq {
                None if run.is_empty() => None,
                Some(eq) if eq + 1 == run.len() => Some(collect(&run[..eq])),
                _ => {
                    return Err(LexError {
                        pos: chars[i].pos(),
                        message: "unexpected '\"': quotes may only surround a whole value, \
                                  as in KEY=\"some text\""
                            .to_string(),
                    });
                }
            };
            let open = i;
            let close = (open + 1..chars.len())
                .find(|&k| chars[k].c == '"')
                .ok_or_else(|| LexError {
                    pos: chars[open].pos(),
                    message: "unterminated quoted value: expected a closing '\"' on this \
                              line (or a continued one)"
                        .to_string(),
                })?;
            if let Some(after) = chars.get(close + 1).filter(|ch| !is_space(ch.c)) {
                return Err(LexError {
                    pos: after.pos(),
                    message: format!(
                        "expected whitespace after the closing quote, found {:?}",
                        after.c
                    ),
                });
            }
            let inner = collect(&chars[open + 1..close]);
            let value = inner
                .split([' ', '\t'])
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>();
            tokens.push(Token {
                pos: chars[start].pos(),
                key,
                value: value.join(" "),
                value_pos: chars[open].pos(),
                quoted: true,
                end: chars[close].pos().next(),
                end_offset: chars[close].offset as usize + 1,
            });
            i = close + 1;
        } else {
            let (Some(&first), Some(&last)) = (run.first(), run.last()) else {
                // Not reachable: the token starts at a character that is neither
                // whitespace nor a quote, so `run` holds at least that character.
                break;
            };
            let (key, value, value_pos) = match eq {
                Some(eq) => (
                    Some(collect(&run[..eq])),
                    collect(&run[eq + 1..]),
                    run[eq].pos().next(),
                ),
                None => (None, collect(run), first.pos()),
            };
            tokens.push(Token {
                pos: first.pos(),
                key,
                value,
                value_pos,
                quoted: false,
                end: last.pos().next(),
                end_offset: last.offset as usize + last.c.len_utf8(),
            });
        }
    }
    Ok(LogicalLine { tokens })
}

fn collect(chars: &[Char]) -> String {
    chars.iter().map(|ch| ch.c).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_logical_line_longer_than_the_cap_is_refused() {
        let long = format!("GROUP g{}\n", " u".repeat(MAX_LOGICAL_LINE / 2 + 1));
        let err = logical_lines(&long).unwrap_err();
        assert!(err.message.contains("longer than"), "{err:?}");
        let ok = format!("GROUP g{}\n", " u".repeat(MAX_LOGICAL_LINE / 4));
        assert_eq!(logical_lines(&ok).unwrap().len(), 1);
    }

    use super::*;

    fn lines(text: &str) -> Vec<Vec<String>> {
        logical_lines(text)
            .unwrap()
            .into_iter()
            .map(|l| l.tokens.iter().map(Token::as_written).collect())
            .collect()
    }

    #[test]
    fn comments_blank_lines_and_continuations() {
        let text = "# header\n\nA b \\\n  c # note\n\tD=\"x # y\"  \\   \n E\n";
        assert_eq!(
            lines(text),
            vec![vec!["A", "b", "c"], vec!["D=\"x # y\"", "E"]]
        );
    }

    #[test]
    fn quoted_whitespace_is_normalised_across_continuations() {
        let text = "N=\"  one   two \\\n     three  \"\n";
        let line = &logical_lines(text).unwrap()[0];
        assert_eq!(line.tokens[0].value, "one two three");
        assert_eq!(
            line.tokens[0].end,
            Pos {
                line: 2,
                column: 14
            }
        );
    }

    #[test]
    fn positions_point_into_the_original_text() {
        let text = "A \\\n  bb=cc \\\n\té\n";
        let line = &logical_lines(text).unwrap()[0];
        let at = |t: &Token| (t.pos.line, t.pos.column);
        assert_eq!(
            line.tokens.iter().map(at).collect::<Vec<_>>(),
            [(1, 1), (2, 3), (3, 2)]
        );
        assert_eq!(line.tokens[1].value_pos, Pos { line: 2, column: 6 });
        assert_eq!(line.end_offset(), text.len() - 1);
    }

    #[test]
    fn crlf_line_endings() {
        assert_eq!(
            lines("A b \\\r\n c\r\nD\r\n"),
            vec![vec!["A", "b", "c"], vec!["D"]]
        );
    }

    #[test]
    fn quote_errors() {
        let err = |text: &str| logical_lines(text).unwrap_err();
        assert_eq!(err("A B=\"x\n").pos, Pos { line: 1, column: 5 });
        assert_eq!(err("A B=\"x\"y\n").pos, Pos { line: 1, column: 8 });
        assert_eq!(err("A B=x\"y\"\n").pos, Pos { line: 1, column: 6 });
        assert_eq!(err("A \u{7}\n").pos, Pos { line: 1, column: 3 });
    }
}
