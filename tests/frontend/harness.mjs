// Child processes, free ports and bounded waits for frontend.test.mjs. Everything on 127.0.0.1.
import { spawn } from "node:child_process";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

const running = new Set();

function killGroup(child, signal) {
  try {
    process.kill(-child.pid, signal); // detached: the child leads its own process group
  } catch {
    // already gone
  }
}

// Whatever ends the test process, its servers go with it.
process.on("exit", () => running.forEach((child) => killGroup(child, "SIGKILL")));
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) process.once(signal, () => process.exit(130));

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Starts a server process in its own process group and keeps its last output lines. */
export function start(name, command, args, { env, cwd }) {
  const child = spawn(command, args, { env, cwd, stdio: ["ignore", "pipe", "pipe"], detached: true });
  running.add(child);
  const lines = [];
  const keep = (chunk) => {
    for (const line of chunk.toString("utf8").split("\n")) {
      if (line) lines.push(`[${name}] ${line}`);
    }
    lines.splice(0, Math.max(0, lines.length - 200));
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  let exit = null;
  const exited = new Promise((resolve) => {
    const done = (info) => {
      running.delete(child);
      exit = info;
      resolve(info);
    };
    child.once("exit", (code, signal) => done({ code, signal }));
    child.once("error", (error) => done({ error: error.message }));
  });
  return {
    name,
    get exit() {
      return exit;
    },
    log: (count = 40) => lines.slice(-count).join("\n"),
    /** SIGTERM, then SIGKILL after 5 s. */
    async stop() {
      if (exit) return;
      killGroup(child, "SIGTERM");
      if ((await Promise.race([exited, sleep(5000, "timeout")])) === "timeout") {
        killGroup(child, "SIGKILL");
        await exited;
      }
    },
  };
}

/** Polls url until it answers 200; fails early if proc exits, and after timeoutMs. */
export async function waitForOk(url, proc, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last = "no answer yet";
  while (Date.now() < deadline) {
    if (proc.exit) throw new Error(`${proc.name} exited (${JSON.stringify(proc.exit)}) before ${url} answered\n${proc.log()}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      if (res.status === 200) return;
      last = `status ${res.status}`;
    } catch (error) {
      last = error.message;
    }
    await sleep(200);
  }
  throw new Error(`${url} did not answer 200 within ${timeoutMs} ms (last: ${last})\n${proc.log()}`);
}
