"use client";

import { useRouter } from "next/navigation";
import { useEffect, useState, type FormEvent } from "react";
import { TaskItem } from "@/components/task-item";
import { createTask, deleteTask, errorText, listTasks, toggleTask, updateTask, type Task } from "@/lib/api";
import { authClient } from "@/lib/auth-client";

export default function TasksPage() {
  const router = useRouter();
  const { data: session, isPending } = authClient.useSession();
  const userId = session?.user.id;
  const [tasks, setTasks] = useState<Task[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    if (isPending) return;
    if (!userId) {
      router.replace("/sign-in");
      return;
    }
    listTasks().then(setTasks, (e) => setError(errorText(e)));
  }, [isPending, userId, router]);

  async function run(action: () => Promise<void>) {
    setError(null);
    try {
      await action();
    } catch (e) {
      setError(errorText(e));
    }
  }

  const replace = (task: Task) => setTasks((all) => all!.map((t) => (t.id === task.id ? task : t)));

  async function add(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const formElement = event.currentTarget;
    const form = new FormData(formElement);
    const description = String(form.get("description"));
    await run(async () => {
      const task = await createTask({ title: String(form.get("title")), description: description || undefined });
      setTasks((all) => [task, ...all!]);
      formElement.reset();
    });
  }

  return (
    <main>
      <h1>Your tasks</h1>
      {session && <p>Signed in as {session.user.email}</p>}
      {error && <p role="alert">{error}</p>}
      {tasks === null ? (
        !error && <p>Loading…</p>
      ) : (
        <>
          <form onSubmit={add}>
            <input name="title" aria-label="Title" placeholder="What needs doing?" required />
            <input name="description" aria-label="Description" placeholder="Details (optional)" />
            <button type="submit">Add task</button>
          </form>
          {tasks.length === 0 ? (
            <p>No tasks yet.</p>
          ) : (
            <ul aria-label="Tasks">
              {tasks.map((task) => (
                <TaskItem
                  key={task.id}
                  task={task}
                  onUpdate={(patch) => run(async () => replace(await updateTask(task.id, patch)))}
                  onToggle={() => run(async () => replace(await toggleTask(task.id)))}
                  onDelete={() =>
                    run(async () => {
                      await deleteTask(task.id);
                      setTasks((all) => all!.filter((t) => t.id !== task.id));
                    })
                  }
                />
              ))}
            </ul>
          )}
        </>
      )}
    </main>
  );
}
