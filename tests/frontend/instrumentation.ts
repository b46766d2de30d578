// Runs once when the Next.js server starts: Better Auth's tables must exist before the first sign-up.
export async function register() {
  if (process.env.NEXT_RUNTIME === "nodejs") {
    const { migrate } = await import("./lib/auth");
    await migrate();
  }
}
