DROP TABLE task_counts;
DROP INDEX idx_task_user_completed;
CREATE INDEX idx_task_user_completed ON tasks (user_id, completed);
DROP INDEX idx_task_user_id;
CREATE INDEX idx_task_user_id ON tasks (user_id);
ALTER TABLE tasks DROP CONSTRAINT tasks_title_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_title_check CHECK (char_length(title) >= 1);
DROP FUNCTION tasks_title_trim(text);
