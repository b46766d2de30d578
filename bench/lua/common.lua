-- Shared setup for the wrk scenario scripts (wrk 4.x, LuaJIT / Lua 5.1).
--
-- The data file (written by bench.py, path in env BENCH_LUA_DATA) returns
--   { users = {"bench-user-0001", ...}, tokens = {"<jwt>", ...},
--     ids = {"1,2,3,...", ...} }   -- owned task ids per user, comma separated
-- (ids are kept as strings: huge numeric table literals hit LuaJIT limits).
-- Another API (PocketBase) adds `api` (its paths) and `owner_ids` (the owner
-- field each of its creates must carry).
--
-- Each scenario script defines `pick()` -> method, path, user index, body, op.
-- Errors = non-2xx responses (wrk's status counter, or counted in response()
-- where a script defines it) + socket errors (connect/read/write/timeout).

local data_path = os.getenv("BENCH_LUA_DATA")
if not data_path then
   error("BENCH_LUA_DATA is not set (path to the generated users/tokens file)")
end
local D = dofile(data_path)

USERS = D.users
TOKENS = D.tokens
HOARDER_TOKEN = D.hoarder_token
GROWTH = D.growth or {}   -- tasks per user (string) -> token of bench-growth-<n>
NUSERS = #USERS
IDS = nil          -- parsed lazily (only `get`/`mixed` need it)
API = D.api or { health = "/health", list = "/api/tasks", item = "/api/tasks/", create = "/api/tasks" }

-- The JSON members a create for user u carries besides title and description.
function create_extra(u)
   if D.owner_ids then return ',"user":"' .. D.owner_ids[u] .. '"' end
   return ""
end

function load_ids()
   if IDS then return IDS end
   IDS = {}
   for u = 1, NUSERS do
      local t = {}
      for id in string.gmatch(D.ids[u], "[^,]+") do t[#t + 1] = id end
      IDS[u] = t
   end
   return IDS
end

-- Per-user header tables, built once per thread in init().
HDRS = {}
local JSON_CT = "application/json"

function headers_for(u, with_body)
   local key = with_body and (u + NUSERS) or u
   local h = HDRS[key]
   if not h then
      h = { ["Authorization"] = "Bearer " .. TOKENS[u] }
      if with_body then h["Content-Type"] = JSON_CT end
      HDRS[key] = h
   end
   return h
end

-- Per-thread counters (copied back to the main state in done()).
ops = {}         -- requests sent, by operation
non2xx = {}      -- non-2xx responses by status (only scripts with response())
function count(op)
   ops[op] = (ops[op] or 0) + 1
end
function count_status(status)
   if status < 200 or status > 299 then
      local k = tostring(status)
      non2xx[k] = (non2xx[k] or 0) + 1
   end
end

local threads = {}
local thread_n = 0

function setup(thread)
   thread_n = thread_n + 1
   thread:set("thread_id", thread_n)
   table.insert(threads, thread)
end

function init(args)
   math.randomseed(os.time() * 1000 + (thread_id or 0) * 7919 + math.floor(os.clock() * 1000000))
   for _ = 1, 10 do math.random() end
   if init_scenario then init_scenario(args) end
end

local function json_escape(s)
   return (string.gsub(tostring(s), '[%c"\\]', function(c)
      return string.format("\\u%04x", string.byte(c))
   end))
end

function done(summary, latency, requests)
   local agg_ops, agg_err = {}, {}
   for _, t in ipairs(threads) do
      local o = t:get("ops")
      if o then for k, v in pairs(o) do agg_ops[k] = (agg_ops[k] or 0) + v end end
      local e = t:get("non2xx")
      if e then for k, v in pairs(e) do agg_err[k] = (agg_err[k] or 0) + v end end
   end
   local function obj(t)
      local parts = {}
      for k, v in pairs(t) do parts[#parts + 1] = string.format('"%s":%d', json_escape(k), v) end
      return "{" .. table.concat(parts, ",") .. "}"
   end
   local e = summary.errors
   local secs = summary.duration / 1e6
   io.write(string.format(
      'BENCHJSON {"requests":%d,"duration_s":%.3f,"rps":%.2f,"bytes":%d,' ..
      '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
      '"err_status":%d,"err_connect":%d,"err_read":%d,"err_write":%d,"err_timeout":%d,' ..
      '"ops":%s,"non2xx_by_status":%s}\n',
      summary.requests, secs, summary.requests / secs, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
      e.status, e.connect, e.read, e.write, e.timeout, obj(agg_ops), obj(agg_err)))
end
