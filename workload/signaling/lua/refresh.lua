-- Refreshes this pod's live sessions: their TTL, and the busy mark of those whose
-- offer/answer state changed. A few calls per heartbeat, where a command per session
-- stalled a pod holding thousands of them. A session removed meanwhile is not
-- recreated (a bare HSET would leave a hash without TTL behind, which the sweep would
-- take for a live session for ever).
--
-- A session this pod holds live that the registry has in grace with no pod was turned
-- by someone who took this pod for dead (its heartbeat was late: its record expired,
-- and its next beat wrote the record back just after the claim). It is returned, not
-- refreshed: the caller restores it and delivers what was kept for it meanwhile.
--
-- KEYS  the sessions' hashes
-- ARGV[1] live-session TTL (s), then per session its busy mark (unix time, 0 for none)
--     or '' when it did not change
-- Returns the positions (1-based) of the sessions claimed as dead.
local claimed = {}
for i = 1, #KEYS do
  if redis.call('HGET', KEYS[i], 'pod') == '' then
    claimed[#claimed + 1] = i
  elseif redis.call('EXPIRE', KEYS[i], ARGV[1]) == 1 then
    if ARGV[i + 1] ~= '' then redis.call('HSET', KEYS[i], 'busy', ARGV[i + 1]) end
  end
end
return claimed
