use chrono::{DateTime, Utc};

use crate::{Description, OwnerId, TaskId, Title};

/// A stored task. Only the store creates these; handlers receive them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: TaskId,
    pub owner: OwnerId,
    pub title: Title,
    pub description: Option<Description>,
    pub completed: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Task {
    /// The ownership rule: a task is visible to its owner and to nobody else.
    /// Stores enforce it in their queries; the delivery layer checks it again
    /// before anything leaves the process.
    #[must_use]
    pub fn is_visible_to(&self, caller: &OwnerId) -> bool {
        &self.owner == caller
    }
}

/// What a client may supply to create a task. The id, owner, completion state
/// and timestamps are not the client's to choose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    pub title: Title,
    pub description: Option<Description>,
}

/// A partial update: `None` leaves a field as it is. For the description,
/// `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskPatch {
    pub title: Option<Title>,
    pub description: Option<Option<Description>>,
    pub completed: Option<bool>,
}

/// Which tasks a listing includes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StatusFilter {
    #[default]
    All,
    Completed,
    Active,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("status must be \"all\", \"completed\", \"active\" or \"pending\"")]
pub struct StatusFilterError;

impl StatusFilter {
    /// Parses the `status` query parameter: absent or `all` means all tasks;
    /// `completed`; `active` or its synonym `pending`. Exactly these,
    /// lower case.
    ///
    /// # Errors
    /// Any other value, including the empty string.
    pub fn parse(raw: Option<&str>) -> Result<Self, StatusFilterError> {
        match raw {
            None => Ok(Self::All),
            Some("all") => Ok(Self::All),
            Some("completed") => Ok(Self::Completed),
            // `pending` is what many frontends of this design send for
            // "not done yet".
            Some("active" | "pending") => Ok(Self::Active),
            Some(_) => Err(StatusFilterError),
        }
    }

    /// The `completed` value a task must have to be listed, if any.
    #[must_use]
    pub const fn completed(self) -> Option<bool> {
        match self {
            Self::All => None,
            Self::Completed => Some(true),
            Self::Active => Some(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn task(owner: &str) -> Task {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        Task {
            id: TaskId::new(1),
            owner: OwnerId::parse(owner).unwrap(),
            title: Title::parse("t").unwrap(),
            description: Some(Description::parse("d".into()).unwrap()),
            completed: false,
            created_at: t0,
            updated_at: t0,
        }
    }

    #[test]
    fn visible_only_to_owner() {
        let t = task("alice");
        assert!(t.is_visible_to(&OwnerId::parse("alice").unwrap()));
        assert!(!t.is_visible_to(&OwnerId::parse("bob").unwrap()));
        assert!(!t.is_visible_to(&OwnerId::parse("Alice").unwrap()));
    }

    #[test]
    fn status_filter_parsing() {
        assert_eq!(StatusFilter::parse(None), Ok(StatusFilter::All));
        assert_eq!(
            StatusFilter::parse(Some("completed")),
            Ok(StatusFilter::Completed)
        );
        assert_eq!(
            StatusFilter::parse(Some("active")),
            Ok(StatusFilter::Active)
        );
        assert_eq!(StatusFilter::parse(Some("all")), Ok(StatusFilter::All));
        assert_eq!(
            StatusFilter::parse(Some("pending")),
            Ok(StatusFilter::Active)
        );
        for bad in [
            "",
            "done",
            "true",
            "COMPLETED",
            "Completed",
            "ACTIVE",
            "All",
            " active",
        ] {
            assert_eq!(StatusFilter::parse(Some(bad)), Err(StatusFilterError));
        }
    }
}
