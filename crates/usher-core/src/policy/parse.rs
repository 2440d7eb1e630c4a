//! Reading a policy file: each logical line into rules, or the line and column of the
//! first mistake.

use usher_license::{LexError, LogicalLine, Pos, Token, each_logical_line};

use super::{AddressPattern, Counted, NamedFeature, Policy, PolicyError, Scope, Target};

impl Policy {
    /// Parses a policy file. `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Policy, PolicyError> {
        let at = |pos: Pos, message: String| PolicyError {
            file: file.to_string(),
            line: pos.line,
            column: pos.column,
            message,
        };
        let mut policy = Policy::default();
        // Group names used by rules, checked once every GROUP line has been read.
        let mut used_groups: Vec<(Pos, bool, String)> = Vec::new();
        // Each line is parsed as soon as it is lexed and then dropped: memory follows the
        // policy built, not every token of the file at once.
        let mut failed = None;
        each_logical_line(text, |line| {
            let parsed = policy.parse_line(&line, &at, &mut used_groups);
            failed = parsed.err();
            failed.is_none()
        })
        .map_err(|LexError { pos, message }| at(pos, message))?;
        if let Some(e) = failed {
            return Err(e);
        }
        for (pos, host, name) in used_groups {
            let defined = if host {
                policy.host_groups.contains_key(&name)
            } else {
                policy.groups.contains_key(&name)
            };
            if !defined {
                let kind = if host { "HOST_GROUP" } else { "GROUP" };
                return Err(at(
                    pos,
                    format!("{kind} {name} is not defined in this file"),
                ));
            }
        }
        Ok(policy)
    }

    /// Parses one logical line into `self`.
    fn parse_line(
        &mut self,
        line: &LogicalLine,
        at: &impl Fn(Pos, String) -> PolicyError,
        used_groups: &mut Vec<(Pos, bool, String)>,
    ) -> Result<(), PolicyError> {
        let policy = self;
        let mut words = Words::new(line, &at);
        let (keyword_pos, keyword) = words.word("a keyword")?;
        let keyword = keyword.to_ascii_uppercase();
        match keyword.as_str() {
            "GROUP" | "HOST_GROUP" => {
                let (_, name) = words.word("a group name")?;
                let members = words.rest();
                if members.is_empty() {
                    return Err(at(line.end(), format!("{keyword} {name} lists no members")));
                }
                let map = if keyword == "GROUP" {
                    &mut policy.groups
                } else {
                    &mut policy.host_groups
                };
                // Several lines for one group add up, as in FlexLM.
                map.entry(name).or_default().extend(members);
            }
            "GROUPCASEINSENSITIVE" => {
                let (pos, value) = words.word("ON or OFF")?;
                policy.groups_case_insensitive = match value.to_ascii_uppercase().as_str() {
                    "ON" => true,
                    "OFF" => false,
                    _ => return Err(at(pos, format!("expected ON or OFF, found {value:?}"))),
                };
            }
            "INCLUDE" | "EXCLUDE" | "INCLUDEALL" | "EXCLUDEALL" => {
                let scope = if keyword.ends_with("ALL") {
                    Scope::All
                } else {
                    Scope::Feature(words.feature()?)
                };
                let target = words.target(used_groups)?;
                let list = if keyword.starts_with("INCLUDE") {
                    &mut policy.includes
                } else {
                    &mut policy.excludes
                };
                list.push((scope, target));
            }
            "RESERVE" | "MAX" | "PRIORITY" => {
                let number = words.number(if keyword == "PRIORITY" {
                    "a rank"
                } else {
                    "a number of seats"
                })?;
                let feature = words.feature()?;
                let target = words.target(used_groups)?;
                let rule = Counted {
                    number,
                    feature,
                    target,
                    line: keyword_pos.line,
                };
                match keyword.as_str() {
                    "RESERVE" => policy.reserves.push(rule),
                    "MAX" => policy.maxes.push(rule),
                    _ => policy.priorities.push(rule),
                }
            }
            "TIMEOUT" => {
                let feature = words.feature()?;
                let secs = words.number("a number of seconds")?;
                policy.timeouts.push((
                    Scope::Feature(feature),
                    u64::from(secs) * 1000,
                    keyword_pos.line,
                ));
            }
            "TIMEOUTALL" => {
                let secs = words.number("a number of seconds")?;
                policy
                    .timeouts
                    .push((Scope::All, u64::from(secs) * 1000, keyword_pos.line));
            }
            "LINGER" => {
                let feature = words.feature()?;
                let secs = words.number("a number of seconds")?;
                policy.lingers.insert(feature, u64::from(secs) * 1000);
            }
            "MAX_BORROW_HOURS" | "BORROW_LOWWATER" | "MAX_OVERDRAFT" => {
                let feature = words.feature()?;
                let n = words.number(if keyword == "MAX_BORROW_HOURS" {
                    "a number of hours"
                } else {
                    "a number of seats"
                })?;
                let map = match keyword.as_str() {
                    "MAX_BORROW_HOURS" => &mut policy.max_borrow_hours,
                    "BORROW_LOWWATER" => &mut policy.borrow_lowwater,
                    _ => &mut policy.max_overdraft,
                };
                map.insert(feature, n);
            }
            other => {
                return Err(at(
                    keyword_pos,
                    format!(
                        "unknown keyword {other:?}; expected one of GROUP, HOST_GROUP, \
                         GROUPCASEINSENSITIVE, INCLUDE, INCLUDEALL, EXCLUDE, EXCLUDEALL, \
                         RESERVE, MAX, PRIORITY, TIMEOUT, TIMEOUTALL, LINGER, \
                         MAX_BORROW_HOURS, BORROW_LOWWATER, MAX_OVERDRAFT"
                    ),
                ));
            }
        }
        policy
            .named_features
            .extend(words.features.drain(..).map(|(pos, feature)| NamedFeature {
                feature,
                keyword: keyword.clone(),
                line: pos.line,
                column: pos.column,
            }));
        words.finish()
    }
}

/// Reading the words of one line, with errors that point at them.
struct Words<'l, F> {
    tokens: std::slice::Iter<'l, Token>,
    line: &'l LogicalLine,
    at: &'l F,
    /// The feature names read, with where.
    features: Vec<(Pos, String)>,
}

impl<'l, F: Fn(Pos, String) -> PolicyError> Words<'l, F> {
    fn new(line: &'l LogicalLine, at: &'l F) -> Self {
        Words {
            tokens: line.tokens.iter(),
            line,
            at,
            features: Vec::new(),
        }
    }

    fn word(&mut self, what: &str) -> Result<(Pos, String), PolicyError> {
        match self.tokens.next() {
            None => Err((self.at)(
                self.line.end(),
                format!("expected {what} here, found the end of the line"),
            )),
            Some(t) if t.key.is_some() => Err((self.at)(
                t.pos,
                format!(
                    "expected {what}, found {:?} (qualifiers such as feature:KEY=value are not supported)",
                    t.as_written()
                ),
            )),
            Some(t) => Ok((t.pos, t.value.clone())),
        }
    }

    fn feature(&mut self) -> Result<String, PolicyError> {
        let (pos, name) = self.word("a feature name")?;
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err((self.at)(pos, format!("{name:?} is not a feature name")));
        }
        self.features.push((pos, name.clone()));
        Ok(name)
    }

    fn number(&mut self, what: &str) -> Result<u32, PolicyError> {
        let (pos, text) = self.word(what)?;
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err((self.at)(pos, format!("expected {what}, found {text:?}")));
        }
        text.parse()
            .map_err(|_| (self.at)(pos, format!("{text} is too large")))
    }

    fn target(&mut self, groups: &mut Vec<(Pos, bool, String)>) -> Result<Target, PolicyError> {
        let (pos, kind) = self.word("USER, HOST, DISPLAY, GROUP, HOST_GROUP or INTERNET")?;
        let (name_pos, name) = self.word("a name")?;
        Ok(match kind.to_ascii_uppercase().as_str() {
            "USER" => Target::User(name),
            "HOST" => Target::Host(name),
            "DISPLAY" => Target::Display(name),
            "GROUP" => {
                groups.push((name_pos, false, name.clone()));
                Target::Group(name)
            }
            "HOST_GROUP" => {
                groups.push((name_pos, true, name.clone()));
                Target::HostGroup(name)
            }
            "INTERNET" => Target::Internet(AddressPattern::parse(&name).ok_or_else(|| {
                (self.at)(
                    name_pos,
                    format!("{name:?} is not an address, a CIDR block or a pattern like 10.1.*.*"),
                )
            })?),
            _ => {
                return Err((self.at)(
                    pos,
                    format!(
                        "expected USER, HOST, DISPLAY, GROUP, HOST_GROUP or INTERNET, found {kind:?}"
                    ),
                ));
            }
        })
    }

    fn rest(&mut self) -> Vec<String> {
        self.tokens.by_ref().map(|t| t.value.clone()).collect()
    }

    fn finish(mut self) -> Result<(), PolicyError> {
        match self.tokens.next() {
            None => Ok(()),
            Some(t) => Err((self.at)(
                t.pos,
                format!("unexpected {:?} at the end of the line", t.as_written()),
            )),
        }
    }
}
