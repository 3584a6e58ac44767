-- include: route_lib
-- One pod's relays, in call order, each to one peer of a room: published to the pod
-- the peer is live on, or kept for its resume. Look-ups are made once per target, and
-- the frames for one pod leave in one PUBLISH (inbox message "b", see inbox).
--
-- KEYS  per relay, 3 each: the target session's hash, box, routed list
-- ARGV[1] this pod  [2] now (the sender's clock)  [3] frames kept per session at most
--     [4] how long kept and routed frames are held (s)  [5] inbox channel prefix
--     then per relay, 4 each: room, peer, frame, "1" when it resends a frame answered
--     `unavailable` (then, if the session already has it, it is answered as before)
-- Returns one code per relay: 0 no such peer, 1 published to its pod, 2 kept for its
--         resume, 3 live on this very pod (the caller delivers it).
local me, now, keep_max, hold, inbox = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
-- few tables, whatever the batch size: most batches are a frame or two
local codes, found = {}, {}
local dpod, dk, dn, drec = {}, {}, {}, {}
local k = 0
for i = 6, #ARGV, 4 do
  k = k + 1
  local skey = KEYS[k * 3 - 2]
  local f = found[skey]
  if f == nil then
    f = redis.call('HMGET', skey, 'pod', 'state', 'sid')
    if not f[3] then f = false end
    found[skey] = f
  end
  local had = f and ARGV[i + 3] == '1' and already(KEYS[k * 3], KEYS[k * 3 - 1], ARGV[i + 2])
  if not f then
    codes[k] = 0
  elseif had then
    codes[k] = had
  elseif f[2] == 'live' and f[1] == me then
    codes[k] = 3
  elseif f[2] == 'live' and f[1] ~= '' then
    local j = #dk + 1
    local n = redis.call('HINCRBY', skey, 'n', 1)
    dpod[j], dk[j], dn[j] = f[1], k, n
    -- the frame rides as it is, never re-escaped (record layout: see inbox)
    drec[j] = ARGV[i] .. '\31' .. ARGV[i + 1] .. '\31' .. f[3] .. '\31' .. n .. '\31' .. ARGV[i + 2]
    codes[k] = 1
  else
    keep(skey, KEYS[k * 3 - 1], ARGV[i + 2], keep_max, hold, nil)
    codes[k] = 2
  end
end
-- one PUBLISH per destination pod, in first-seen order
local m, sent = #dk, {}
for j = 1, m do
  local pod = dpod[j]
  if not sent[pod] then
    sent[pod] = true
    local parts = {'b\31' .. now}
    for q = j, m do
      if dpod[q] == pod then parts[#parts + 1] = drec[q] end
    end
    local listening = redis.call('PUBLISH', inbox .. pod, table.concat(parts, '\30')) > 0
    for q = j, m do
      if dpod[q] == pod then
        local r = dk[q]
        local text = ARGV[r * 4 + 4]
        if listening then
          routed(KEYS[r * 3], dn[q], text, hold)
        else
          keep(KEYS[r * 3 - 2], KEYS[r * 3 - 1], text, keep_max, hold, dn[q])
          codes[r] = 2
        end
      end
    end
  end
end
return codes
