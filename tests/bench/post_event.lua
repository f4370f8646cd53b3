-- wrk script: each request posts one single-event envelope, as a registry
-- does, with an event id unique across runs, threads and requests. The event is
-- event.json (shared with the pgbench baseline of the ingest benchmark):
-- its @ID@ (event and request id), @TAG@ and @TIME@ (now, to the second)
-- are filled in per request.
-- Arguments: TOKEN RUN [DELAY_MS]: RUN names the run (each run's ids are
-- new: wrk's random numbers repeat from run to run), DELAY_MS paces each
-- connection.
local threads = {}
local n = 0
local dir = string.match(debug.getinfo(1, "S").source, "^@(.*/)")

function setup(thread)
	n = n + 1
	thread:set("tid", n)
	table.insert(threads, thread)
end

-- The template cut at its placeholders: parts[1] @ID@ parts[2] @TIME@ ...
local function template()
	local f = assert(io.open(dir .. "event.json", "rb"))
	local text = f:read("*a")
	f:close()
	local parts, names, pos = {}, {}, 1
	while true do
		local s, e, name = string.find(text, "@(%u+)@", pos)
		if not s then break end
		table.insert(parts, string.sub(text, pos, s - 1))
		table.insert(names, name)
		pos = e + 1
	end
	table.insert(parts, string.sub(text, pos))
	return parts, names
end

function init(args)
	token = args[1]
	run = args[2]
	pause = tonumber(args[3] or "0")
	count = 0
	parts, names = template()
	wrk.method = "POST"
	wrk.headers["Content-Type"] = "application/vnd.docker.distribution.events.v1+json"
	wrk.headers["Authorization"] = "Bearer " .. token
end

function delay()
	return pause
end

function request()
	count = count + 1
	local values = {
		ID = string.format("bench-%s-%d-%d", run, tid, count),
		TAG = "t" .. count,
		TIME = os.date("!%Y-%m-%dT%H:%M:%SZ"),
	}
	local body = {'{"events":['}
	for i, name in ipairs(names) do
		table.insert(body, parts[i])
		table.insert(body, values[name])
	end
	table.insert(body, parts[#parts])
	table.insert(body, "]}")
	return wrk.format(nil, "/events", nil, table.concat(body))
end

-- done(): prints the RESULT line that common.wrk() reads.
dofile(dir .. "result.lua")
