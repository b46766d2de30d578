//! The in-process fan-out: a [`TaskRepository`] that pokes the hub after
//! every write through this instance that took effect. On SQLite (one
//! instance per file) these are all the changes there are; on PostgreSQL
//! the listener adds the writes of other instances, and these local pokes
//! keep a single instance live even with `tasks.notify_changes = 'off'`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tasks_domain::{NewTask, OwnerId, StatusFilter, Task, TaskId, TaskPatch};
use tasks_ports::{
    Changes, IdempotencyKey, IdempotentCreate, Precondition, RepoError, TaskRepository, Written,
};

use super::Hub;

/// Forwards everything to `inner`; pokes `hub` after successful writes.
/// Every method is forwarded explicitly (the port has no default write
/// methods), so a write method added to the port fails to compile here
/// until it pokes too.
pub struct Notifying {
    pub inner: Arc<dyn TaskRepository>,
    pub hub: Arc<Hub>,
}

impl Notifying {
    fn poke_if<T>(&self, owner: &OwnerId, written: &Written<T>) {
        if matches!(written, Written::Done(_)) {
            self.hub.poke(owner.as_str());
        }
    }
}

#[async_trait]
impl TaskRepository for Notifying {
    async fn list(
        &self,
        owner: &OwnerId,
        filter: StatusFilter,
        before: Option<TaskId>,
        limit: usize,
    ) -> Result<Vec<Task>, RepoError> {
        self.inner.list(owner, filter, before, limit).await
    }

    async fn get(&self, owner: &OwnerId, id: TaskId) -> Result<Option<Task>, RepoError> {
        self.inner.get(owner, id).await
    }

    async fn create(
        &self,
        owner: &OwnerId,
        task: NewTask,
        max_tasks: u32,
    ) -> Result<Option<Task>, RepoError> {
        let created = self.inner.create(owner, task, max_tasks).await?;
        if created.is_some() {
            self.hub.poke(owner.as_str());
        }
        Ok(created)
    }

    async fn create_idempotent(
        &self,
        owner: &OwnerId,
        task: NewTask,
        max_tasks: u32,
        key: IdempotencyKey<'_>,
    ) -> Result<IdempotentCreate, RepoError> {
        let outcome = self
            .inner
            .create_idempotent(owner, task, max_tasks, key)
            .await?;
        if matches!(outcome, IdempotentCreate::First(Some(_))) {
            self.hub.poke(owner.as_str());
        }
        Ok(outcome)
    }

    async fn purge_expired_idempotency_keys(&self, limit: u32) -> Result<u64, RepoError> {
        self.inner.purge_expired_idempotency_keys(limit).await
    }

    async fn update(
        &self,
        owner: &OwnerId,
        id: TaskId,
        patch: TaskPatch,
        expected: Option<Precondition<'_>>,
    ) -> Result<Written<Task>, RepoError> {
        let written = self.inner.update(owner, id, patch, expected).await?;
        self.poke_if(owner, &written);
        Ok(written)
    }

    async fn toggle(
        &self,
        owner: &OwnerId,
        id: TaskId,
        expected: Option<Precondition<'_>>,
    ) -> Result<Written<Task>, RepoError> {
        let written = self.inner.toggle(owner, id, expected).await?;
        self.poke_if(owner, &written);
        Ok(written)
    }

    async fn delete(
        &self,
        owner: &OwnerId,
        id: TaskId,
        expected: Option<Precondition<'_>>,
    ) -> Result<Written<()>, RepoError> {
        let written = self.inner.delete(owner, id, expected).await?;
        self.poke_if(owner, &written);
        Ok(written)
    }

    async fn ping(&self) -> Result<(), RepoError> {
        self.inner.ping().await
    }

    async fn changes(
        &self,
        owner: &OwnerId,
        since: i64,
        limit: usize,
    ) -> Result<Changes, RepoError> {
        self.inner.changes(owner, since, limit).await
    }

    async fn change_head(&self, owner: &OwnerId) -> Result<i64, RepoError> {
        self.inner.change_head(owner).await
    }

    async fn watch(&self, owners: &[OwnerId], ttl: Duration) -> Result<(), RepoError> {
        self.inner.watch(owners, ttl).await
    }
}
