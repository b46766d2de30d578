-- Idempotency-Key of POST /api/tasks (draft-ietf-httpapi-idempotency-key-header,
-- as Stripe does it). One row per (owner, operation, key), written in the same
-- transaction as the task it created, so a key and its task commit together or
-- not at all. The first response is rebuilt from the row: `status` (201, or
-- 409 for the task limit), the task id and its creation time; the rest of the
-- body is the request's, which the fingerprint (SHA-256 of the method, route
-- and parsed body) proves unchanged. Times are microseconds since the epoch.
-- Rows past `expires_us` are never replayed, and are deleted in small batches
-- by the service's periodic clean-up (the index on expires_us).
CREATE TABLE idempotency_keys (
    user_id         TEXT     NOT NULL,
    scope           TEXT     NOT NULL,
    idempotency_key TEXT     NOT NULL CHECK (octet_length(idempotency_key) BETWEEN 1 AND 255),
    fingerprint     BYTEA    NOT NULL CHECK (octet_length(fingerprint) = 32),
    status          SMALLINT NOT NULL,
    task_id         BIGINT,
    created_us      BIGINT   NOT NULL,
    expires_us      BIGINT   NOT NULL,
    PRIMARY KEY (user_id, scope, idempotency_key)
);

CREATE INDEX idx_idempotency_keys_expires ON idempotency_keys (expires_us);
