-- wrk_payments.lua: issue 28's payment calls as many users (load/bench_stack.py --payments).
-- MODE (environment) says which:
--   preview   POST /api/v1/orders/preview, one unit of PRODUCT_ID (the body of an order);
--   deferred  POST /api/v1/orders, the same unit with "payment":"DEFERRED";
--   pay       POST /api/v1/orders/{id}/pay {} for each line "<order id> <token>" of the file
--             PAYS names: thread k of THREADS (2, as bench_api.wrk runs wrk) pays the lines
--             k, k + THREADS, ..., each once, and stops when it has sent its last one (a
--             second pay of an order would answer it again, cheaply: not what is measured).
-- Tokens come as in wrk_orders.lua, and every request is formatted once, in init, as it does.
local requests, i = {}, 0
local mode = os.getenv("MODE") or "preview"
local product = os.getenv("PRODUCT_ID") or "1"
local line = '{"product_id":' .. product .. ',"quantity":1}'
local threads = 0

function setup(thread)
  thread:set("offset", math.random(1, 100000))
  thread:set("index", threads)
  threads = threads + 1
end

local function post(path, token, body)
  return wrk.format("POST", path, {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token}, body)
end

function init(args)
  if mode == "pay" then
    local every, k = tonumber(os.getenv("THREADS") or "2"), 0
    for entry in io.lines(os.getenv("PAYS")) do
      local id, token = entry:match("^(%d+) (%S+)$")
      if id and k % every == index then
        requests[#requests + 1] = post("/api/v1/orders/" .. id .. "/pay", token, "{}")
      end
      k = k + 1
    end
    i = 0
    return
  end
  local path, body = "/api/v1/orders/preview", '{"items":[' .. line .. ']}'
  if mode == "deferred" then
    path, body = "/api/v1/orders", '{"items":[' .. line .. '],"payment":"DEFERRED"}'
  end
  for token in io.lines(os.getenv("TOKENS")) do
    requests[#requests + 1] = post(path, token, body)
  end
  i = offset or 0
end

function request()
  i = i + 1
  if mode == "pay" then
    if i >= #requests then  -- its last (or, asked again before the loop ends, once more)
      wrk.thread:stop()
      return requests[#requests]
    end
    return requests[i]
  end
  return requests[i % #requests + 1]
end

-- The one-line JSON report (done) is shared with the plain GET runs.
dofile(debug.getinfo(1, "S").source:match("@(.*/)") .. "wrk_report.lua")
