-- Idempotency-Key of POST /api/tasks: see the PostgreSQL migration of the same
-- name. One row per (owner, operation, key), written in the same transaction
-- as the task it created. Times are microseconds since the epoch.
CREATE TABLE idempotency_keys (
    user_id         TEXT    NOT NULL,
    scope           TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL CHECK (length(CAST(idempotency_key AS BLOB)) BETWEEN 1 AND 255),
    fingerprint     BLOB    NOT NULL CHECK (length(fingerprint) = 32),
    status          INTEGER NOT NULL,
    task_id         INTEGER,
    created_us      INTEGER NOT NULL,
    expires_us      INTEGER NOT NULL,
    PRIMARY KEY (user_id, scope, idempotency_key)
);

CREATE INDEX idx_idempotency_keys_expires ON idempotency_keys (expires_us);
