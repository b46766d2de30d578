-- Cost growth: GET /api/tasks of one user holding BENCH_GROWTH_SIZE tasks
-- (10, 100, 1,000 or 10,000; seeded by bench.py as bench-growth-<size>).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local req

function init_scenario(args)
   local size = os.getenv("BENCH_GROWTH_SIZE")
   local token = GROWTH[size]
   if not token then error("no growth user with " .. tostring(size) .. " tasks") end
   req = wrk.format("GET", "/api/tasks", { ["Authorization"] = "Bearer " .. token })
end

function request()
   return req
end
