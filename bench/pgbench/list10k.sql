-- list10k: the 10,000 tasks of one user, newest first, in one statement (the
-- service reads the same rows in keyset batches: GET /api/tasks)
SELECT id, user_id, title, description, completed, created_at, updated_at FROM tasks WHERE user_id = 'bench-hoarder' ORDER BY id DESC;
