use std::fmt;

/// A task's identifier: a positive 64-bit integer assigned by the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(i64);

/// Why a path segment is not a task id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskIdError {
    #[error("task id must be an integer")]
    NotAnInteger,
    #[error("task id is out of range (1 to 9223372036854775807)")]
    OutOfRange,
}

impl TaskId {
    #[must_use]
    pub const fn new(id: i64) -> Self {
        Self(id)
    }

    /// Parses a task id as it appears in a URL path: ASCII digits with an
    /// optional sign, nothing else (no spaces, no `+`, no exponent).
    ///
    /// # Errors
    /// [`TaskIdError::NotAnInteger`] for anything that is not an integer,
    /// [`TaskIdError::OutOfRange`] for integers below 1 or beyond `i64`.
    pub fn parse(raw: &str) -> Result<Self, TaskIdError> {
        let digits = raw.strip_prefix('-').unwrap_or(raw);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TaskIdError::NotAnInteger);
        }
        match raw.parse::<i64>() {
            Ok(id) if id >= 1 => Ok(Self(id)),
            _ => Err(TaskIdError::OutOfRange),
        }
    }

    #[must_use]
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// White space as the plan's Python stack sees it: exactly the characters for
/// which `str.isspace()` is true. A title is trimmed with it (`str.strip()`),
/// and a token subject made only of it is refused. Rust's `char::is_whitespace` lacks
/// U+001C to U+001F (the information separators), which Python strips.
///
/// Inclusive ranges. The database CHECK constraint on titles uses the same set;
/// change both together.
pub const PYTHON_WHITESPACE: &[(char, char)] = &[
    ('\u{0009}', '\u{000D}'),
    ('\u{001C}', '\u{001F}'),
    ('\u{0020}', '\u{0020}'),
    ('\u{0085}', '\u{0085}'),
    ('\u{00A0}', '\u{00A0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200A}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202F}', '\u{202F}'),
    ('\u{205F}', '\u{205F}'),
    ('\u{3000}', '\u{3000}'),
];

/// Whether `c` is in [`PYTHON_WHITESPACE`] (Python's `str.isspace()`).
#[must_use]
pub fn is_python_whitespace(c: char) -> bool {
    PYTHON_WHITESPACE
        .iter()
        .any(|&(low, high)| (low..=high).contains(&c))
}

/// Characters that render as nothing but are not white space to Python: a
/// title made only of these and white space is rejected as blank.
pub const INVISIBLE: &[char] = &['\u{200B}', '\u{FEFF}', '\u{180E}'];

/// A control character a title may not contain (after trimming): C0 controls
/// other than tab and line feed, DEL, and C1 controls.
fn is_forbidden_control(c: char) -> bool {
    matches!(c, '\u{0000}'..='\u{0008}' | '\u{000B}'..='\u{001F}' | '\u{007F}'..='\u{009F}')
}

/// A task title: trimmed as Python's `str.strip()` trims, 1 to 200 characters
/// (Unicode scalar values, not bytes), at least one visible character, no
/// control characters but tab and line feed.
#[derive(Clone, PartialEq, Eq)]
pub struct Title(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TitleError {
    #[error("title must not be empty")]
    Empty,
    #[error("title must contain a visible character, not only white space or invisible characters")]
    Invisible,
    #[error("title must be at most {max} characters (got {actual})")]
    TooLong { max: usize, actual: usize },
    #[error("title must not contain NUL characters")]
    ContainsNul,
    #[error(
        "title must not contain control characters (U+{0:04X}); only tab and line feed are allowed"
    )]
    ContainsControl(u32),
}

impl Title {
    pub const MAX_CHARS: usize = 200;

    /// # Errors
    /// Empty after trimming [`PYTHON_WHITESPACE`], only white space and
    /// [`INVISIBLE`] characters, longer than [`Title::MAX_CHARS`], containing
    /// NUL (which PostgreSQL cannot store in `text`) or another control
    /// character than tab and line feed.
    pub fn parse(raw: &str) -> Result<Self, TitleError> {
        let trimmed = raw.trim_matches(is_python_whitespace);
        Self::check(trimmed)?;
        Ok(Self(trimmed.to_owned()))
    }

    /// Whether a stored title is one [`Title::parse`] would return as it is
    /// (valid and already trimmed), checked without a copy: the store checks
    /// every row it reads.
    #[must_use]
    pub fn accepts(stored: &str) -> bool {
        stored.trim_matches(is_python_whitespace).len() == stored.len()
            && Self::check(stored).is_ok()
    }

    /// The rules, on a trimmed title.
    fn check(trimmed: &str) -> Result<(), TitleError> {
        if trimmed.is_empty() {
            return Err(TitleError::Empty);
        }
        let actual = trimmed.chars().count();
        if actual > Self::MAX_CHARS {
            return Err(TitleError::TooLong {
                max: Self::MAX_CHARS,
                actual,
            });
        }
        if trimmed.contains('\0') {
            return Err(TitleError::ContainsNul);
        }
        if let Some(c) = trimmed.chars().find(|&c| is_forbidden_control(c)) {
            return Err(TitleError::ContainsControl(u32::from(c)));
        }
        if trimmed
            .chars()
            .all(|c| is_python_whitespace(c) || INVISIBLE.contains(&c))
        {
            return Err(TitleError::Invisible);
        }
        Ok(())
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    #[must_use]
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A task description: at most 10,000 characters, kept exactly as sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Description(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptionError {
    #[error("description must be at most {max} characters (got {actual})")]
    TooLong { max: usize, actual: usize },
    #[error("description must not contain NUL characters")]
    ContainsNul,
}

impl Description {
    pub const MAX_CHARS: usize = 10_000;

    /// # Errors
    /// Longer than [`Description::MAX_CHARS`] or containing NUL.
    pub fn parse(raw: String) -> Result<Self, DescriptionError> {
        Self::check(&raw)?;
        Ok(Self(raw))
    }

    /// Whether a stored description is one [`Description::parse`] accepts,
    /// checked without a copy.
    #[must_use]
    pub fn accepts(stored: &str) -> bool {
        Self::check(stored).is_ok()
    }

    fn check(raw: &str) -> Result<(), DescriptionError> {
        let actual = raw.chars().count();
        if actual > Self::MAX_CHARS {
            return Err(DescriptionError::TooLong {
                max: Self::MAX_CHARS,
                actual,
            });
        }
        if raw.contains('\0') {
            return Err(DescriptionError::ContainsNul);
        }
        Ok(())
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    #[must_use]
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// Values read back from storage. The database's constraints repeat the
/// rules, but rules change between releases (a release may trim or reject
/// more than the one that wrote the row), and a user's existing task must
/// stay readable: the store checks a stored value with `parse`, logs a
/// violation with the task id, and keeps the value as stored.
macro_rules! from_storage {
    ($($ty:ident),*) => {$(
        impl $ty {
            #[must_use]
            pub fn from_storage(stored: String) -> Self {
                Self(stored)
            }
        }
    )*};
}
from_storage!(Title, Description);

// Task text is the user's private content: never print it through `{:?}`.
macro_rules! redacted_debug {
    ($($ty:ident),*) => {$(
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($ty), "({} chars)"), self.0.chars().count())
            }
        }
    )*};
}
redacted_debug!(Title, Description);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_id_parses_positive_integers() {
        assert_eq!(TaskId::parse("1").unwrap().get(), 1);
        assert_eq!(
            TaskId::parse("9223372036854775807").unwrap().get(),
            i64::MAX
        );
    }

    #[test]
    fn task_id_rejects_non_integers() {
        for raw in ["", "abc", "1.5", "1e3", " 1", "+1", "0x10", "1 ", "-", "١"] {
            assert_eq!(
                TaskId::parse(raw),
                Err(TaskIdError::NotAnInteger),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn task_id_rejects_out_of_range() {
        for raw in ["0", "-1", "9223372036854775808", "99999999999999999999999"] {
            assert_eq!(TaskId::parse(raw), Err(TaskIdError::OutOfRange), "{raw:?}");
        }
    }

    #[test]
    fn accepts_is_parse_returning_the_value_unchanged() {
        let long = "é".repeat(Title::MAX_CHARS + 1);
        for raw in [
            "Buy milk",
            " Buy milk",
            "Buy milk\n",
            "",
            "   ",
            "\u{200B}",
            "a\0b",
            "a\u{7}b",
            "tab\there",
            "line\nfeed",
            &long,
            &long[2..],
        ] {
            let via_parse = Title::parse(raw).is_ok_and(|t| t.as_str() == raw);
            assert_eq!(Title::accepts(raw), via_parse, "{raw:?}");
            let via_parse = Description::parse(raw.to_owned()).is_ok();
            assert_eq!(Description::accepts(raw), via_parse, "{raw:?}");
        }
        assert!(!Description::accepts(
            &"x".repeat(Description::MAX_CHARS + 1)
        ));
        assert!(Description::accepts(&"x".repeat(Description::MAX_CHARS)));
    }

    #[test]
    fn title_is_trimmed() {
        assert_eq!(Title::parse("  buy milk \n").unwrap().as_str(), "buy milk");
    }

    #[test]
    fn title_bounds_count_characters_not_bytes() {
        assert!(Title::parse(&"😀".repeat(200)).is_ok());
        assert_eq!(
            Title::parse(&"😀".repeat(201)),
            Err(TitleError::TooLong {
                max: 200,
                actual: 201
            })
        );
        assert!(Title::parse(&"a".repeat(200)).is_ok());
        // Surrounding white space does not count against the limit.
        assert!(Title::parse(&format!("  {}  ", "a".repeat(200))).is_ok());
    }

    #[test]
    fn title_rejects_empty_and_blank() {
        assert_eq!(Title::parse(""), Err(TitleError::Empty));
        assert_eq!(Title::parse(" \t\n "), Err(TitleError::Empty));
    }

    #[test]
    fn title_rejects_nul() {
        assert_eq!(Title::parse("a\0b"), Err(TitleError::ContainsNul));
    }

    #[test]
    fn title_whitespace_is_pythons_isspace() {
        // Python's str.isspace() set is Rust's char::is_whitespace plus the
        // four information separators U+001C..U+001F.
        for c in (0..=0x10_FFFF).filter_map(char::from_u32) {
            let python = c.is_whitespace() || ('\u{1C}'..='\u{1F}').contains(&c);
            assert_eq!(is_python_whitespace(c), python, "U+{:04X}", u32::from(c));
        }
    }

    #[test]
    fn title_is_stripped_like_python() {
        // str.strip() removes the information separators; Rust's trim() does not.
        assert_eq!(
            Title::parse("\u{1c}\u{1d}a b\u{1e}\u{1f}")
                .unwrap()
                .as_str(),
            "a b"
        );
        assert_eq!(
            Title::parse("\u{85}\u{a0}\u{3000}x\u{2028}\u{202f}\u{205f}\u{1680}\u{2009}")
                .unwrap()
                .as_str(),
            "x"
        );
        // Not white space to Python: kept.
        assert_eq!(Title::parse("\u{200b}x").unwrap().as_str(), "\u{200b}x");
        assert_eq!(Title::parse("x\u{feff}").unwrap().as_str(), "x\u{feff}");
        // Stripped characters do not count against the limit.
        assert!(Title::parse(&format!("\u{1c}{}\u{1f}", "a".repeat(200))).is_ok());
    }

    #[test]
    fn title_rejects_control_characters_but_tab_and_newline() {
        assert_eq!(Title::parse("a\tb\nc").unwrap().as_str(), "a\tb\nc");
        for c in ('\u{1}'..='\u{8}')
            .chain('\u{b}'..='\u{1f}')
            .chain('\u{7f}'..='\u{9f}')
        {
            assert_eq!(
                Title::parse(&format!("a{c}b")),
                Err(TitleError::ContainsControl(u32::from(c))),
                "U+{:04X}",
                u32::from(c)
            );
        }
        // At the ends, the white-space controls are trimmed, the others are not.
        assert_eq!(Title::parse("\r\x0bx\x0c\u{85}").unwrap().as_str(), "x");
        assert_eq!(
            Title::parse("\x1bx"),
            Err(TitleError::ContainsControl(0x1b))
        );
        assert_eq!(
            Title::parse("x\x7f"),
            Err(TitleError::ContainsControl(0x7f))
        );
    }

    #[test]
    fn title_rejects_only_invisible_characters() {
        for raw in [
            "\u{200b}",
            "\u{200b} \u{feff}",
            "\u{180e}",
            "\u{feff}\u{3000}\u{200b}",
        ] {
            assert_eq!(Title::parse(raw), Err(TitleError::Invisible), "{raw:?}");
        }
        assert_eq!(Title::parse("\u{1c}\u{1f}"), Err(TitleError::Empty));
        assert!(Title::parse("\u{200b}a\u{200b}").is_ok());
    }

    #[test]
    fn description_bounds() {
        assert!(Description::parse("é".repeat(10_000)).is_ok());
        assert_eq!(
            Description::parse("é".repeat(10_001)),
            Err(DescriptionError::TooLong {
                max: 10_000,
                actual: 10_001
            })
        );
        assert_eq!(Description::parse(String::new()).unwrap().as_str(), "");
        assert_eq!(
            Description::parse("  kept  ".into()).unwrap().as_str(),
            "  kept  "
        );
        assert_eq!(
            Description::parse("x\0".into()),
            Err(DescriptionError::ContainsNul)
        );
    }

    #[test]
    fn debug_hides_text() {
        let t = Title::parse("my secret plan").unwrap();
        assert_eq!(format!("{t:?}"), "Title(14 chars)");
    }
}
