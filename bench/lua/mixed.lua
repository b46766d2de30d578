-- Scenario (c) mixed: 80% reads, 20% writes, random user per request.
--   40% list, 40% get, 5% create, 5% toggle, 5% update, 5% delete.
-- toggle/update/get hit seeded tasks the user owns; delete only removes tasks
-- this script created (parsed from the 201 bodies; the title carries the
-- owner's index). With none to delete yet, a delete turns into a create, so
-- the dataset grows by at most ~5% of the write volume.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local ids
local created = {}     -- stack of {id, u}
local n = 0

function init_scenario(args)
   ids = load_ids()
end

local function create(u)
   n = n + 1
   count("create")
   local body = '{"title":"mixed-' .. u .. '-' .. n .. '","description":"created by the wrk mixed scenario"}'
   return wrk.format("POST", "/api/tasks", headers_for(u, true), body)
end

function request()
   local r = math.random(100)
   local u = math.random(NUSERS)
   if r <= 40 then
      count("list")
      return wrk.format("GET", "/api/tasks", headers_for(u, false))
   end
   local own = ids[u]
   local id = own[math.random(#own)]
   if r <= 80 then
      count("get")
      return wrk.format("GET", "/api/tasks/" .. id, headers_for(u, false))
   elseif r <= 85 then
      return create(u)
   elseif r <= 90 then
      count("toggle")
      return wrk.format("PATCH", "/api/tasks/" .. id .. "/complete", headers_for(u, false))
   elseif r <= 95 then
      count("update")
      n = n + 1
      local body = '{"title":"updated ' .. n .. '","description":"updated by the wrk mixed scenario"}'
      return wrk.format("PUT", "/api/tasks/" .. id, headers_for(u, true), body)
   else
      local c = table.remove(created)
      if not c then return create(u) end
      count("delete")
      return wrk.format("DELETE", "/api/tasks/" .. c[1], headers_for(c[2], false))
   end
end

function response(status, headers, body)
   count_status(status)
   if status == 201 and body then
      local id = string.match(body, '"id"%s*:%s*"?(%d+)')
      local u = string.match(body, '"title"%s*:%s*"mixed%-(%d+)%-')
      if id and u then created[#created + 1] = { id, tonumber(u) } end
   end
end
