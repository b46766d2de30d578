-- The change feed (GET /api/tasks/changes): a per-owner version counter and
-- one row per task holding the version of its latest change; a deleted task
-- leaves a tombstone row. Triggers keep both in the same transaction as every
-- write on `tasks`, whoever makes it (this service or a hand-typed sqlite3
-- session). SQLite runs one writer at a time, so the counter's bump is
-- serialised by the database's write lock; see crates/tasks-store/src/changes.rs.
-- changed_at is UTC text, 'YYYY-MM-DD HH:MM:SS.fff' (strftime's %f).
-- Unlike PostgreSQL's, task_sync has no watched_until: nothing notifies on
-- SQLite (one instance per file pokes its own streams in process), so no
-- owner is ever registered as watched here.
CREATE TABLE task_sync (
    user_id        TEXT    PRIMARY KEY NOT NULL,
    version        BIGINT  NOT NULL,
    purged_through BIGINT  NOT NULL DEFAULT 0
);

CREATE TABLE task_changes (
    user_id    TEXT    NOT NULL,
    task_id    BIGINT  NOT NULL,
    version    BIGINT  NOT NULL,
    deleted    BOOLEAN NOT NULL CHECK (deleted IN (0, 1)),
    changed_at TEXT    NOT NULL,
    PRIMARY KEY (user_id, task_id)
);
CREATE INDEX idx_task_changes_version ON task_changes (user_id, version);
-- The clean-up's scans: tombstones by age, and tombstones per owner.
CREATE INDEX idx_task_changes_tombstone_age ON task_changes (changed_at) WHERE deleted;
CREATE INDEX idx_task_changes_tombstones ON task_changes (user_id, version) WHERE deleted;

-- Existing tasks: versions 1..n per owner, in id order.
INSERT INTO task_changes (user_id, task_id, version, deleted, changed_at)
SELECT user_id, id, row_number() OVER (PARTITION BY user_id ORDER BY id), 0,
       strftime('%Y-%m-%d %H:%M:%f', 'now')
FROM tasks;
INSERT INTO task_sync (user_id, version, purged_through)
SELECT user_id, count(*), 0 FROM tasks GROUP BY user_id;

CREATE TRIGGER tasks_change_insert AFTER INSERT ON tasks
BEGIN
    INSERT INTO task_sync (user_id, version) VALUES (NEW.user_id, 1)
        ON CONFLICT (user_id) DO UPDATE SET version = version + 1;
    INSERT INTO task_changes (user_id, task_id, version, deleted, changed_at)
        VALUES (NEW.user_id, NEW.id,
                (SELECT version FROM task_sync WHERE user_id = NEW.user_id), 0,
                strftime('%Y-%m-%d %H:%M:%f', 'now'))
        ON CONFLICT (user_id, task_id) DO UPDATE
        SET version = excluded.version, deleted = 0, changed_at = excluded.changed_at;
END;

-- An update that moves a task to another id or owner (only possible behind
-- the service's back) is a deletion for the old key, then a change.
CREATE TRIGGER tasks_change_rekey AFTER UPDATE ON tasks
WHEN OLD.id <> NEW.id OR OLD.user_id <> NEW.user_id
BEGIN
    INSERT INTO task_sync (user_id, version) VALUES (OLD.user_id, 1)
        ON CONFLICT (user_id) DO UPDATE SET version = version + 1;
    INSERT INTO task_changes (user_id, task_id, version, deleted, changed_at)
        VALUES (OLD.user_id, OLD.id,
                (SELECT version FROM task_sync WHERE user_id = OLD.user_id), 1,
                strftime('%Y-%m-%d %H:%M:%f', 'now'))
        ON CONFLICT (user_id, task_id) DO UPDATE
        SET version = excluded.version, deleted = 1, changed_at = excluded.changed_at;
END;

CREATE TRIGGER tasks_change_update AFTER UPDATE ON tasks
BEGIN
    INSERT INTO task_sync (user_id, version) VALUES (NEW.user_id, 1)
        ON CONFLICT (user_id) DO UPDATE SET version = version + 1;
    INSERT INTO task_changes (user_id, task_id, version, deleted, changed_at)
        VALUES (NEW.user_id, NEW.id,
                (SELECT version FROM task_sync WHERE user_id = NEW.user_id), 0,
                strftime('%Y-%m-%d %H:%M:%f', 'now'))
        ON CONFLICT (user_id, task_id) DO UPDATE
        SET version = excluded.version, deleted = 0, changed_at = excluded.changed_at;
END;

CREATE TRIGGER tasks_change_delete AFTER DELETE ON tasks
BEGIN
    INSERT INTO task_sync (user_id, version) VALUES (OLD.user_id, 1)
        ON CONFLICT (user_id) DO UPDATE SET version = version + 1;
    INSERT INTO task_changes (user_id, task_id, version, deleted, changed_at)
        VALUES (OLD.user_id, OLD.id,
                (SELECT version FROM task_sync WHERE user_id = OLD.user_id), 1,
                strftime('%Y-%m-%d %H:%M:%f', 'now'))
        ON CONFLICT (user_id, task_id) DO UPDATE
        SET version = excluded.version, deleted = 1, changed_at = excluded.changed_at;
END;
