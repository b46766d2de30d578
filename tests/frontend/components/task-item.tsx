"use client";

import Link from "next/link";
import { useState, type FormEvent } from "react";
import type { Task, TaskInput } from "@/lib/api";

type Props = {
  task: Task;
  onUpdate: (patch: TaskInput) => Promise<void>;
  onToggle: () => Promise<void>;
  onDelete: () => Promise<void>;
};

export function TaskItem({ task, onUpdate, onToggle, onDelete }: Props) {
  const [editing, setEditing] = useState(false);

  async function save(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const description = String(form.get("description"));
    await onUpdate({ title: String(form.get("title")), description: description || null });
    setEditing(false);
  }

  if (editing) {
    return (
      <li>
        <form onSubmit={save}>
          <input name="title" aria-label="Edit title" defaultValue={task.title} required />
          <input name="description" aria-label="Edit description" defaultValue={task.description ?? ""} />
          <button type="submit">Save</button>
          <button type="button" onClick={() => setEditing(false)}>
            Cancel
          </button>
        </form>
      </li>
    );
  }

  return (
    <li className={task.completed ? "completed" : undefined}>
      <input type="checkbox" aria-label="Completed" checked={task.completed} onChange={onToggle} />
      <Link href={`/tasks/${task.id}`}>{task.title}</Link>
      {task.description && <small>{task.description}</small>}
      <button onClick={() => setEditing(true)}>Edit</button>
      <button onClick={onDelete}>Delete</button>
    </li>
  );
}
