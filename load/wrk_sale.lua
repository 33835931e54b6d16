-- wrk_sale.lua: POST /api/v1/orders as many users, one unit of a random option of one
-- product each (load/bench_stack.py --sale). OPTION_IDS names the options, comma-separated
-- (empty: a plain product, no option_id); tokens come as in wrk_orders.lua, and every
-- request (each token with each option) is formatted once, in init, as it does.
local requests, i = {}, 0
local product = os.getenv("PRODUCT_ID") or "1"
local options = {}
for id in string.gmatch(os.getenv("OPTION_IDS") or "", "%d+") do options[#options + 1] = id end

local function body(option)
  local line = '{"product_id":' .. product .. ',"quantity":1'
  if option then line = line .. ',"option_id":' .. option end
  return '{"items":[' .. line .. '}]}'
end

function setup(thread)
  thread:set("offset", math.random(1, 100000))
end

function init(args)
  local bodies = {}
  for k, id in ipairs(options) do bodies[k] = body(id) end
  if #bodies == 0 then bodies[1] = body(nil) end
  for token in io.lines(os.getenv("TOKENS")) do
    local headers = {["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. token}
    local each = {}
    for k, b in ipairs(bodies) do each[k] = wrk.format("POST", "/api/v1/orders", headers, b) end
    requests[#requests + 1] = each
  end
  i = offset or 0
end

function request()
  i = i + 1
  local each = requests[i % #requests + 1]
  return each[math.random(#each)]
end

-- The one-line JSON report (done) is shared with the plain GET runs.
dofile(debug.getinfo(1, "S").source:match("@(.*/)") .. "wrk_report.lua")
