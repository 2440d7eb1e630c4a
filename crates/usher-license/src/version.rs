//! Feature versions, compared numerically per dot-separated component.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A feature version such as `2025`, `2025.10` or `1.0.3`.
///
/// Versions compare numerically component by component, so `2025.10 > 2025.9`, and a
/// missing component counts as zero, so `2025 == 2025.0`. The original text is kept for
/// display, because administrators expect to see what the vendor wrote.
#[derive(Debug, Clone, Eq)]
pub struct Version {
    parts: Vec<u32>,
    text: String,
}

/// Why a version string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version {text:?}: expected dot-separated numbers such as 2025 or 2025.10")]
pub struct VersionError {
    /// The offending text.
    pub text: String,
}

impl Version {
    /// The numeric components.
    pub fn parts(&self) -> &[u32] {
        &self.parts
    }

    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn significant(&self) -> &[u32] {
        let end = self
            .parts
            .iter()
            .rposition(|&p| p != 0)
            .map_or(0, |i| i + 1);
        &self.parts[..end]
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || VersionError {
            text: s.to_string(),
        };
        if s.is_empty() || s.len() > 64 {
            return Err(err());
        }
        let parts = s
            .split('.')
            .map(|p| {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    Err(err())
                } else {
                    p.parse::<u32>().map_err(|_| err())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Version {
            parts,
            text: s.to_string(),
        })
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.significant() == other.significant()
    }
}

impl std::hash::Hash for Version {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.significant().hash(state);
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.parts.len().max(other.parts.len());
        for i in 0..n {
            let a = self.parts.get(i).copied().unwrap_or(0);
            let b = other.parts.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => continue,
                o => return o,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn numeric_per_component() {
        assert!(v("2025.10") > v("2025.9"));
        assert!(v("10") > v("9"));
        assert_eq!(v("2025"), v("2025.0"));
        assert!(v("2025.0.1") > v("2025"));
        assert!(v("1.2") < v("1.10"));
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", ".", "1.", ".1", "a", "1.a", "1..2", "-1", "99999999999"] {
            assert!(s.parse::<Version>().is_err(), "{s:?} should be rejected");
        }
    }
}
