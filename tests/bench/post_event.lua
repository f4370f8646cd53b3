-- wrk script: each request posts one single-event envelope, as a registry
-- does, with an event id unique across threads and requests.
-- Arguments: TOKEN [DELAY_MS] (DELAY_MS paces each connection).
local threads = {}
local n = 0

function setup(thread)
	n = n + 1
	thread:set("tid", n)
	table.insert(threads, thread)
end

function init(args)
	token = args[1]
	pause = tonumber(args[2] or "0")
	count = 0
	wrk.method = "POST"
	wrk.headers["Content-Type"] = "application/vnd.docker.distribution.events.v1+json"
	wrk.headers["Authorization"] = "Bearer " .. token
end

function delay()
	return pause
end

function request()
	count = count + 1
	local id = string.format("bench-%d-%d-%d", tid, count, math.random(1, 1000000000))
	local body = string.format([[{"events":[{"id":"%s","timestamp":"2026-11-22T18:20:32.255357202Z","action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":344,"digest":"sha256:33d33c66ce742601e7b4219cce65aa7ecbd527d207a1e962c0f5bcb738284f43","length":344,"repository":"team-a/app","url":"http://127.0.0.1:5000/v2/team-a/app/manifests/sha256:33d33c66ce742601e7b4219cce65aa7ecbd527d207a1e962c0f5bcb738284f43","tag":"t%d"},"request":{"id":"%s","addr":"127.0.0.1:59598","host":"127.0.0.1:5000","method":"PUT","useragent":"skopeo/1.9.3"},"actor":{"name":"alice"},"source":{"addr":"vm:5000","instanceID":"afb33126-3a97-4354-8d36-b8fb91f8910d"}}]}]], id, count, id)
	return wrk.format(nil, "/events", nil, body)
end

-- done(): prints the RESULT line that common.wrk() reads.
dofile(string.match(debug.getinfo(1, "S").source, "^@(.*/)") .. "result.lua")
