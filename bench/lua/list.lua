-- Scenario (a) list: GET /api/tasks as a random user per request.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local reqs = {}

function init_scenario(args)
   for u = 1, NUSERS do
      reqs[u] = wrk.format("GET", API.list, headers_for(u, false))
   end
end

function request()
   return reqs[math.random(NUSERS)]
end
