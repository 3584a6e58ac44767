-- Refreshes this pod's live sessions: their TTL, and the busy mark of those whose
-- offer/answer state changed. A few calls per heartbeat, where a command per session
-- stalled a pod holding thousands of them. A session removed meanwhile is not
-- recreated (a bare HSET would leave a hash without TTL behind, which the sweep would
-- take for a live session for ever).
--
-- KEYS  the sessions' hashes
-- ARGV[1] live-session TTL (s), then per session its busy mark (unix time, 0 for none)
--     or '' when it did not change
-- Returns the number of sessions refreshed.
local n = 0
for i = 1, #KEYS do
  if redis.call('EXPIRE', KEYS[i], ARGV[1]) == 1 then
    n = n + 1
    if ARGV[i + 1] ~= '' then redis.call('HSET', KEYS[i], 'busy', ARGV[i + 1]) end
  end
end
return n
