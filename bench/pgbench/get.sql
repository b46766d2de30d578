-- get: one owned task (service: GET /api/tasks/{id}); owner of seeded id = (id-1)/tpu + 1
\set id random(1, :ntasks)
\set u (:id - 1) / :tpu + 1
SELECT id, user_id, title, description, completed, created_at, updated_at FROM tasks WHERE id = :id AND user_id = 'bench-user-' || lpad(:u::text, :pad, '0');
