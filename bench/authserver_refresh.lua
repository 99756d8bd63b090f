-- Refresh rotation: every request spends a refresh token and the answer's successor goes back
-- into the pool, so every request is a real rotation (a token is never sent twice).
-- args: the file of refresh tokens (one a line), the client_id, the resource (URL-encoded), the
-- number of wrk threads. Thread n takes every lines-th token from line n.
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end

local pool, head, tail = {}, 1, 0
local prefix

function init(args)
  local n, line_no = tonumber(args[4]), 0
  for line in io.lines(args[1]) do
    if line_no % n == id then
      tail = tail + 1
      pool[tail] = line
    end
    line_no = line_no + 1
  end
  wrk.method = "POST"
  wrk.headers["content-type"] = "application/x-www-form-urlencoded"
  prefix = "grant_type=refresh_token&client_id=" .. args[2] .. "&resource=" .. args[3] .. "&refresh_token="
end

function request()
  -- An empty pool (answers refused) sends an empty token: the refusal shows as a non-2xx.
  local token = pool[head] or ""
  pool[head] = nil
  head = head + 1
  return wrk.format(nil, nil, nil, prefix .. token)
end

function response(status, headers, body)
  local successor = body:match('"refresh_token":"([^"]+)"')
  if successor then
    tail = tail + 1
    pool[tail] = successor
  end
end
