"use client";

import Link from "next/link";
import { useRouter } from "next/navigation";
import { useState, type FormEvent } from "react";
import { authClient } from "@/lib/auth-client";

export function AuthForm({ kind }: { kind: "sign-in" | "sign-up" }) {
  const router = useRouter();
  const [error, setError] = useState<string | null>(null);

  async function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const email = String(form.get("email"));
    const password = String(form.get("password"));
    const { error } =
      kind === "sign-up"
        ? await authClient.signUp.email({ name: String(form.get("name")), email, password })
        : await authClient.signIn.email({ email, password });
    if (error) setError(error.message ?? error.statusText);
    else router.push("/");
  }

  return (
    <main>
      <h1>{kind === "sign-up" ? "Create an account" : "Sign in"}</h1>
      <form onSubmit={submit}>
        {kind === "sign-up" && (
          <label>
            Name <input name="name" required />
          </label>
        )}
        <label>
          Email <input name="email" type="email" required />
        </label>
        <label>
          Password <input name="password" type="password" minLength={8} required />
        </label>
        <button type="submit">{kind === "sign-up" ? "Sign up" : "Sign in"}</button>
      </form>
      {error && <p role="alert">{error}</p>}
      {kind === "sign-up" ? (
        <Link href="/sign-in">I already have an account</Link>
      ) : (
        <Link href="/sign-up">Create an account</Link>
      )}
    </main>
  );
}
