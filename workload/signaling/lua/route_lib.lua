-- Helpers of the scripts that route frames to a session (included, never run alone).
-- skey, box, rkey: the session's hash, box and routed list (keys.session_keys).
-- hold: seconds kept and routed frames are held (a live session's TTL), so that frames
-- for a session whose pod died are still there when it resumes; the sweep frees them.

-- n orders a session's frames across pods: assigned once, when a frame is first routed
local function next_n(skey, n)
  if n ~= nil and n ~= '' then return n end
  return redis.call('HINCRBY', skey, 'n', 1)
end

-- keep a frame for the session's resume: bounded, the oldest dropped and counted
local function keep(skey, box, text, keep_max, hold, n)
  if redis.call('XLEN', box) >= keep_max then redis.call('HINCRBY', skey, 'dropped', 1) end
  redis.call('XADD', box, 'MAXLEN', keep_max, '*', 'n', next_n(skey, n), 'f', text)
  redis.call('EXPIRE', box, hold)
end

-- the last frames published to a session's pod: if that pod dies with them in flight,
-- a resume finds them here (the client says which it got with last_rn)
local function routed(rkey, n, text, hold)
  -- at least the last 64, trimmed once per 32 frames rather than on every one
  if redis.call('LPUSH', rkey, n .. ':' .. text) > 96 then redis.call('LTRIM', rkey, 0, 63) end
  redis.call('EXPIRE', rkey, hold)
end

-- whether a session already has this very frame (a resend of one answered
-- `unavailable` whose first try went through after all): 1 routed to its pod (among the
-- last 64 to 96), 2 kept for its resume; nil if not
local function already(rkey, box, text)
  for _, e in ipairs(redis.call('LRANGE', rkey, 0, -1)) do
    local colon = string.find(e, ':', 1, true)
    if colon and string.sub(e, colon + 1) == text then return 1 end
  end
  for _, e in ipairs(redis.call('XRANGE', box, '-', '+')) do
    if e[2][4] == text then return 2 end  -- fields: n, <n>, f, <frame>
  end
  return nil
end

