//! The per-query spans, on a real SQLite file: every repository method opens
//! its `db.*` span, and nothing this crate records (span fields, later
//! `record`s, events) carries task text or the owner id.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tasks_domain::{Description, NewTask, OwnerId, StatusFilter, TaskPatch, Title};
use tasks_ports::{Changes, TaskRepository as _, Written};
use tasks_store::{DatabaseLocation, DieselTaskStore, StoreConfig, run_migrations};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

const OWNER: &str = "owner-7f3a-not-for-logs";
const TITLE: &str = "title-c41e-not-for-logs";
const DESCRIPTION: &str = "description-9b2d-not-for-logs";
const NEW_TITLE: &str = "new-title-e85f-not-for-logs";

/// Every span and event of `tasks_store`, one line each: `span <name>
/// <fields>`, `record <name> <fields>` or `event <fields>`.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

impl Capture {
    fn push(&self, line: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }

    fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Writes each field as ` name=value`, whatever its type.
struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

fn ours(target: &str) -> bool {
    target == "tasks_store" || target.starts_with("tasks_store::")
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        if ours(attrs.metadata().target()) {
            let mut line = format!("span {}", attrs.metadata().name());
            attrs.record(&mut Fields(&mut line));
            self.push(line);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id).filter(|s| ours(s.metadata().target())) {
            let mut line = format!("record {}", span.name());
            values.record(&mut Fields(&mut line));
            self.push(line);
        }
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if ours(event.metadata().target()) {
            let mut line = "event".to_owned();
            event.record(&mut Fields(&mut line));
            self.push(line);
        }
    }
}

#[tokio::test]
async fn every_query_has_a_span_and_no_span_carries_task_text_or_the_owner() {
    let capture = Capture::default();
    // The test's runtime is single-threaded, so a thread-local subscriber
    // sees every span the store opens.
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));

    let dir = std::env::temp_dir().join(format!("tasks_store_spans_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = StoreConfig {
        location: DatabaseLocation::Sqlite(dir.join("tasks.db")),
        pool_size: 2,
        connect_timeout: Duration::from_secs(10),
        query_timeout: Duration::from_secs(10),
        prepared_statements: true,
        read_replica: None,
        write_queue: 64,
    };
    run_migrations(&config).await.unwrap();
    let store = DieselTaskStore::connect(&config).unwrap();
    let owner = OwnerId::parse(OWNER).unwrap();

    let new = NewTask {
        title: Title::parse(TITLE).unwrap(),
        description: Some(Description::parse(DESCRIPTION.to_owned()).unwrap()),
    };
    let task = store.create(&owner, new, 10).await.unwrap().unwrap();
    let id = task.id;
    let listed = store
        .list(&owner, StatusFilter::All, None, 50)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert!(store.get(&owner, id).await.unwrap().is_some());
    let patch = TaskPatch {
        title: Some(Title::parse(NEW_TITLE).unwrap()),
        ..TaskPatch::default()
    };
    let Written::Done(updated) = store.update(&owner, id, patch, None).await.unwrap() else {
        panic!("the update was not applied");
    };
    assert_eq!(updated.title.as_str(), NEW_TITLE);
    let Written::Done(toggled) = store.toggle(&owner, id, None).await.unwrap() else {
        panic!("the toggle was not applied");
    };
    assert!(toggled.completed);
    assert_eq!(
        store.delete(&owner, id, None).await.unwrap(),
        Written::Done(())
    );
    // The change log saw all four writes: a full sync is empty (the task is
    // gone), and from version 1 on the task is a tombstone.
    let Changes::Page(full) = store.changes(&owner, 0, 10).await.unwrap() else {
        panic!("a full sync is never a reset");
    };
    assert_eq!(
        (full.tasks.len(), full.deleted.len(), full.version),
        (0, 0, 4)
    );
    let Changes::Page(since) = store.changes(&owner, 1, 10).await.unwrap() else {
        panic!("version 1 is current");
    };
    assert_eq!(since.deleted, vec![id]);
    assert!(since.tasks.is_empty() && !since.has_more);
    assert_eq!(store.changes(&owner, 5, 10).await.unwrap(), Changes::Reset);
    store.ping().await.unwrap();
    store.close();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);

    let lines = capture.lines();
    let span = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("span {name} ")))
            .unwrap_or_else(|| panic!("no {name} span in {lines:#?}"))
    };
    let task_id = format!("task_id={}", id.get());
    for name in ["db.get", "db.update", "db.toggle", "db.delete"] {
        let line = span(name);
        assert!(line.contains(" backend=\"sqlite\""), "{line}");
        assert!(line.contains(&task_id), "{line}");
    }
    let list = span("db.list");
    assert!(list.contains(" backend=\"sqlite\""), "{list}");
    assert!(list.contains(" limit=50"), "{list}");
    assert!(span("db.create").contains(" max_tasks=10"));
    assert!(span("db.ping").contains(" backend=\"sqlite\""));
    assert!(span("db.changes").contains(" since=0"));
    assert!(
        lines.contains(&format!("record db.create {task_id}")),
        "the created id is recorded on db.create: {lines:#?}"
    );

    for text in [OWNER, TITLE, DESCRIPTION, NEW_TITLE] {
        for line in &lines {
            assert!(!line.contains(text), "{text:?} was recorded: {line}");
        }
    }
}
