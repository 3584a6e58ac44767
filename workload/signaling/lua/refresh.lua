-- Refreshes the TTL of this pod's live sessions: a few calls per heartbeat, where a
-- command per session stalled a pod holding thousands of them.
--
-- KEYS  the sessions' hashes
-- ARGV[1] live-session TTL (s)
-- Returns the number of keys refreshed.
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
return #KEYS
