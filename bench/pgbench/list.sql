-- list: the user's tasks, newest first (service: GET /api/tasks)
\set u random(1, :users)
SELECT id, user_id, title, description, completed, created_at, updated_at FROM tasks WHERE user_id = 'bench-user-' || lpad(:u::text, :pad, '0') ORDER BY id DESC;
