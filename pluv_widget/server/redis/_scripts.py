"""The Lua scripts: each one is a step that must be atomic across processes.

The heartbeat builds key names from data (the rooms a dead node was in), so these scripts
need a standalone Redis (or Sentinel), not Redis Cluster.
"""

#: Initial storage, exactly once: KEYS = updates, instance, settle; ARGV = update, a new
#: instance token, settle ms. Returns 1 (claimed), 0 (the room has storage) or -1 (Redis was
#: just found empty: wait for the processes holding rooms to re-seed them, then ask again).
CLAIM_INITIAL = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])
  return -1
end
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
redis.call('RPUSH', KEYS[1], ARGV[1])
return 1
"""

#: Compaction: KEYS = updates, version; ARGV = the version read with the first ``count``
#: updates, count, the merged snapshot. Replaces those updates by the snapshot and keeps every
#: update appended since (by any process); returns 0 without change if another compaction ran.
COMPACT = """
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then return 0 end
redis.call('LTRIM', KEYS[1], tonumber(ARGV[2]), -1)
redis.call('LPUSH', KEYS[1], ARGV[3])
redis.call('INCR', KEYS[2])
return 1
"""

#: Heartbeat and reaper: ARGV = prefix, node ('' for none), ttl ms, a new instance token,
#: settle ms. Renews the node's deadline, then removes every node whose deadline passed: its
#: members leave their rooms (a ``leave`` envelope each, as if they had left) and each of its
#: rooms gets a ``resync`` envelope (it may have committed an update it never published).
#: Returns {instance token, 1 if the node was registered before this call, reaped nodes}.
HEARTBEAT = """
local p = ARGV[1]
local node = ARGV[2]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local instance = redis.call('GET', p .. ':instance')
if not instance then
  instance = ARGV[4]
  redis.call('SET', p .. ':instance', instance)
  redis.call('SET', p .. ':settle', '1', 'PX', ARGV[5])
end
local known = 0
if node ~= '' then
  if redis.call('ZSCORE', p .. ':nodes', node) then known = 1 end
  redis.call('ZADD', p .. ':nodes', now + tonumber(ARGV[3]), node)
end
local reaped = {}
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', p .. ':nodes', '-inf', '(' .. now)) do
  local rooms_key = p .. ':node:' .. dead .. ':rooms'
  for _, room in ipairs(redis.call('SMEMBERS', rooms_key)) do
    local members_key = p .. ':room:' .. room .. ':members'
    local channel = p .. ':room:' .. room
    local entries = redis.call('HGETALL', members_key)
    for i = 1, #entries, 2 do
      local ok, entry = pcall(cjson.decode, entries[i + 1])
      if ok and entry['node'] == dead then
        redis.call('HDEL', members_key, entries[i])
        redis.call('PUBLISH', channel, cjson.encode({kind = 'leave', connection_id = entries[i], node = dead}))
      end
    end
    redis.call('PUBLISH', channel, cjson.encode({kind = 'resync', reseed = false, node = dead}))
  end
  redis.call('DEL', rooms_key)
  redis.call('ZREM', p .. ':nodes', dead)
  table.insert(reaped, dead)
end
return {instance, known, reaped}
"""
