//! The Lua scripts of the Redis store: every step that must be atomic.
//!
//! Each script touches the keys of one hash slot only (see `layout.rs`), so
//! the same text runs on one server and on a cluster.

/// The atomic appends described in `log.rs`, several per call. Keys: heads
/// hash, states hash, the event stream, the attempts hash, then the history
/// stream of each log the call touches. Args: history length cap, idle
/// expiry in ms, the live channel, this attempt's tag, the write format
/// (see [`crate::WriteFormat`]), then one *run* after another: appends of
/// one log with consecutive sequence numbers, each run as
/// `slot, log, first seq, count, entries, state, stream entries`.
/// `slot` is the index of the log's history key in KEYS; `entries` the
/// run's entries joined by newlines (entries are one line each). Returns
/// `head, retry` per run: the log's head before the run, and 1 when the
/// run's log was last written by this same attempt (see below). What
/// happened to each append follows from those (`run_outcomes`): below or at
/// the head a duplicate, beyond head + 1 a gap, the rest applied.
///
/// History entries: up to format 2, one per append, its id `<seq>-1` and
/// its entry in field `e`; from format 3, one per run, its id
/// `<last seq>-<first seq>` and the run's entries, newline-joined, in field
/// `b`. Either way a history's ids grow with the sequence numbers, so a
/// range read by sequence number is a plain XRANGE from `<seq>-0`, and the
/// history is trimmed by sequence number with `MINID` (entries whose last
/// append is among the newest `cap`: a run is kept whole).
///
/// Event stream entries: up to format 2, one per append (fields `log`,
/// `seq`, and `e`, the stream entry as it is); from format 3, one per run
/// (fields `log`, `seq` of its first append, `n` appends, and `r`, their
/// stream entries, each framed by its length in 4 big-endian bytes). Runs
/// of more than one append only come in calls of format 3, so up to format
/// 2 `stream entries` is the one append's stream entry. A run that starts
/// at or below the head loses its duplicates' lines and frames.
///
/// Format 3 thus writes a run with two XADDs instead of two per append: in
/// bulk ingest a call holds a few events of each match, and each command a
/// script runs costs Redis several times the command itself (a synthetic
/// call of 22 runs of 3: 10.6 to 12.5 µs an event with a stream entry per
/// append, 8.3 to 9.7 with one per run).
///
/// The attempt tag tells a retry from a replay: the client library sends a
/// call again when its connection drops before the answer (a failover),
/// and the second time the appends are at the head already. An append
/// whose sequence number is the head that this same attempt wrote is
/// answered applied, not duplicate, so the publisher hears what happened.
/// Only the head's attempt is kept: one hash field per log.
///
/// Each run is checked against the head its predecessors in the call left.
/// The heads are read in one HMGET and the new heads, states and attempts
/// written in one HSET each at the end of the call. Nobody sees the call
/// half done (a script runs alone); if a write is refused midway (a key of
/// the wrong type), the heads, states and publications of the runs before
/// it are still written before the error is returned, and the refused one
/// wrote nothing (the history's XADD, with its explicit id, is the write
/// that can be refused, so it goes first), so every append is whole or
/// absent.
///
/// What the call pays once per log, not per append (the history's expiry,
/// the state, the head) is why the store groups a call's appends by log. A
/// state is sent as bytes, or, when the run's last entry ends with it and
/// one more byte (a JSON update closing around its state), as its length
/// with the slot negated: the bytes travel once, inside the entry. Format 2
/// publishes the call's entries as one message, joined by newlines; format
/// 3 a run's, which is the string it received: joining a call's runs in
/// the script (`table.concat`) cost a tenth of Redis's CPU in bulk ingest,
/// more than a `PUBLISH` per run (Redis's Lua hashes every byte of every
/// string it makes).
///
/// `PUBLISH` is replaced by `SPUBLISH` on a cluster ([`append_script`]).
///
/// Measured (Redis 7.0, 64 appends per call, 1,000 matches, format 2): the
/// call's arguments alone cost Redis about 1.4 ns a byte plus 0.1 µs an
/// argument; each XADD from the script some 2 to 3 µs; the rest is the
/// interpreter.
const APPEND_SCRIPT: &str = r#"
local maxlen, idle, channel, attempt = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local format = tonumber(ARGV[5])
local logs, seen, runs = {}, {}, {}
local i = 6
while i <= #ARGV do
  runs[#runs + 1] = i
  local log = ARGV[i + 1]
  if not seen[log] then
    seen[log] = true
    logs[#logs + 1] = log
  end
  i = i + 7
end
local heads, stored = {}, redis.call('HMGET', KEYS[1], unpack(logs))
for n, log in ipairs(logs) do
  heads[log] = tonumber(stored[n] or '0')
end

local changed, new_head, last, expiring, published, out = {}, {}, {}, {}, {}, {}
-- Writes go through pcall so a refused one stops the call cleanly (see
-- above); a refusal is the only table these commands answer.
local failed
for _, i in ipairs(runs) do
  local history, log = KEYS[math.abs(tonumber(ARGV[i]))], ARGV[i + 1]
  local first, count = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local final, head = first + count - 1, heads[log]
  local retry = 0
  if first <= head and not new_head[log] and redis.call('HGET', KEYS[4], log) == attempt then
    retry = 1
  end
  out[#out + 1] = head
  out[#out + 1] = retry
  if first <= head + 1 and final > head then
    -- The appends at or below the head are duplicates: their lines go.
    local skip, entries = head + 1 - first, ARGV[i + 4]
    if skip > 0 then
      local at = 1
      for _ = 1, skip do
        at = string.find(entries, '\n', at, true) + 1
      end
      entries = string.sub(entries, at)
    end
    local oldest, reply = string.format('%d-0', math.max(final - maxlen + 1, 0))
    if format >= 3 then
      reply = redis.pcall('XADD', history, 'MINID', oldest, string.format('%d-%d', final, head + 1), 'b', entries)
    else
      reply = redis.pcall('XADD', history, 'MINID', oldest, string.format('%d-1', final), 'e', entries)
    end
    if type(reply) == 'table' then failed = reply break end
    if not new_head[log] then changed[#changed + 1] = log end
    new_head[log], last[log], heads[log] = final, i, final
    if not expiring[history] then
      expiring[history] = true
      local reply = redis.pcall('PEXPIRE', history, idle)
      if type(reply) == 'table' then failed = reply break end
    end
    local stream, reply = ARGV[i + 6]
    if format >= 3 then
      -- One stream entry for the run: its entries framed by 4-byte
      -- big-endian lengths, the duplicates' frames cut off.
      local at = 1
      for _ = 1, skip do
        local a, b, c, d = string.byte(stream, at, at + 3)
        at = at + 4 + ((a * 256 + b) * 256 + c) * 256 + d
      end
      if at > 1 then stream = string.sub(stream, at) end
      reply = redis.pcall('XADD', KEYS[3], '*', 'log', log, 'seq', first + skip, 'n', count - skip, 'r', stream)
    else
      reply = redis.pcall('XADD', KEYS[3], '*', 'log', log, 'seq', first, 'e', stream)
    end
    if type(reply) == 'table' then failed = reply break end
    if format == 2 then
      published[#published + 1] = entries
    else
      redis.call('PUBLISH', channel, entries)
    end
  end
end

if #changed > 0 then
  local h, s, a = {}, {}, {}
  for n, log in ipairs(changed) do
    local i = last[log]
    local state = ARGV[i + 5]
    if tonumber(ARGV[i]) < 0 then
      state = string.sub(ARGV[i + 4], -(tonumber(state) + 1), -2)
    end
    h[2 * n - 1], h[2 * n] = log, new_head[log]
    s[2 * n - 1], s[2 * n] = log, state
    a[2 * n - 1], a[2 * n] = log, attempt
  end
  redis.call('HSET', KEYS[1], unpack(h))
  redis.call('HSET', KEYS[2], unpack(s))
  redis.call('HSET', KEYS[4], unpack(a))
end
if #published > 0 then
  redis.call('PUBLISH', channel, table.concat(published, '\n'))
end
return failed or out
"#;

/// The append script for a layout's publish command.
pub(crate) fn append_script(publish: &str) -> String {
    APPEND_SCRIPT.replace("'PUBLISH'", &format!("'{publish}'"))
}

/// Whether entry `a` is covered by `b`, a scan position or an entry id (see
/// `layout.rs` for both forms); shared by the scripts below. An id without
/// a partition is partition 0's, as on one server.
const COVERED_BY: &str = r#"
local function split(id)
  local part, rest = string.match(id, '^(%d+)/(.*)$')
  if part then return tonumber(part), rest end
  return 0, id
end
local function at_or_before(a, b)
  local part, aid = split(a)
  local bid
  local ids = string.match(b, '^scan:%d+:(.*)$')
  if ids then
    local i = 0
    for id in string.gmatch(ids, '[^,]+') do
      if i == part then bid = id break end
      i = i + 1
    end
  else
    local bpart, rest = split(b)
    if bpart == part then bid = rest end
  end
  if not bid then return false end
  local ams, aseq = string.match(aid, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(bid, '^(%d+)-(%d+)$')
  if not ams or not bms then return false end
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  if ams ~= bms then return ams < bms end
  return aseq <= bseq
end
"#;

/// Applies one stream entry's leaderboard increments at most once (see
/// `stream.rs`). Keys: the scope's token set, the rebuilt-through marker,
/// the journal, then one board per increment. Args: entry id, token,
/// journal record, then member and delta per increment, and the journal's
/// length cap. Returns 1 applied, 0 duplicate, 2 covered by the last
/// rebuild.
///
/// The entry is acknowledged after, in its own slot (on a cluster the
/// stream is elsewhere). A crash between the two leaves the entry pending:
/// it is delivered again, its token is known, and it is only acknowledged
/// then. So effects stay exactly once; only the acknowledgement is late.
const APPLY_BODY: &str = r#"
if redis.call('SADD', KEYS[1], ARGV[2]) == 0 then return 0 end
local through = redis.call('GET', KEYS[2])
if through and at_or_before(ARGV[1], through) then return 2 end
for i = 4, #KEYS do
  redis.call('ZINCRBY', KEYS[i], ARGV[2 * i - 3], ARGV[2 * i - 4])
end
if #KEYS >= 4 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[#ARGV], '*', 'id', ARGV[1], 'i', ARGV[3])
end
return 1
"#;

pub(crate) fn apply_script() -> String {
    format!("{COVERED_BY}{APPLY_BODY}")
}

/// Swaps rebuilt leaderboards in (see `stream.rs`). Keys: the rebuilt-through
/// marker, the journal, the fence's highest token seen, then (live,
/// temporary) per board. Args: the position the rebuild covers, or '' for
/// none; the fencing token, or '' for none. Returns -1, changing nothing,
/// for a token below the highest seen. A journal record is lines of
/// `board TAB member TAB delta`, boards as full key names.
const SWAP_BODY: &str = r#"
if ARGV[2] ~= '' then
  local seen = tonumber(redis.call('GET', KEYS[3]) or '0')
  if tonumber(ARGV[2]) < seen then return -1 end
  redis.call('SET', KEYS[3], ARGV[2])
end
local replaced = {}
for i = 4, #KEYS, 2 do
  replaced[KEYS[i]] = true
  if redis.call('EXISTS', KEYS[i + 1]) == 1 then
    redis.call('RENAME', KEYS[i + 1], KEYS[i])
  else
    redis.call('DEL', KEYS[i])
  end
end
if ARGV[1] == '' then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
local replayed = 0
for _, record in ipairs(redis.call('XRANGE', KEYS[2], '-', '+')) do
  local fields, entry_id, increments = record[2], nil, ''
  for j = 1, #fields, 2 do
    if fields[j] == 'id' then entry_id = fields[j + 1] elseif fields[j] == 'i' then increments = fields[j + 1] end
  end
  if entry_id == nil or at_or_before(entry_id, ARGV[1]) then
    redis.call('XDEL', KEYS[2], record[1])
  else
    for board, member, delta in string.gmatch(increments, '([^\t\n]*)\t([^\t\n]*)\t([^\t\n]*)\n') do
      if replaced[board] then
        redis.call('ZINCRBY', board, delta, member)
        replayed = replayed + 1
      end
    end
  end
end
return replayed
"#;

pub(crate) fn swap_script() -> String {
    format!("{COVERED_BY}{SWAP_BODY}")
}

/// Takes or extends a lease. Keys: the lease, its token counter. Args:
/// holder, ttl in ms. The lease's value is `<token>:<holder>`. Returns the
/// token, or -1 when another holder has the lease.
pub(crate) const LEASE_SCRIPT: &str = r#"
local current = redis.call('GET', KEYS[1])
if current then
  local token, holder = string.match(current, '^(%d+):(.*)$')
  if holder ~= ARGV[1] then return -1 end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(token)
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ':' .. ARGV[1], 'PX', ARGV[2])
return token
"#;

/// Gives a lease up if its holder is the caller. Keys: the lease. Args:
/// holder.
pub(crate) const RELEASE_SCRIPT: &str = r#"
local current = redis.call('GET', KEYS[1])
if current and string.match(current, '^%d+:(.*)$') == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Heads and states of some logs of one partition, read together. A
/// script rather than MULTI: on a cluster a transaction redirected
/// mid-failover aborts as a whole, and the client follows redirects for
/// plain commands only. Keys: heads, states. Args: the logs.
pub(crate) const READ_STATES_SCRIPT: &str = r#"
return {redis.call('HMGET', KEYS[1], unpack(ARGV)), redis.call('HMGET', KEYS[2], unpack(ARGV))}
"#;

/// A log's head and a page of its history (see `read_log`), read together.
/// Keys: heads, the history. Args: log, exclusive start id, count.
pub(crate) const READ_LOG_SCRIPT: &str = r#"
local head = redis.call('HGET', KEYS[1], ARGV[1])
local entries = redis.call('XRANGE', KEYS[2], ARGV[2], '+', 'COUNT', ARGV[3])
local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
return {head, entries, oldest}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_publishes_on_the_slots_channel_only() {
        let sharded = append_script("SPUBLISH");
        assert!(sharded.contains("'SPUBLISH'") && !sharded.contains("'PUBLISH'"));
        assert_eq!(append_script("PUBLISH"), APPEND_SCRIPT);
    }
}
