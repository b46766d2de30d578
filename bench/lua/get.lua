-- Scenario (b) get: GET /api/tasks/{id} of a task owned by a random user.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local ids

function init_scenario(args)
   ids = load_ids()
end

function request()
   local u = math.random(NUSERS)
   local own = ids[u]
   return wrk.format("GET", API.item .. own[math.random(#own)], headers_for(u, false))
end
