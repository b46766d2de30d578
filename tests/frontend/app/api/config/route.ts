import { clientConfig } from "@/lib/settings";

export const dynamic = "force-dynamic";

export function GET() {
  return Response.json(clientConfig());
}
