use std::fmt;
use std::sync::Arc;

/// The identity that owns tasks: the `sub` claim of a verified token (or the
/// user id behind a Better Auth session). It is the only source of a task's
/// `user_id`; nothing a client sends in a body or path can set it.
///
/// Shared, not copied: every task read carries its owner, so a list of 100
/// tasks clones the caller's id 100 times.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId(Arc<str>);

/// Why a string cannot be an owner id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerIdError {
    #[error("the subject is empty")]
    Empty,
    #[error("the subject is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("the subject contains control characters")]
    ControlCharacters,
    #[error("the subject is only white space")]
    OnlyWhitespace,
}

impl OwnerId {
    /// Longest accepted subject, in bytes. Better Auth ids are 32 characters;
    /// UUIDs are 36. The bound keeps hostile tokens from bloating the index.
    pub const MAX_BYTES: usize = 255;

    /// Parses a token subject. It is taken as it is (no trimming): two subjects
    /// that differ only in white space are two different users.
    ///
    /// # Errors
    /// Empty, longer than [`OwnerId::MAX_BYTES`], containing control
    /// characters, or made only of white space.
    pub fn parse(subject: &str) -> Result<Self, OwnerIdError> {
        if subject.is_empty() {
            return Err(OwnerIdError::Empty);
        }
        if subject.len() > Self::MAX_BYTES {
            return Err(OwnerIdError::TooLong {
                max: Self::MAX_BYTES,
            });
        }
        if subject.chars().any(char::is_control) {
            return Err(OwnerIdError::ControlCharacters);
        }
        if subject.chars().all(crate::is_python_whitespace) {
            return Err(OwnerIdError::OnlyWhitespace);
        }
        Ok(Self(Arc::from(subject)))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// Owner ids are personal data: keep them out of accidental `{:?}` logging.
impl fmt::Debug for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OwnerId(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_subjects() {
        let id = OwnerId::parse("user_8f3a").unwrap();
        assert_eq!(id.as_str(), "user_8f3a");
    }

    #[test]
    fn keeps_subject_verbatim() {
        assert_eq!(OwnerId::parse(" a ").unwrap().as_str(), " a ");
    }

    #[test]
    fn rejects_empty_long_and_control() {
        assert_eq!(OwnerId::parse(""), Err(OwnerIdError::Empty));
        assert_eq!(
            OwnerId::parse(&"x".repeat(256)),
            Err(OwnerIdError::TooLong { max: 255 })
        );
        assert!(OwnerId::parse(&"x".repeat(255)).is_ok());
        assert_eq!(OwnerId::parse("a\0b"), Err(OwnerIdError::ControlCharacters));
        assert_eq!(OwnerId::parse("a\nb"), Err(OwnerIdError::ControlCharacters));
    }

    #[test]
    fn rejects_subjects_made_only_of_white_space() {
        for sub in [
            " ",
            "   ",
            "\u{a0}",
            "\u{3000}\u{2003}",
            "\u{2028}",
            "\u{202f} \u{205f}",
        ] {
            assert_eq!(
                OwnerId::parse(sub),
                Err(OwnerIdError::OnlyWhitespace),
                "{sub:?}"
            );
        }
        // Tabs, newlines and U+001C..U+001F are white space to Python too,
        // and control characters here.
        for sub in ["\t", " \n ", "\u{1c}", "\u{1f} "] {
            assert!(OwnerId::parse(sub).is_err(), "{sub:?}");
        }
        // Not white space to Python's isspace: kept as ordinary subjects.
        for sub in ["\u{200b}", "\u{feff}", " x "] {
            assert!(OwnerId::parse(sub).is_ok(), "{sub:?}");
        }
    }

    #[test]
    fn debug_does_not_print_the_id() {
        let id = OwnerId::parse("secret-user").unwrap();
        assert!(!format!("{id:?}").contains("secret-user"));
    }
}
