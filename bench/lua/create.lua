-- Scenario (d) create: POST /api/tasks as a random user per request.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local n = 0

function request()
   local u = math.random(NUSERS)
   n = n + 1
   local body = '{"title":"bench create ' .. n .. '","description":"created by the wrk create scenario"'
      .. create_extra(u) .. '}'
   return wrk.format("POST", API.create, headers_for(u, true), body)
end
