-- create (service: POST /api/tasks)
\set u random(1, :users)
INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at) VALUES ('bench-user-' || lpad(:u::text, :pad, '0'), :title, :descr, false, :ts, :ts) RETURNING id, user_id, title, description, completed, created_at, updated_at;
