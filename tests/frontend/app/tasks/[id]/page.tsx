"use client";

import Link from "next/link";
import { useParams } from "next/navigation";
import { useEffect, useState } from "react";
import { errorText, getTask, type Task } from "@/lib/api";

export default function TaskPage() {
  const { id } = useParams<{ id: string }>();
  const [task, setTask] = useState<Task | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    getTask(Number(id)).then(setTask, (e) => setError(errorText(e)));
  }, [id]);

  return (
    <main>
      <Link href="/">All tasks</Link>
      {error && <p role="alert">{error}</p>}
      {task ? (
        <article>
          <h1>{task.title}</h1>
          {task.description && <p>{task.description}</p>}
          <p>{task.completed ? "Completed" : "Not completed"}</p>
        </article>
      ) : (
        !error && <p>Loading…</p>
      )}
    </main>
  );
}
