DROP FUNCTION tasks_purge_changes(TEXT, BIGINT);
DROP TRIGGER tasks_change ON tasks;
DROP FUNCTION tasks_change_trigger();
DROP FUNCTION tasks_record_change(TEXT, BIGINT, BOOLEAN);
DROP TABLE task_changes;
DROP TABLE task_sync;
