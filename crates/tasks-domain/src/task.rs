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

    /// The task after `patch`, as of `now`. Stores apply patches in SQL; this
    /// is the same rule in memory, used by models and tests.
    #[must_use]
    pub fn patched(mut self, patch: TaskPatch, now: DateTime<Utc>) -> Self {
        if let Some(title) = patch.title {
            self.title = title;
        }
        if let Some(description) = patch.description {
            self.description = description;
        }
        if let Some(completed) = patch.completed {
            self.completed = completed;
        }
        self.updated_at = now;
        self
    }

    /// The task after a completion toggle, as of `now`.
    #[must_use]
    pub fn toggled(mut self, now: DateTime<Utc>) -> Self {
        self.completed = !self.completed;
        self.updated_at = now;
        self
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
#[error("status must be \"completed\" or \"active\"")]
pub struct StatusFilterError;

impl StatusFilter {
    /// Parses the `status` query parameter: absent means all tasks; present, it
    /// must be exactly `completed` or `active`.
    ///
    /// # Errors
    /// Any other value, including the empty string.
    pub fn parse(raw: Option<&str>) -> Result<Self, StatusFilterError> {
        match raw {
            None => Ok(Self::All),
            Some("completed") => Ok(Self::Completed),
            Some("active") => Ok(Self::Active),
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

    #[must_use]
    pub fn admits(self, task: &Task) -> bool {
        self.completed().is_none_or(|c| c == task.completed)
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
    fn empty_patch_changes_only_updated_at() {
        let t = task("a");
        let later = t.created_at + chrono::TimeDelta::seconds(5);
        let p = t.clone().patched(TaskPatch::default(), later);
        assert_eq!(p.title, t.title);
        assert_eq!(p.description, t.description);
        assert_eq!(p.completed, t.completed);
        assert_eq!(p.created_at, t.created_at);
        assert_eq!(p.updated_at, later);
    }

    #[test]
    fn patch_can_clear_description_and_set_fields() {
        let t = task("a");
        let now = t.created_at;
        let p = t.patched(
            TaskPatch {
                title: Some(Title::parse("new").unwrap()),
                description: Some(None),
                completed: Some(true),
            },
            now,
        );
        assert_eq!(p.title.as_str(), "new");
        assert_eq!(p.description, None);
        assert!(p.completed);
    }

    #[test]
    fn toggle_twice_is_identity_on_completed() {
        let t = task("a");
        let now = t.created_at;
        let twice = t.clone().toggled(now).toggled(now);
        assert_eq!(twice.completed, t.completed);
        assert!(t.toggled(now).completed);
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
        for bad in ["", "done", "Completed", "ACTIVE", "all", " active"] {
            assert_eq!(StatusFilter::parse(Some(bad)), Err(StatusFilterError));
        }
    }

    #[test]
    fn status_filter_admits() {
        let mut t = task("a");
        assert!(StatusFilter::All.admits(&t));
        assert!(StatusFilter::Active.admits(&t));
        assert!(!StatusFilter::Completed.admits(&t));
        t.completed = true;
        assert!(StatusFilter::Completed.admits(&t));
        assert!(!StatusFilter::Active.admits(&t));
    }
}
