-- 1. Titles as the domain stores them. The API trims a title with Python's
--    str.strip() (the plan's rule: every character str.isspace() accepts) and
--    keeps 1 to 200 characters; the old CHECK only said "not empty", so a
--    title of three spaces typed into psql passed it. Rows written behind the
--    service's back are repaired first (trimmed; an empty one becomes
--    'Untitled'), then the rule becomes the constraint.
CREATE FUNCTION tasks_title_trim(t text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT btrim(t, E'\t\n\u000b\f\r\u001c\u001d\u001e\u001f \u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000') $$;

ALTER TABLE tasks DROP CONSTRAINT tasks_title_check;
UPDATE tasks SET title = tasks_title_trim(title) WHERE title <> tasks_title_trim(title);
UPDATE tasks SET title = 'Untitled' WHERE title = '';
ALTER TABLE tasks ADD CONSTRAINT tasks_title_check
    CHECK (char_length(title) BETWEEN 1 AND 200 AND title = tasks_title_trim(title));

-- 2. Lists are read in keyset batches (user_id = $1 AND id < $2 ORDER BY id
--    DESC LIMIT n): the owner's index carries the id, so each batch is one
--    index range scan with no sort.
DROP INDEX idx_task_user_id;
CREATE INDEX idx_task_user_id ON tasks (user_id, id);
DROP INDEX idx_task_user_completed;
CREATE INDEX idx_task_user_completed ON tasks (user_id, completed, id);

-- 3. Tasks per owner, for MAX_TASKS_PER_USER. A create bumps its owner's row
--    with INSERT ... ON CONFLICT DO UPDATE ... WHERE tasks < limit in the same
--    statement as the insert: the row lock makes the limit exact under
--    concurrent creates (a count(*) subquery would let them overshoot).
CREATE TABLE task_counts (
    user_id TEXT    PRIMARY KEY,
    tasks   INTEGER NOT NULL CHECK (tasks >= 0)
);
INSERT INTO task_counts (user_id, tasks)
    SELECT user_id, count(*) FROM tasks GROUP BY user_id;
