import type { NextConfig } from "next";

// Where the Next.js server reaches the tasks service for the cookie mode's same-origin proxy.
// Next.js bakes rewrites into the build, so this is read by `next build`, not `next start`.
const service = process.env.TASKS_SERVICE_URL;
if (!service) throw new Error("TASKS_SERVICE_URL must be set at build time, e.g. http://127.0.0.1:8000");

const nextConfig: NextConfig = {
  async rewrites() {
    return [{ source: "/api/tasks/:path*", destination: `${service}/api/tasks/:path*` }];
  },
};

export default nextConfig;
