import { betterAuth, type BetterAuthOptions } from "better-auth";
import { getMigrations } from "better-auth/db/migration";
import { nextCookies } from "better-auth/next-js";
import { bearer, jwt } from "better-auth/plugins";
import { Pool } from "pg";

// BETTER_AUTH_URL and BETTER_AUTH_SECRET are read from the environment by Better Auth itself.
const options = {
  database: new Pool({ connectionString: process.env.DATABASE_URL }),
  emailAndPassword: { enabled: true },
  plugins: [jwt(), bearer(), nextCookies()],
} satisfies BetterAuthOptions;

export const auth = betterAuth(options);

/** Creates or updates Better Auth's tables (user, session, account, verification, jwks). */
export async function migrate() {
  const { runMigrations } = await getMigrations(options);
  await runMigrations();
}
