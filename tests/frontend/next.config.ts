import type { NextConfig } from "next";

// Where the Next.js server reaches the tasks service for the cookie mode's same-origin proxy.
// `next build` bakes rewrites into .next/routes-manifest.json: a new URL needs a new build.
// `next start` loads this file as well, so it needs the variable too.
const service = process.env.TASKS_SERVICE_URL;
if (!service) throw new Error("TASKS_SERVICE_URL must be set, e.g. http://127.0.0.1:8000");

const nextConfig: NextConfig = {
  async rewrites() {
    return [{ source: "/api/tasks/:path*", destination: `${service}/api/tasks/:path*` }];
  },
};

export default nextConfig;
