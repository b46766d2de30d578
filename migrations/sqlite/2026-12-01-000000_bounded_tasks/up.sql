-- Titles as the domain stores them: trimmed with Python's str.strip() (every
-- character str.isspace() accepts, listed below as code points) and 1 to 200
-- characters; the old CHECK let a title of three spaces in. SQLite cannot
-- change a CHECK in place, so the table is rebuilt: rows written behind the
-- service's back are repaired on the way (trimmed; an empty one becomes
-- 'Untitled'), ids and the AUTOINCREMENT high-water mark are kept.
-- The owner's indexes carry the id, so the keyset batches of a list
-- (user_id = ? AND id < ? ORDER BY id DESC LIMIT n) need no sort.
CREATE TABLE tasks_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    user_id     TEXT    NOT NULL CHECK (length(CAST(user_id AS BLOB)) BETWEEN 1 AND 255),
    title       TEXT    NOT NULL CHECK (length(title) BETWEEN 1 AND 200
                                        AND title = trim(title, char(9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 133, 160, 5760, 8192, 8193, 8194, 8195, 8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288))),
    description TEXT             CHECK (length(description) <= 10000),
    completed   BOOLEAN NOT NULL DEFAULT 0 CHECK (completed IN (0, 1)),
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);

INSERT INTO tasks_new (id, user_id, title, description, completed, created_at, updated_at)
SELECT id, user_id,
       coalesce(nullif(trim(substr(trim(title, char(9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 133, 160, 5760, 8192, 8193, 8194, 8195, 8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288)), 1, 200), char(9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 133, 160, 5760, 8192, 8193, 8194, 8195, 8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288)), ''), 'Untitled'),
       description, completed, created_at, updated_at
FROM tasks;

DELETE FROM sqlite_sequence WHERE name = 'tasks_new';
INSERT INTO sqlite_sequence (name, seq) SELECT 'tasks_new', seq FROM sqlite_sequence WHERE name = 'tasks';

DROP TABLE tasks;
ALTER TABLE tasks_new RENAME TO tasks;

CREATE INDEX idx_task_user_id ON tasks (user_id, id);
CREATE INDEX idx_task_completed ON tasks (completed);
CREATE INDEX idx_task_user_completed ON tasks (user_id, completed, id);
