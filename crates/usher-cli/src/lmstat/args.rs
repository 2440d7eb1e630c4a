//! The command line of `lmstat`: the arguments FlexLM's `lmutil lmstat` takes, in any
//! order, and what they ask for.

/// The usage text printed for `-help` and after an argument error.
pub const USAGE: &str = "\
usage: lmstat [-a] [-A] [-c license_file_list|port@host[,port@host...]] [-f [feature]]
              [-i [feature]] [-s [server]] [-S [vendor]] [-t timeout_value] [-v] [-help]
  -a              display everything: server status and the usage of every feature
  -A              like -a, but only features with licenses in use
  -c spec         the license server (port@host, comma-separated) or a license file
  -f [feature]    the users of one feature (of every feature without a name)
  -i [feature]    the license table (count, version, expiry) of one or every feature
  -s [server]     license server status only
  -S [vendor]     like -a, restricted to one vendor's features
  -t timeout      accepted for compatibility; the connection timeout in seconds
  -v              print the lmstat version
";

/// The command-line arguments of `lmstat`, as FlexLM's `lmutil lmstat` takes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LmstatArgs {
    /// `-a`: server status plus the usage of every feature.
    pub all: bool,
    /// `-A`: like `-a`, but only features with licenses in use.
    pub active_only: bool,
    /// `-c SPEC`: `port@host[,port@host...]` or a license file path.
    pub server: Option<String>,
    /// `-f` was given, with or without a feature name.
    pub feature_usage: bool,
    /// `-f FEATURE`: only this feature.
    pub feature: Option<String>,
    /// `-i`: the license table instead of usage.
    pub info: bool,
    /// `-i FEATURE`: only this feature's rows.
    pub info_feature: Option<String>,
    /// `-v`: print the version.
    pub version: bool,
    /// `-s`: license server status only.
    pub server_status: bool,
    /// `-s SERVER`: the server whose status is wanted (usher has one per report).
    pub status_server: Option<String>,
    /// `-S` was given, with or without a vendor name.
    pub vendor_status: bool,
    /// `-S VENDOR`: only this vendor's features.
    pub vendor: Option<String>,
    /// `-t SECONDS`: connection timeout. FlexLM tools pass it; usher may use it.
    pub timeout_secs: Option<u64>,
    /// `-help` / `-h`: print [`USAGE`].
    pub help: bool,
    /// Append `, PID: n` to user lines. Not a FlexLM flag and never set by [`parse_args`]:
    /// the caller sets it from configuration (see the module docs for why it is off).
    pub show_pid: bool,
}

/// What an `lmstat` invocation asks for, in the order FlexLM gives precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LmstatMode {
    /// Print [`USAGE`].
    Help,
    /// Print [`render_version`](super::render_version); needs no server.
    Version,
    /// Print [`render_info`](super::render_info).
    Info,
    /// Print [`render_status`](super::render_status).
    Status,
}

impl LmstatArgs {
    /// What to print.
    pub fn mode(&self) -> LmstatMode {
        if self.help {
            LmstatMode::Help
        } else if self.version {
            LmstatMode::Version
        } else if self.info {
            LmstatMode::Info
        } else {
            LmstatMode::Status
        }
    }
}

/// Parses `lmstat` arguments, in any order.
///
/// `args` are the arguments after the command name: the caller strips the program name and,
/// for the `lmutil lmstat ARGS` and `usher lmstat ARGS` forms, the `lmstat` subcommand word.
/// A leading `lmstat` left in place is skipped all the same. Flags whose argument is
/// optional in FlexLM (`-f`, `-i`, `-s`, `-S`) take the next word unless it starts with `-`.
/// `-verbose` and `-q` are accepted and ignored. Anything else is an error: one line such
/// as `lmstat: invalid option "-z"`, which the caller prints with [`USAGE`] before exiting
/// non-zero.
pub fn parse_args(args: &[String]) -> Result<LmstatArgs, String> {
    let mut parsed = LmstatArgs::default();
    let mut words = args.iter().map(String::as_str).peekable();
    if words.peek() == Some(&"lmstat") {
        words.next();
    }
    while let Some(word) = words.next() {
        // The value of a flag whose argument FlexLM makes optional.
        let mut optional_value = || {
            words
                .next_if(|next| !next.starts_with('-'))
                .map(str::to_owned)
        };
        match word {
            "-a" => parsed.all = true,
            "-A" => parsed.active_only = true,
            "-c" => {
                let spec = optional_value()
                    .ok_or_else(|| usage_error("-c needs a license file or port@host"))?;
                parsed.server = Some(spec);
            }
            "-f" => {
                parsed.feature_usage = true;
                parsed.feature = optional_value();
            }
            "-i" => {
                parsed.info = true;
                parsed.info_feature = optional_value();
            }
            "-s" => {
                parsed.server_status = true;
                parsed.status_server = optional_value();
            }
            "-S" => {
                parsed.vendor_status = true;
                parsed.vendor = optional_value();
            }
            "-t" => {
                let value =
                    optional_value().ok_or_else(|| usage_error("-t needs a timeout in seconds"))?;
                let secs = value.parse().map_err(|_| {
                    usage_error(&format!("-t needs a timeout in seconds, not \"{value}\""))
                })?;
                parsed.timeout_secs = Some(secs);
            }
            "-v" => parsed.version = true,
            "-help" | "-h" | "--help" => parsed.help = true,
            // Noise some wrappers pass; accepted so that it does not fail a scrape.
            "-verbose" | "-q" => {}
            other if other.starts_with('-') => {
                return Err(usage_error(&format!("invalid option \"{other}\"")));
            }
            other => return Err(usage_error(&format!("unexpected argument \"{other}\""))),
        }
    }
    Ok(parsed)
}

fn usage_error(what: &str) -> String {
    format!("lmstat: {what}")
}
