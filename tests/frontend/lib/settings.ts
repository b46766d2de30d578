// Runtime settings of the Next.js server, read on each request so that one build serves every mode.
export const AUTH_MODES = ["jwt", "hs256", "session", "cookie"] as const;
export type AuthMode = (typeof AUTH_MODES)[number];

/** What the browser needs to call the tasks service: how to authenticate and where. */
export type ClientConfig = { authMode: AuthMode; apiUrl: string };

function isAuthMode(value: string): value is AuthMode {
  return (AUTH_MODES as readonly string[]).includes(value);
}

export function clientConfig(): ClientConfig {
  const authMode = process.env.AUTH_MODE ?? "";
  if (!isAuthMode(authMode)) {
    throw new Error(`AUTH_MODE must be one of ${AUTH_MODES.join(", ")}; got "${authMode}"`);
  }
  if (authMode === "cookie") return { authMode, apiUrl: "" }; // same origin, through the rewrite
  const apiUrl = process.env.TASKS_API_URL;
  if (!apiUrl) throw new Error(`TASKS_API_URL must be set in ${authMode} mode`);
  return { authMode, apiUrl };
}
