"""Lua scripts of the Redis store: every state change is one script, one round trip.

Keys under the prefix ``P`` (KEYS[1]):

- ``P:job:ID``    hash of the job's fields (JSON blobs in ``spec``, ``tracks``, ``result``)
- ``P:queue``     zset of due queued jobs, score ``priority rank·1e13 + seq`` (priority, FIFO)
- ``P:delayed``   zset of queued jobs waiting for a retry, score = due time (ms)
- ``P:active``    zset of processing jobs, score = lease deadline (ms)
- ``P:s:STATUS``  zset per status, score = seq: O(1) counts (ZCARD), newest-first listing
- ``P:all``       zset of every job by seq;  ``P:ids`` zset (score 0) for prefix look-ups
- ``P:finished``  zset of finished jobs by completion time, for incremental retention
- ``P:live``      hash dedupe key → id of the live job
- ``P:events``    capped stream of transitions;  ``P:seq`` counter;  ``P:qpaused`` flag

Time is always the server's (``TIME``): clock skew between daemons changes nothing.
The transitions mirror :mod:`tidalq.store.rules`.
"""

PRELUDE = r"""
local P = KEYS[1]
local BACKOFF_BASE, BACKOFF_CAP, EVENT_CAP = 2000, 300000, 10000
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function jk(id) return P .. ':job:' .. id end
local function get(id, f) return redis.call('HGET', jk(id), f) end
local function is_live(s) return s == 'queued' or s == 'processing' or s == 'paused' end
local function emit(id, kind, status, progress, now)
  redis.call('XADD', P .. ':events', 'MAXLEN', '~', EVENT_CAP, '*', 'job', id, 'kind', kind,
             'status', status, 'progress', progress, 'at', now)
end
local function enqueue(id)
  local due = tonumber(get(id, 'nextRetryAt') or '')
  if due then
    redis.call('ZADD', P .. ':delayed', due, id)
  else
    local score = tonumber(get(id, 'prank')) * 1e13 + tonumber(get(id, 'seq'))
    redis.call('ZADD', P .. ':queue', score, id)
  end
end
local function unindex(id)
  redis.call('ZREM', P .. ':queue', id)
  redis.call('ZREM', P .. ':delayed', id)
  redis.call('ZREM', P .. ':active', id)
end
-- Moves the job to status NEW: per-status sets, dedupe map, finished index, event.
local function set_status(id, new, kind, now)
  local old = get(id, 'status')
  local seq = get(id, 'seq')
  if old ~= new then
    redis.call('ZREM', P .. ':s:' .. old, id)
    redis.call('ZADD', P .. ':s:' .. new, seq, id)
  end
  redis.call('HSET', jk(id), 'status', new, 'updatedAt', now)
  local d = get(id, 'dedupe')
  if is_live(new) then
    redis.call('HSET', P .. ':live', d, id)
    redis.call('ZREM', P .. ':finished', id)
  else
    if redis.call('HGET', P .. ':live', d) == id then redis.call('HDEL', P .. ':live', d) end
    redis.call('HSET', jk(id), 'completedAt', now, 'leaseUntil', '', 'pauseRequested', '0')
    redis.call('ZADD', P .. ':finished', now, id)
  end
  emit(id, kind, new, get(id, 'progress'), now)
end
local function full(id) return redis.call('HGETALL', jk(id)) end
-- Takes the best due job: promotes due retries, then pops by priority and FIFO.
local function claim_one(lease, token, worker)
  if redis.call('EXISTS', P .. ':qpaused') == 1 then return {} end
  local now = now_ms()
  local due = redis.call('ZRANGEBYSCORE', P .. ':delayed', '-inf', now, 'LIMIT', 0, 100)
  for _, id in ipairs(due) do
    redis.call('ZREM', P .. ':delayed', id)
    redis.call('HSET', jk(id), 'nextRetryAt', '')
    enqueue(id)
  end
  while true do
    local popped = redis.call('ZPOPMIN', P .. ':queue')
    if #popped == 0 then return {} end
    local id = popped[1]
    if get(id, 'status') == 'queued' then
      local attempts = tonumber(get(id, 'attempts')) + 1
      local started = get(id, 'startedAt')
      if not started or started == '' then started = now end
      redis.call('HSET', jk(id), 'token', token, 'leaseUntil', now + lease,
        'attempts', attempts, 'startedAt', started, 'nextRetryAt', '', 'worker', worker)
      redis.call('ZADD', P .. ':active', now + lease, id)
      set_status(id, 'processing', 'claimed', now)
      return full(id)
    end
  end
end
local function backoff(attempts, u)
  local d = math.min(BACKOFF_CAP, BACKOFF_BASE * 2 ^ math.max(0, attempts - 1))
  return math.floor(d / 2 + u * d / 2)
end
"""

FINISH_FN = r"""
-- Finishes a held job: complete, release or fail (retry scheduled or final).
local function finish_job(id, token, action, result, tracks, err, code, retryable, retry_after, u)
  if redis.call('EXISTS', jk(id)) == 0 then return {'notfound'} end
  local held = get(id, 'token')
  if not held or held == '' or held ~= token then return {'lost'} end
  if get(id, 'status') ~= 'processing' then return {'noop', full(id)} end
  local now = now_ms()
  if tracks ~= '' then redis.call('HSET', jk(id), 'tracks', tracks) end
  redis.call('ZREM', P .. ':active', id)
  if action == 'complete' then
    redis.call('HSET', jk(id), 'progress', 1, 'error', '', 'failureCode', '', 'result', result)
    set_status(id, 'completed', 'completed', now)
  elseif action == 'release' then
    local attempts = math.max(0, tonumber(get(id, 'attempts')) - 1)
    redis.call('HSET', jk(id), 'attempts', attempts, 'leaseUntil', '')
    if get(id, 'pauseRequested') == '1' then
      redis.call('HSET', jk(id), 'pauseRequested', '0')
      set_status(id, 'paused', 'paused', now)
    else
      enqueue(id)
      set_status(id, 'queued', 'released', now)
    end
  else
    redis.call('HSET', jk(id), 'error', err, 'failureCode', code)
    local attempts = tonumber(get(id, 'attempts'))
    if retryable == '1' and attempts < tonumber(get(id, 'maxAttempts')) then
      local delay = tonumber(retry_after)
      if not delay then delay = backoff(attempts, tonumber(u)) end
      redis.call('HSET', jk(id), 'nextRetryAt', now + math.max(0, delay), 'leaseUntil', '')
      enqueue(id)
      set_status(id, 'queued', 'retry_scheduled', now)
    else
      set_status(id, 'failed', 'failed', now)
    end
  end
  return {'ok', full(id)}
end
"""

SUBMIT = PRELUDE + r"""
local id, spec, dedupe, prank, priority, max_attempts =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local existing = redis.call('HGET', P .. ':live', dedupe)
if existing then return {0, full(existing)} end
local now = now_ms()
local seq = redis.call('INCR', P .. ':seq')
redis.call('HSET', jk(id), 'id', id, 'spec', spec, 'dedupe', dedupe, 'prank', prank,
  'priority', priority, 'maxAttempts', max_attempts, 'attempts', 0, 'progress', 0,
  'createdAt', now, 'updatedAt', now, 'seq', seq, 'stalls', 0, 'status', 'queued')
redis.call('ZADD', P .. ':s:queued', seq, id)
redis.call('ZADD', P .. ':all', seq, id)
redis.call('ZADD', P .. ':ids', 0, id)
redis.call('HSET', P .. ':live', dedupe, id)
enqueue(id)
emit(id, 'submitted', 'queued', 0, now)
return {1, full(id)}
"""

CLAIM = PRELUDE + r"""
return claim_one(tonumber(ARGV[1]), ARGV[2], ARGV[3])
"""

RENEW = PRELUDE + r"""
local id, token, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', jk(id)) == 0 or get(id, 'token') ~= token then return 'lost' end
local status = get(id, 'status')
if status == 'cancelled' then return 'cancelled' end
if status ~= 'processing' then return 'lost' end
local deadline = now_ms() + lease
redis.call('HSET', jk(id), 'leaseUntil', deadline)
redis.call('ZADD', P .. ':active', deadline, id)
if get(id, 'pauseRequested') == '1' then return 'pause' end
return 'held'
"""

PROGRESS = PRELUDE + r"""
local id, token, progress, tracks, done = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local titles = ARGV[6]
if redis.call('EXISTS', jk(id)) == 0 or get(id, 'token') ~= token then return 'lost' end
local status = get(id, 'status')
if status == 'cancelled' then return 'cancelled' end
if status ~= 'processing' then return 'lost' end
local now = now_ms()
redis.call('HSET', jk(id), 'progress', progress, 'updatedAt', now)
-- titles the daemon learned: kept as given, merged into the spec when read
if titles ~= '' then redis.call('HSET', jk(id), 'titles', titles) end
if tracks ~= '' then
  redis.call('HSET', jk(id), 'tracks', tracks)
  -- another album track done: durable progress, the stall count starts again
  if done > tonumber(get(id, 'doneTracks') or '0') then
    redis.call('HSET', jk(id), 'doneTracks', done, 'stalls', 0)
  end
end
emit(id, 'progress', status, progress, now)
if get(id, 'pauseRequested') == '1' then return 'pause' end
return 'held'
"""

FINISH = PRELUDE + FINISH_FN + r"""
return finish_job(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8],
                  ARGV[9], ARGV[10])
"""

# One round trip per job for a busy worker: finish one job and take the next.
FINISH_AND_CLAIM = PRELUDE + FINISH_FN + r"""
local done = finish_job(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8],
                        ARGV[9], ARGV[10])
if done[1] ~= 'ok' and done[1] ~= 'noop' then return {done, {}} end
return {done, claim_one(tonumber(ARGV[11]), ARGV[12], ARGV[13])}
"""

# ARGV[1] = stall limit; ARGV[2..] = workers known to be dead (their jobs go at once).
REAP = PRELUDE + r"""
-- ARGV: max stalls, the number of dead workers, their names, then the job ids to spare
local max_stalls, n_dead = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local dead, spare = {}, {}
for i = 3, 2 + n_dead do dead[ARGV[i]] = true end
for i = 3 + n_dead, #ARGV do spare[ARGV[i]] = true end
local expired = {}
local lapsed = redis.call('ZRANGEBYSCORE', P .. ':active', '-inf', '(' .. now, 'LIMIT', 0, 1000)
for _, id in ipairs(lapsed) do
  if not spare[id] or dead[get(id, 'worker') or ''] then table.insert(expired, id) end
end
if n_dead > 0 then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':active', '(' .. now, '+inf')) do
    if dead[get(id, 'worker') or ''] then table.insert(expired, id) end
  end
end
for _, id in ipairs(expired) do
  redis.call('ZREM', P .. ':active', id)
  local stalls = tonumber(get(id, 'stalls') or '0') + 1
  redis.call('HSET', jk(id), 'stalls', stalls, 'token', '')
  if stalls >= max_stalls then
    redis.call('HSET', jk(id), 'error', 'stalled ' .. stalls .. ' times: its worker kept dying',
      'failureCode', 'STALLED')
    set_status(id, 'failed', 'failed', now)
  else
    local attempts = math.max(0, tonumber(get(id, 'attempts')) - 1)
    redis.call('HSET', jk(id), 'attempts', attempts, 'leaseUntil', '')
    enqueue(id)
    set_status(id, 'queued', 'stalled', now)
  end
end
return expired
"""

# User operations: ARGV[1] = job id, ARGV[2] = operation.
USER = PRELUDE + r"""
local id, op = ARGV[1], ARGV[2]
if redis.call('EXISTS', jk(id)) == 0 then return {'notfound'} end
local status = get(id, 'status')
local now = now_ms()
if op == 'cancel' then
  if not is_live(status) then return {'illegal', status} end
  unindex(id)
  redis.call('HSET', jk(id), 'error', 'cancelled', 'failureCode', 'CANCELLED', 'nextRetryAt', '')
  set_status(id, 'cancelled', 'cancelled', now)
elseif op == 'retry' then
  if status ~= 'failed' and status ~= 'cancelled' then return {'illegal', status} end
  local other = redis.call('HGET', P .. ':live', get(id, 'dedupe'))
  if other and other ~= id then return {'conflict', other} end
  redis.call('HSET', jk(id), 'attempts', 0, 'stalls', 0, 'error', '', 'failureCode', '',
    'completedAt', '', 'nextRetryAt', '', 'token', '')
  enqueue(id)
  set_status(id, 'queued', 'retried', now)
elseif op == 'pause' then
  if status == 'processing' then
    redis.call('HSET', jk(id), 'pauseRequested', '1', 'updatedAt', now)
    emit(id, 'pause_requested', status, get(id, 'progress'), now)
    return {'ok', full(id)}
  end
  if status ~= 'queued' then return {'illegal', status} end
  unindex(id)
  set_status(id, 'paused', 'paused', now)
elseif op == 'resume' then
  if status == 'processing' and get(id, 'pauseRequested') == '1' then
    redis.call('HSET', jk(id), 'pauseRequested', '0', 'updatedAt', now)
    emit(id, 'resumed', status, get(id, 'progress'), now)
    return {'ok', full(id)}
  end
  if status ~= 'paused' then return {'illegal', status} end
  enqueue(id)
  set_status(id, 'queued', 'resumed', now)
elseif op == 'priority' then
  if status ~= 'queued' and status ~= 'paused' then return {'illegal', status} end
  redis.call('HSET', jk(id), 'priority', ARGV[3], 'prank', ARGV[4], 'updatedAt', now)
  if redis.call('ZSCORE', P .. ':queue', id) then  -- due now: its place moves
    redis.call('ZADD', P .. ':queue', tonumber(ARGV[4]) * 1e13 + tonumber(get(id, 'seq')), id)
  end
  emit(id, 'priority_changed', status, get(id, 'progress'), now)
  return {'ok', full(id)}
elseif op == 'annotate' then
  -- string fields only, so cjson's number formatting never touches an id
  local patch = cjson.decode(get(id, 'patch') or '{}')
  for k, v in pairs(cjson.decode(ARGV[3])) do patch[k] = v end
  redis.call('HSET', jk(id), 'patch', cjson.encode(patch), 'updatedAt', now)
  emit(id, 'annotated', status, get(id, 'progress'), now)
elseif op == 'remove' then
  if is_live(status) then return {'illegal', status} end
  redis.call('DEL', jk(id))
  redis.call('ZREM', P .. ':s:' .. status, id)
  redis.call('ZREM', P .. ':all', id)
  redis.call('ZREM', P .. ':ids', id)
  redis.call('ZREM', P .. ':finished', id)
  emit(id, 'removed', status, 0, now)
  return {'removed'}
end
return {'ok', full(id)}
"""

PURGE = PRELUDE + r"""
local older_ms, batch = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', P .. ':finished', '-inf', '(' .. (now - older_ms),
                       'LIMIT', 0, batch)
for _, id in ipairs(ids) do
  local status = get(id, 'status')
  redis.call('DEL', jk(id))
  if status then redis.call('ZREM', P .. ':s:' .. status, id) end
  redis.call('ZREM', P .. ':all', id)
  redis.call('ZREM', P .. ':ids', id)
  redis.call('ZREM', P .. ':finished', id)
  emit(id, 'removed', status or 'completed', 0, now)
end
return #ids
"""

QUEUE_PAUSE = PRELUDE + r"""
local now = now_ms()
if ARGV[1] == '1' then
  redis.call('SET', P .. ':qpaused', '1')
  emit('', 'queue_paused', '', 0, now)
else
  redis.call('DEL', P .. ':qpaused')
  emit('', 'queue_resumed', '', 0, now)
end
return 1
"""

NEXT_DUE = PRELUDE + r"""
local first = redis.call('ZRANGE', P .. ':delayed', 0, 0, 'WITHSCORES')
if #first == 0 then return -1 end
return math.max(0, tonumber(first[2]) - now_ms())
"""

# Follows: P:follows (id -> doc, opaque JSON), P:follows:key (kind:ref -> id),
# P:follows:due (zset id -> next check or lease end), P:follows:token (id -> token).
FOLLOW_ADD = PRELUDE + r"""
local id, key, doc, due = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local existing = redis.call('HGET', P .. ':follows:key', key)
if existing then return {0, redis.call('HGET', P .. ':follows', existing)} end
redis.call('HSET', P .. ':follows', id, doc)
redis.call('HSET', P .. ':follows:key', key, id)
redis.call('ZADD', P .. ':follows:due', due, id)
return {1, doc}
"""

FOLLOW_REMOVE = PRELUDE + r"""
local id = ARGV[1]
local doc = redis.call('HGET', P .. ':follows', id)
if not doc then return 0 end
local keys = redis.call('HGETALL', P .. ':follows:key')
for i = 1, #keys, 2 do
  if keys[i + 1] == id then redis.call('HDEL', P .. ':follows:key', keys[i]) end
end
redis.call('HDEL', P .. ':follows', id)
redis.call('HDEL', P .. ':follows:token', id)
redis.call('ZREM', P .. ':follows:due', id)
return 1
"""

FOLLOW_CLAIM = PRELUDE + r"""
local lease, token = tonumber(ARGV[1]), ARGV[2]
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', P .. ':follows:due', '-inf', now, 'LIMIT', 0, 1)
if #due == 0 then return false end
local id = due[1]
redis.call('ZADD', P .. ':follows:due', now + lease, id)
redis.call('HSET', P .. ':follows:token', id, token)
return redis.call('HGET', P .. ':follows', id)
"""

FOLLOW_FINISH = PRELUDE + r"""
local id, token, doc, due = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HGET', P .. ':follows:token', id) ~= token then return 0 end
if not redis.call('HGET', P .. ':follows', id) then return 0 end
redis.call('HSET', P .. ':follows', id, doc)
redis.call('HDEL', P .. ':follows:token', id)
redis.call('ZADD', P .. ':follows:due', due, id)
return 1
"""


# A shared lock (the publish lock of one library folder): renewed and released only by the
# token that holds it, so a holder whose lock expired and was taken cannot touch the new one.
LOCK_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

LOCK_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
