-- Tasks, each owned by the user id (the token's `sub`) that created it.
-- AUTOINCREMENT: an id is never reused after a delete, as on PostgreSQL.
-- Timestamps are UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff+00:00'.
CREATE TABLE tasks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    user_id     TEXT    NOT NULL CHECK (length(CAST(user_id AS BLOB)) BETWEEN 1 AND 255),
    title       TEXT    NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description TEXT             CHECK (length(description) <= 10000),
    completed   BOOLEAN NOT NULL DEFAULT 0 CHECK (completed IN (0, 1)),
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);

CREATE INDEX idx_task_user_id ON tasks (user_id);
CREATE INDEX idx_task_completed ON tasks (completed);
CREATE INDEX idx_task_user_completed ON tasks (user_id, completed);
