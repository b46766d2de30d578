-- delete (service: DELETE /api/tasks/{id}); pgbench cannot see ids it created,
-- so it deletes a random seeded task (1 row, or 0 if already deleted in this run)
\set id random(1, :ntasks)
\set u (:id - 1) / :tpu + 1
DELETE FROM tasks WHERE id = :id AND user_id = 'bench-user-' || lpad(:u::text, :pad, '0');
