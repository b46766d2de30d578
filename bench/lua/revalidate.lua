-- Scenario revalidate: GET /api/tasks with If-None-Match carrying the user's
-- current list ETag (fetched by bench.py just before the run, file in
-- BENCH_LUA_ETAGS), so every answer is a 304 without a body. Anything but a
-- 304 counts as an error. Compared with `list` (the same lists, full bodies).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local etags_path = os.getenv("BENCH_LUA_ETAGS")
if not etags_path then
   error("BENCH_LUA_ETAGS is not set (the users' list ETags, written by bench.py)")
end
local ETAGS = dofile(etags_path)
local reqs = {}

function init_scenario(args)
   for u = 1, NUSERS do
      local h = { ["Authorization"] = "Bearer " .. TOKENS[u], ["If-None-Match"] = ETAGS[u] }
      reqs[u] = wrk.format("GET", "/api/tasks", h)
   end
end

function request()
   return reqs[math.random(NUSERS)]
end

function response(status, headers, body)
   if status ~= 304 then
      local k = tostring(status)
      non2xx[k] = (non2xx[k] or 0) + 1
   end
end
