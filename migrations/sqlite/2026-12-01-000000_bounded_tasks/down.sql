CREATE TABLE tasks_old (
    id          INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    user_id     TEXT    NOT NULL CHECK (length(CAST(user_id AS BLOB)) BETWEEN 1 AND 255),
    title       TEXT    NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description TEXT             CHECK (length(description) <= 10000),
    completed   BOOLEAN NOT NULL DEFAULT 0 CHECK (completed IN (0, 1)),
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);
INSERT INTO tasks_old SELECT * FROM tasks;
DELETE FROM sqlite_sequence WHERE name = 'tasks_old';
INSERT INTO sqlite_sequence (name, seq) SELECT 'tasks_old', seq FROM sqlite_sequence WHERE name = 'tasks';
DROP TABLE tasks;
ALTER TABLE tasks_old RENAME TO tasks;
CREATE INDEX idx_task_user_id ON tasks (user_id);
CREATE INDEX idx_task_completed ON tasks (completed);
CREATE INDEX idx_task_user_completed ON tasks (user_id, completed);
