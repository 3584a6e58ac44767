-- Frames for a session live on this pod that the pod's inbox may have missed while it
-- was down: those kept meanwhile (taken) and the last ones routed to it (read: the
-- caller keeps those past the last order number it delivered).
--
-- KEYS[1] the session's box  KEYS[2] its routed list
-- Returns {box entries, routed frames as "<n>:<frame>"}.
local entries = redis.call('XRANGE', KEYS[1], '-', '+')
redis.call('DEL', KEYS[1])
return {entries, redis.call('LRANGE', KEYS[2], 0, -1)}
