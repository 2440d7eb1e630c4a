//! The command lines and environment settings that README.md and docs/ show, extracted
//! so that tests can run each through the real argument parser (and the docs stay
//! honest). Shared by the tests of `usher` and of `usherd`.

/// One documented command line: where it is, the `NAME=value` settings written before or
/// around it, and its words (the program first, shell quoting removed).
#[derive(Debug)]
pub struct Example {
    /// `file:line`.
    pub at: String,
    /// The words, program name first (`usher`, `usherd`, `lmstat`, `lmutil`).
    pub argv: Vec<String>,
    /// In running text (`` `usher run --wait` ``), where a flag may be named without its
    /// value: only the names in it must be known. Lines of code blocks must parse whole.
    pub inline: bool,
}

impl Example {
    /// Whether a parse error still lets the example stand: an inline mention may leave
    /// out values and required arguments, never name an unknown flag or command, nor give
    /// a bad value.
    pub fn tolerates(&self, e: &clap::Error) -> bool {
        use clap::error::ErrorKind::*;
        self.inline
            && matches!(
                e.kind(),
                MissingRequiredArgument | InvalidValue | DisplayHelpOnMissingArgumentOrSubcommand
            )
            && !e.to_string().contains("invalid value '")
    }
}

/// The docs, as compiled into the test: README.md and every docs/*.md.
pub fn docs() -> Vec<(&'static str, &'static str)> {
    vec![
        ("README.md", include_str!("../../../README.md")),
        (
            "docs/operations.md",
            include_str!("../../../docs/operations.md"),
        ),
        ("docs/policy.md", include_str!("../../../docs/policy.md")),
        (
            "docs/protocol.md",
            include_str!("../../../docs/protocol.md"),
        ),
        (
            "docs/license-format.md",
            include_str!("../../../docs/license-format.md"),
        ),
    ]
}

/// Every command line of `program` the docs show: each line of a code block that runs it
/// (also as `cargo run ... --bin PROGRAM -- ARGS`), and each inline `` `PROGRAM ...` ``
/// that is a concrete example rather than a synopsis (no `[`, `|`, `...` or
/// upper-case placeholders).
pub fn command_lines(program: &str) -> Vec<Example> {
    let mut out = Vec::new();
    for (file, text) in docs() {
        let mut in_block = false;
        for (n, line) in text.lines().enumerate() {
            let at = format!("{file}:{}", n + 1);
            if line.trim_start().starts_with("```") {
                in_block = !in_block;
                continue;
            }
            if in_block {
                if let Some(argv) = shell_words(line, program) {
                    out.push(Example {
                        at,
                        argv,
                        inline: false,
                    });
                }
                continue;
            }
            for (i, span) in line.split('`').enumerate() {
                let concrete = !span.contains(['[', '|', '<'])
                    && !span.contains("...")
                    && !span.split_whitespace().skip(1).any(is_placeholder);
                if i % 2 == 1
                    && concrete
                    && let Some(argv) = shell_words(span, program)
                {
                    out.push(Example {
                        at: at.clone(),
                        argv,
                        inline: true,
                    });
                }
            }
        }
    }
    out
}

/// Every `NAME=value` setting shown for a variable starting with `prefix` (in code or in
/// inline code), as (where, name, value).
pub fn env_settings(prefix: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (file, text) in docs() {
        for (n, line) in text.lines().enumerate() {
            for word in line.split(|c: char| c.is_whitespace() || c == '`' || c == '(') {
                let word = word.strip_prefix('$').unwrap_or(word);
                let Some((name, value)) = word.split_once('=') else {
                    continue;
                };
                let value = value.trim_end_matches([')', ',', '.', ';', ':']);
                if name.starts_with(prefix)
                    && name.len() > prefix.len()
                    && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
                    && !value.is_empty()
                    && !value.contains("...")
                    && !value.starts_with('$')
                {
                    out.push((format!("{file}:{}", n + 1), name.into(), value.into()));
                }
            }
        }
    }
    out
}

/// Every variable name starting with `prefix` the docs mention (outside source-code blocks,
/// where `USHER_OK` is a C constant, not a variable).
pub fn env_names(prefix: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (file, text) in docs() {
        let mut source_block = false;
        for (n, line) in text.lines().enumerate() {
            if let Some(fence) = line.trim_start().strip_prefix("```") {
                source_block = !source_block
                    && matches!(fence.trim(), "c" | "cpp" | "c++" | "rust" | "python" | "py");
                continue;
            }
            if source_block {
                continue;
            }
            let mut rest = line;
            while let Some(i) = rest.find(prefix) {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
                    .unwrap_or(tail.len());
                let name = &tail[..end];
                let word_start = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
                if word_start && name.len() > prefix.len() {
                    out.push((format!("{file}:{}", n + 1), name.to_string()));
                }
                rest = &tail[end.max(1)..];
            }
        }
    }
    out
}

fn is_placeholder(word: &str) -> bool {
    let w = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    w.len() > 1 && w.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') && !w.starts_with("USHER")
}

/// The words of one shell line if it runs `program`: leading `$ `, `NAME=value`
/// assignments and `cargo run ... --bin PROGRAM --` are skipped; the line ends at a
/// comment, a pipe, a redirection or a `&`.
fn shell_words(line: &str, program: &str) -> Option<Vec<String>> {
    let line = line.trim().strip_prefix("$ ").unwrap_or(line.trim());
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut has_word = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                has_word = true;
            }
            (None, '#' | '|' | '>' | '<' | '&' | ';') if word.is_empty() => break,
            (None, c) if c.is_whitespace() => {
                if has_word || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                    has_word = false;
                }
            }
            (None, c) => word.push(c),
        }
    }
    if has_word || !word.is_empty() {
        words.push(word);
    }
    let mut rest = words.as_slice();
    while rest
        .first()
        .is_some_and(|w| w.contains('=') && !w.starts_with('-') && !w.starts_with(program))
    {
        rest = &rest[1..];
    }
    if rest.first().is_some_and(|w| w == "cargo") {
        let bin = rest.iter().position(|w| w == "--bin")?;
        if rest.get(bin + 1).map(String::as_str) != Some(program) {
            return None;
        }
        let dashes = rest.iter().position(|w| w == "--").unwrap_or(rest.len());
        let mut argv = vec![program.to_string()];
        argv.extend(rest.iter().skip(dashes + 1).cloned());
        return Some(argv);
    }
    (rest.first().map(String::as_str) == Some(program)).then(|| rest.to_vec())
}

/// Runs `value` through `arg`'s own value parser, as clap does for its variable.
pub fn parse_value(arg: &clap::Arg, value: &str) -> Result<clap::ArgMatches, clap::Error> {
    let arg = arg
        .clone()
        .id("v")
        .long("v")
        .env(None)
        .num_args(1)
        .action(clap::ArgAction::Set);
    clap::Command::new("t")
        .arg(arg)
        .try_get_matches_from(["t", "--v", value])
}
