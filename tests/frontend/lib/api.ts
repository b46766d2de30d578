// The browser's client for the tasks service. How it authenticates is the server's AUTH_MODE,
// fetched once from /api/config.
import { authClient } from "@/lib/auth-client";
import type { AuthMode, ClientConfig } from "@/lib/settings";

export type Task = {
  id: number;
  user_id: string;
  title: string;
  description: string | null;
  completed: boolean;
  created_at: string;
  updated_at: string;
};

export type TaskInput = { title: string; description?: string | null };

/** A failed call; `message` is the service's `detail`, safe to show. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

let config: Promise<ClientConfig> | undefined;

function loadConfig(): Promise<ClientConfig> {
  config ??= fetch("/api/config").then((res) => {
    if (!res.ok) throw new ApiError(res.status, "the app's configuration is unavailable");
    return res.json();
  });
  return config;
}

/** The bearer token for the service, or null when the browser's session cookie does the job. */
async function serviceToken(mode: AuthMode): Promise<string | null> {
  switch (mode) {
    case "jwt": {
      const { data } = await authClient.token();
      if (!data) throw new ApiError(401, "not signed in");
      return data.token;
    }
    case "hs256": {
      const res = await fetch("/api/service-token");
      if (!res.ok) throw new ApiError(res.status, "not signed in");
      return (await res.json()).token;
    }
    case "session": {
      const { data } = await authClient.getSession();
      if (!data) throw new ApiError(401, "not signed in");
      return data.session.token;
    }
    case "cookie":
      return null;
  }
}

async function request<T>(path: string, init: RequestInit = {}): Promise<T> {
  const { authMode, apiUrl } = await loadConfig();
  const token = await serviceToken(authMode);
  const headers = new Headers(init.headers);
  if (init.body !== undefined) headers.set("Content-Type", "application/json");
  if (token) headers.set("Authorization", `Bearer ${token}`);
  const res = await fetch(`${apiUrl}${path}`, {
    ...init,
    headers,
    credentials: authMode === "cookie" ? "include" : "same-origin",
  });
  if (!res.ok) {
    const body = await res.json().catch(() => null);
    throw new ApiError(res.status, body?.detail ?? `request failed with status ${res.status}`);
  }
  return res.status === 204 ? (undefined as T) : res.json();
}

export const listTasks = () => request<Task[]>("/api/tasks");

export const getTask = (id: number) => request<Task>(`/api/tasks/${id}`);

export const createTask = (input: TaskInput) =>
  request<Task>("/api/tasks", { method: "POST", body: JSON.stringify(input) });

export const updateTask = (id: number, patch: Partial<TaskInput>) =>
  request<Task>(`/api/tasks/${id}`, { method: "PUT", body: JSON.stringify(patch) });

export const toggleTask = (id: number) => request<Task>(`/api/tasks/${id}/complete`, { method: "PATCH" });

export const deleteTask = (id: number) => request<void>(`/api/tasks/${id}`, { method: "DELETE" });

/** One line for the user: "404: task not found", or the error's message. */
export function errorText(error: unknown): string {
  if (error instanceof ApiError) return `${error.status}: ${error.message}`;
  return error instanceof Error ? error.message : String(error);
}
