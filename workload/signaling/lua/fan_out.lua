-- include: route_lib
-- A room frame to the room's members on other pods (members on this pod are the
-- caller's); a replayable one is first appended to the room's stream with its offset
-- and epoch. One PUBLISH per destination pod (inbox message "r", see inbox).
--
-- KEYS[1] the room's members  [2] its meta  [3] its event stream
--     then per member the caller listed, 3 each: the session's hash, box, routed list
-- ARGV[1] frame (an encoded object)  [2] "1": to screens only  [3] session id left out
--     (the sender's)  [4] "1": replayable  [5] this pod  [6] now  [7] frames kept per
--     session at most  [8] how long kept and routed frames are held (s)  [9] an epoch,
--     if the room is new  [10] events kept at most  [11] room TTL (s)  [12] room
--     [13] inbox channel prefix  [14] "1" when it resends a frame answered `unavailable`
--     (a replayable one among the room's last 64 events is then returned as it was)
--     [15] bytes of events kept at most, then the listed members' peer ids, in KEYS order
-- Returns {1, the frame as sent, events the history bounds dropped}, or {0, {peer, ...}}
--         when the members are not the ones listed (nothing was done: call again).
local members = KEYS[1]
local first = 16
local listed = #ARGV - first + 1
local stale = redis.call('HLEN', members) ~= listed
for i = first, #ARGV do
  if stale then break end
  stale = redis.call('HEXISTS', members, ARGV[i]) == 0
end
if stale then return {0, redis.call('HKEYS', members)} end

local text, screens_only, exclude, replay = ARGV[1], ARGV[2] == '1', ARGV[3], ARGV[4] == '1'
local me, now, keep_max, hold = ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8]
local out, trimmed = text, 0
if replay and ARGV[14] == '1' then
  local head = string.sub(text, 1, -2) .. ',"offset":'
  for _, e in ipairs(redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 64)) do
    if string.sub(e[2][2], 1, #head) == head then return {1, e[2][2]} end
  end
end
if replay then
  redis.call('HSETNX', KEYS[2], 'epoch', ARGV[9])
  local epoch = redis.call('HGET', KEYS[2], 'epoch')
  local offset = redis.call('HINCRBY', KEYS[2], 'offset', 1)
  out = string.sub(text, 1, -2) .. ',"offset":' .. offset .. ',"epoch":"' .. epoch .. '"}'
  redis.call('XADD', KEYS[3], '*', 'f', out)
  -- the history's bounds, exact: the oldest events go until both hold
  local bytes = redis.call('HINCRBY', KEYS[2], 'bytes', #out)
  local count = redis.call('XLEN', KEYS[3])
  local max_count, max_bytes = tonumber(ARGV[10]), tonumber(ARGV[15])
  while count > max_count or bytes > max_bytes do
    local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)[1]
    if not oldest then break end
    redis.call('XDEL', KEYS[3], oldest[1])
    bytes = redis.call('HINCRBY', KEYS[2], 'bytes', -#oldest[2][2])
    count, trimmed = count - 1, trimmed + 1
  end
  redis.call('EXPIRE', KEYS[3], ARGV[11])
  redis.call('EXPIRE', KEYS[2], ARGV[11])
end
local bypod, order = {}, {}
for i = first, #ARGV do
  local k = 3 + (i - first) * 3
  local info = redis.call('HMGET', KEYS[k + 1], 'sid', 'pod', 'state', 'role')
  -- a member whose session expired is left to the sweep, which announces it once
  if info[1] and info[1] ~= exclude and info[2] ~= me
      and (not screens_only or info[4] == 'screen') then
    if info[3] == 'live' and info[2] ~= '' then
      local b = bypod[info[2]]
      if not b then
        b = {{}, {}, {}, {}}  -- peers, session ids, order numbers, key offsets
        bypod[info[2]] = b
        order[#order + 1] = info[2]
      end
      local j = #b[1] + 1
      b[1][j], b[2][j], b[3][j], b[4][j] = ARGV[i], info[1], next_n(KEYS[k + 1], nil), k
    else
      keep(KEYS[k + 1], KEYS[k + 2], out, keep_max, hold, nil)
    end
  end
end
for _, pod in ipairs(order) do
  local b = bypod[pod]
  local msg = 'r\31' .. now .. '\31' .. ARGV[12] .. '\31' .. table.concat(b[1], ',') .. '\31'
    .. table.concat(b[2], ',') .. '\31' .. table.concat(b[3], ',') .. '\31' .. out
  local listening = redis.call('PUBLISH', ARGV[13] .. pod, msg) > 0
  for j, k in ipairs(b[4]) do
    if listening then
      routed(KEYS[k + 3], b[3][j], out, hold)
    else
      keep(KEYS[k + 1], KEYS[k + 2], out, keep_max, hold, b[3][j])
    end
  end
end
return {1, out, trimmed}
