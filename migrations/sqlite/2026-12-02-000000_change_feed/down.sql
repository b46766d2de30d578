DROP TRIGGER tasks_change_delete;
DROP TRIGGER tasks_change_update;
DROP TRIGGER tasks_change_rekey;
DROP TRIGGER tasks_change_insert;
DROP TABLE task_changes;
DROP TABLE task_sync;
