-- Scenario list10k: GET /api/tasks of one user holding 10,000 tasks (the
-- default MAX_TASKS_PER_USER), streamed by the service in keyset batches.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local req

function init_scenario(args)
   req = wrk.format("GET", "/api/tasks", { ["Authorization"] = "Bearer " .. HOARDER_TOKEN })
end

function request()
   return req
end
