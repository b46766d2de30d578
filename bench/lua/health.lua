-- Scenario health: GET /health, the HTTP ceiling (no auth, no database): what
-- the HTTP stack alone answers with the same wrk settings. Every other
-- scenario's throughput is reported as a ratio of this one's.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local req

function init_scenario(args)
   req = wrk.format("GET", API.health)
end

function request()
   return req
end
