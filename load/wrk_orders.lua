-- wrk_orders.lua: POST /api/v1/orders as many users, one unit of one hot product each.
-- Tokens come one a line from the file named by the TOKENS environment variable; each
-- wrk thread walks them round robin from its own offset.
local tokens, i = {}, 0
local product = os.getenv("PRODUCT_ID") or "1"
local body = '{"items":[{"product_id":' .. product .. ',"quantity":1}]}'

function setup(thread)
  thread:set("offset", math.random(1, 100000))
end

function init(args)
  for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
  i = offset or 0
end

function request()
  i = i + 1
  local headers = {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. tokens[i % #tokens + 1]}
  return wrk.format("POST", "/api/v1/orders", headers, body)
end

-- The one-line JSON report (done) is shared with the plain GET runs.
dofile(debug.getinfo(1, "S").source:match("@(.*/)") .. "wrk_report.lua")
