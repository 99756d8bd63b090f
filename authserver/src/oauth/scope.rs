//! OAuth scopes (RFC 6749 §3.3) as a set: parsed and checked once, so that no handler splits a
//! scope string by hand and "narrower than" means the same everywhere.

use std::collections::BTreeSet;
use std::fmt;

/// A scope string that RFC 6749 §3.3 does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope token `{token}` has a character RFC 6749 §3.3 does not allow (printable ASCII except `\"` and `\\`)")]
pub struct ScopeError {
    pub token: String,
}

/// A set of scope tokens. Order and repetition in the wire form carry no meaning.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Scope(BTreeSet<String>);

impl Scope {
    /// Parses a space-delimited scope parameter; tokens are split on any run of spaces.
    pub fn parse(wire: &str) -> Result<Self, ScopeError> {
        let mut tokens = BTreeSet::new();
        for token in wire.split(' ').filter(|t| !t.is_empty()) {
            let allowed = token
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
            if !allowed {
                return Err(ScopeError {
                    token: token.chars().take(64).collect(),
                });
            }
            tokens.insert(token.to_owned());
        }
        Ok(Self(tokens))
    }

    /// The scope of stored data, which was checked when it was first parsed.
    pub fn from_stored(wire: &str) -> Self {
        Self(wire.split_ascii_whitespace().map(str::to_owned).collect())
    }

    pub fn contains(&self, token: &str) -> bool {
        self.0.contains(token)
    }

    /// True when every token of `self` is in `other`.
    pub fn is_subset(&self, other: &Scope) -> bool {
        self.0.is_subset(&other.0)
    }

    /// The first token of `self` that `other` lacks, for an error that names it.
    pub fn first_outside<'a>(&'a self, other: &'a Scope) -> Option<&'a str> {
        self.0.difference(&other.0).next().map(String::as_str)
    }

    pub fn intersection(&self, other: &Scope) -> Scope {
        Self(self.0.intersection(&other.0).cloned().collect())
    }

    pub fn without(&self, token: &str) -> Scope {
        Self(self.0.iter().filter(|t| *t != token).cloned().collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl fmt::Display for Scope {
    /// The wire form: tokens joined by one space, in a stable order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for token in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(token)?;
            first = false;
        }
        Ok(())
    }
}

impl<'a> FromIterator<&'a str> for Scope {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> Self {
        Self(iter.into_iter().map(str::to_owned).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_repetition_do_not_matter() {
        let a = Scope::parse("mcp:tools  offline_access mcp:tools").unwrap();
        let b = Scope::parse("offline_access mcp:tools").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "mcp:tools offline_access");
    }

    #[test]
    fn a_quote_backslash_or_control_character_is_refused_and_quoted() {
        for bad in ["a\"b", "a\\b", "a\tb", "é"] {
            let err = Scope::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&err.token), "{err}");
        }
    }

    #[test]
    fn set_operations_name_what_is_missing() {
        let granted = Scope::parse("mcp:tools offline_access").unwrap();
        let asked = Scope::parse("mcp:tools mcp:admin").unwrap();
        assert!(!asked.is_subset(&granted));
        assert_eq!(asked.first_outside(&granted), Some("mcp:admin"));
        assert_eq!(asked.intersection(&granted).to_string(), "mcp:tools");
        assert!(!granted.without("offline_access").contains("offline_access"));
        assert_eq!(Scope::parse("").unwrap(), Scope::default());
    }
}
