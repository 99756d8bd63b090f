-- `client_credentials` with a confidential client: the same request every time.
-- args: the Basic credentials (base64 of client_id:secret), the resource.
function init(args)
  wrk.method = "POST"
  wrk.headers["content-type"] = "application/x-www-form-urlencoded"
  wrk.headers["authorization"] = "Basic " .. args[1]
  wrk.body = "grant_type=client_credentials&scope=mcp%3Atools&resource=" .. args[2]
end
