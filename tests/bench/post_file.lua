-- wrk script: each request posts the same body, read from a file, as a
-- delivery does (the benchmark saves a delivered payload there).
-- Arguments: PATH of the body.

function init(args)
	local f = assert(io.open(args[1], "rb"))
	wrk.method = "POST"
	wrk.body = f:read("*a")
	wrk.headers["Content-Type"] = "application/json"
	f:close()
end

-- done(): prints the RESULT line that common.wrk() reads.
dofile(string.match(debug.getinfo(1, "S").source, "^@(.*/)") .. "result.lua")
