-- Tasks, each owned by the user id (the token's `sub`) that created it.
-- The CHECK constraints repeat the domain's rules so that no writer, this
-- service or a hand-typed psql session, can store a task the API could not.
CREATE TABLE tasks (
    id          BIGSERIAL PRIMARY KEY,
    user_id     TEXT         NOT NULL CHECK (octet_length(user_id) BETWEEN 1 AND 255),
    title       VARCHAR(200) NOT NULL CHECK (char_length(title) >= 1),
    description TEXT                  CHECK (char_length(description) <= 10000),
    completed   BOOLEAN      NOT NULL DEFAULT FALSE,
    created_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ  NOT NULL DEFAULT now()
);

CREATE INDEX idx_task_user_id ON tasks (user_id);
CREATE INDEX idx_task_completed ON tasks (completed);
CREATE INDEX idx_task_user_completed ON tasks (user_id, completed);
