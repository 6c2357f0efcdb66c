-- wrk script: POST /events with a unique id per request and the bench's ~350-byte payload
-- (the same shape as scripts/pgbench-upsert.sql), so every request stores a new event.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  run = tostring(os.time())
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if os.getenv("API_KEY") then
    wrk.headers["Authorization"] = "Bearer " .. os.getenv("API_KEY")
  end
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"id":"wrk-%s-%d-%d","type":"order.created","data":{"amount":%d,"currency":"EUR",' ..
    '"customer":{"id":"cus_%d","country":"BR","tier":"standard"},"items":[{"sku":"sku-%d",' ..
    '"qty":1,"price":19.9},{"sku":"sku-2","qty":1,"price":5.5}],"created_by":"bench"}}',
    run, tid, counter, counter % 1000, counter % 5000, counter % 97)
  return wrk.format(nil, "/events", nil, body)
end

function response(status, headers, body)
  if status ~= 201 then
    errors = (errors or 0) + 1
    if errors <= 3 then print("unexpected " .. status .. ": " .. body) end
  end
end
