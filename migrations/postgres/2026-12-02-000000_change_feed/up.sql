-- The change feed (GET /api/tasks/changes): a per-owner version counter and
-- one row per task holding the version of its latest change; a deleted task
-- leaves a tombstone row. Row triggers keep both in the same transaction as
-- every write on `tasks`, whoever makes it (this service or a psql session).
--
-- Why a counter under a row lock: the trigger bumps the owner's row in
-- task_sync with an upsert, which holds that row's lock until commit, so two
-- writes of one owner take versions in the order they commit, and a reader
-- that sees version n also sees every version below it. Timestamps (now() is
-- the transaction's start: a long transaction commits "in the past") and
-- sequences (they commit out of order) both let a reader skip a change. The
-- lock is per owner: it serialises one user's writes only. See
-- crates/tasks-store/src/changes.rs.
--
-- watched_until: until when some event stream (GET /api/tasks/events) of
-- some instance watches the owner; writes notify only while it is in the
-- future (see tasks_record_change). A stream registers its owner, creating
-- the row with version 0 for an owner who never wrote, and its instance
-- extends it while the stream is open. NULL: nobody watches.
CREATE TABLE task_sync (
    user_id        TEXT        PRIMARY KEY,
    version        BIGINT      NOT NULL,
    purged_through BIGINT      NOT NULL DEFAULT 0,
    watched_until  TIMESTAMPTZ
);

CREATE TABLE task_changes (
    user_id    TEXT        NOT NULL,
    task_id    BIGINT      NOT NULL,
    version    BIGINT      NOT NULL,
    deleted    BOOLEAN     NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, task_id)
);
CREATE INDEX idx_task_changes_version ON task_changes (user_id, version);
-- The clean-up's scans: tombstones by age, and tombstones per owner.
CREATE INDEX idx_task_changes_tombstone_age ON task_changes (changed_at) WHERE deleted;
CREATE INDEX idx_task_changes_tombstones ON task_changes (user_id, version) WHERE deleted;

-- Existing tasks: versions 1..n per owner, in id order.
INSERT INTO task_changes (user_id, task_id, version, deleted, changed_at)
SELECT user_id, id, row_number() OVER (PARTITION BY user_id ORDER BY id), FALSE, now()
FROM tasks;
INSERT INTO task_sync (user_id, version, purged_through)
SELECT user_id, count(*), 0 FROM tasks GROUP BY user_id;

-- Records one change of `task` for `owner`: bumps the owner's version under
-- the row lock, upserts the task's row, and, when the owner is watched
-- (watched_until in the future), pokes listeners with '<version> <owner>'
-- on channel tasks_changed (delivered at commit, never for a rolled-back
-- write).
--
-- Only watched owners are notified because a notifying commit takes a
-- database-wide lock until it has committed (WAL flush included), so
-- notifying writes commit one at a time: measured here (64 clients running
-- the service's create), 330 to 420 creates/s with the notification against
-- 4,300 to 5,300 without (docs/OPERATIONS.md, "Change log"). Writes of
-- owners nobody watches pay nothing for live updates.
--
-- Why no change can fall between a stream's start and its notifications: a
-- stream registers its owner (an upsert of this same row, setting
-- watched_until) before it reads the log. The upsert below takes the row
-- lock, so a write either committed before the registration (the stream's
-- first read sees it) or locked the row after it and reads the latest
-- committed watched_until (ON CONFLICT DO UPDATE works on the latest row
-- version), and notifies. See crates/tasks-store/src/changes.rs.
--
-- A deployment that does not use live updates across instances can turn
-- notifications off entirely: ALTER DATABASE <db> SET
-- tasks.notify_changes = 'off' (or SET it per session); anything else, or
-- unset, notifies watched owners.
CREATE FUNCTION tasks_record_change(owner TEXT, task BIGINT, gone BOOLEAN) RETURNS VOID
    LANGUAGE plpgsql AS $$
DECLARE
    v BIGINT;
    w TIMESTAMPTZ;
BEGIN
    INSERT INTO task_sync AS s (user_id, version) VALUES (owner, 1)
        ON CONFLICT (user_id) DO UPDATE SET version = s.version + 1
        RETURNING s.version, s.watched_until INTO v, w;
    INSERT INTO task_changes AS c (user_id, task_id, version, deleted, changed_at)
        VALUES (owner, task, v, gone, clock_timestamp())
        ON CONFLICT (user_id, task_id) DO UPDATE
        SET version = EXCLUDED.version, deleted = EXCLUDED.deleted, changed_at = EXCLUDED.changed_at;
    IF w > now() AND coalesce(current_setting('tasks.notify_changes', TRUE), '') <> 'off' THEN
        PERFORM pg_notify('tasks_changed', v || ' ' || owner);
    END IF;
END $$;

CREATE FUNCTION tasks_change_trigger() RETURNS TRIGGER
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM tasks_record_change(OLD.user_id, OLD.id, TRUE);
    ELSE
        -- An update that moves a task to another id or owner (only possible
        -- behind the service's back) is a deletion for the old key.
        IF TG_OP = 'UPDATE' AND (OLD.id <> NEW.id OR OLD.user_id <> NEW.user_id) THEN
            PERFORM tasks_record_change(OLD.user_id, OLD.id, TRUE);
        END IF;
        PERFORM tasks_record_change(NEW.user_id, NEW.id, FALSE);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_change AFTER INSERT OR UPDATE OR DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_change_trigger();

-- The clean-up's step for one owner: forget the tombstones up to version
-- `through` and raise purged_through to it (a cursor below it gets a reset).
-- Live tasks still at or below `through` get new versions above the head, in
-- their order, so that every live task stays above purged_through and a
-- full sync (since=0) paged by cursors never falls below it. Takes the
-- owner's row lock first, like every writer; each statement then sees all
-- of the owner's committed writes, and the latest watched_until: it
-- notifies, like a write, only a watched owner. Returns the tombstones
-- removed.
CREATE FUNCTION tasks_purge_changes(owner TEXT, through BIGINT) RETURNS BIGINT
    LANGUAGE plpgsql AS $$
DECLARE
    head BIGINT;
    w TIMESTAMPTZ;
    gone BIGINT;
    moved BIGINT;
BEGIN
    SELECT version, watched_until INTO head, w FROM task_sync WHERE user_id = owner FOR UPDATE;
    IF NOT FOUND OR through > head THEN
        RETURN 0;
    END IF;
    DELETE FROM task_changes WHERE user_id = owner AND deleted AND version <= through;
    GET DIAGNOSTICS gone = ROW_COUNT;
    WITH ranked AS (
        SELECT task_id, row_number() OVER (ORDER BY version) AS k
        FROM task_changes WHERE user_id = owner AND NOT deleted AND version <= through)
    UPDATE task_changes c SET version = head + ranked.k
    FROM ranked WHERE c.user_id = owner AND c.task_id = ranked.task_id;
    GET DIAGNOSTICS moved = ROW_COUNT;
    UPDATE task_sync
        SET version = head + moved, purged_through = GREATEST(purged_through, through)
        WHERE user_id = owner;
    IF moved > 0 AND w > now() AND coalesce(current_setting('tasks.notify_changes', TRUE), '') <> 'off' THEN
        PERFORM pg_notify('tasks_changed', (head + moved) || ' ' || owner);
    END IF;
    RETURN gone;
END $$;
