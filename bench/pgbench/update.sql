-- update (service: PUT /api/tasks/{id} {"title","description"})
\set id random(1, :ntasks)
\set u (:id - 1) / :tpu + 1
UPDATE tasks SET title = :title2, description = :descr2, updated_at = :ts WHERE id = :id AND user_id = 'bench-user-' || lpad(:u::text, :pad, '0') RETURNING id, user_id, title, description, completed, created_at, updated_at;
