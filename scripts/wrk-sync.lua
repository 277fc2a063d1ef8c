-- wrk replays one authenticated device sync (file named by $SYNC_BODY) as fast as it can.
local f = assert(io.open(os.getenv("SYNC_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
wrk.headers["Content-Type"] = "application/octet-stream"
f:close()

function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("unexpected status " .. status .. ": " .. body .. "\n")
  end
end
