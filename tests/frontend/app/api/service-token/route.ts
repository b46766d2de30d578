import { SignJWT } from "jose";
import { headers } from "next/headers";
import { auth } from "@/lib/auth";

// hs256 mode: a JWT for the tasks service signed with BETTER_AUTH_SECRET, sub = the user id.
export async function GET() {
  const session = await auth.api.getSession({ headers: await headers() });
  if (!session) return Response.json({ error: "not signed in" }, { status: 401 });
  const key = new TextEncoder().encode(process.env.BETTER_AUTH_SECRET);
  const token = await new SignJWT()
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(session.user.id)
    .setIssuedAt()
    .setExpirationTime("1h")
    .sign(key);
  return Response.json({ token });
}
