//! The Lua scripts that keep a topic's stream and its weight counters in step: each runs
//! atomically on the node that holds the topic's keys (they share one hash tag), so the
//! lag is exact and `Full` is decided there, for every process at once, without races.
//!
//! Keys of a topic (see `Keys`): `KEYS[1]` the stream, `KEYS[2]` the lag (weight
//! published and not yet acked or rejected), `KEYS[3]` the weight ever acked or rejected
//! (for the drain-rate hint), `KEYS[4]` the dead letters. Stream entries carry `p` (the
//! payload), `w` (the weight) and, once handed back, `r` (how many times).
//!
//! `redis.replicate_commands()` makes Redis 3.2–6 replicate the scripts' effects (their
//! `XADD *` ids are not deterministic); Redis 7 always does and ignores the call.

use std::sync::{Mutex, PoisonError};

use ::redis::{FromRedisValue, RedisError};

use super::conn::Conn;

/// Admits a message (`ARGV[1]` payload, `ARGV[2]` weight) unless the lag is positive and
/// adding it would pass `ARGV[3]` (the capacity). Returns `{1, lag after}` or
/// `{0, lag, acked total}`.
const PUBLISH: &str = r#"
redis.replicate_commands()
local lag = tonumber(redis.call('GET', KEYS[2]) or '0')
local w = tonumber(ARGV[2])
if lag > 0 and lag + w > tonumber(ARGV[3]) then
  return {0, lag, tonumber(redis.call('GET', KEYS[3]) or '0')}
end
redis.call('XADD', KEYS[1], '*', 'p', ARGV[1], 'w', ARGV[2])
redis.call('INCRBY', KEYS[2], w)
return {1, lag + w}
"#;

/// Shared by the settling scripts: the weight, payload and hand-backs of entry `id`, or
/// nil when the entry is gone.
const READ_ENTRY: &str = r#"
local function entry(stream, id)
  local found = redis.call('XRANGE', stream, id, id)
  if not found[1] then return nil end
  local f = found[1][2]
  local e = {w = 0, p = '', r = 0}
  for j = 1, #f, 2 do
    if f[j] == 'w' then e.w = tonumber(f[j + 1]) or 0
    elseif f[j] == 'p' then e.p = f[j + 1]
    elseif f[j] == 'r' then e.r = tonumber(f[j + 1]) or 0 end
  end
  return e
end
local function settle(weight)
  if weight <= 0 then return end
  local lag = tonumber(redis.call('GET', KEYS[2]) or '0')
  if weight > lag then weight = lag end
  redis.call('DECRBY', KEYS[2], weight)
  redis.call('INCRBY', KEYS[3], weight)
end
"#;

/// Acks ids `ARGV[2..]` in group `ARGV[1]`: only an id this call removes from the group's
/// pending list counts (so a double ack, or an ack racing a claim, counts once); its
/// entry is deleted and its weight leaves the lag. Returns the weight settled.
const ACK: &str = r#"
local total = 0
for i = 2, #ARGV do
  local e = entry(KEYS[1], ARGV[i])
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 and e then
    redis.call('XDEL', KEYS[1], ARGV[i])
    total = total + e.w
  end
end
settle(total)
return total
"#;

/// Hands ids `ARGV[3..]` of group `ARGV[1]` back: each still pending is re-added at the
/// end of the stream (any consumer may take it) and its old entry deleted; the lag does
/// not change. `ARGV[2]` is `1` to count a hand-back (the next delivery is marked
/// redelivered), `0` to return an entry that was never handed out (past a closing
/// handle's drain fence). Returns how many moved.
const NACK: &str = r#"
local moved = 0
for i = 3, #ARGV do
  local e = entry(KEYS[1], ARGV[i])
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 and e then
    local r = e.r + tonumber(ARGV[2])
    if r > 0 then
      redis.call('XADD', KEYS[1], '*', 'p', e.p, 'w', e.w, 'r', r)
    else
      redis.call('XADD', KEYS[1], '*', 'p', e.p, 'w', e.w)
    end
    redis.call('XDEL', KEYS[1], ARGV[i])
    moved = moved + 1
  end
end
return moved
"#;

/// Moves id `ARGV[2]` of group `ARGV[1]` to the dead letters with reason `ARGV[3]`
/// (topic `ARGV[4]`), if still pending; like an ack it leaves the lag. The dead-letter
/// stream keeps about `ARGV[5]` entries: only it is ever trimmed, never a topic's stream.
/// Returns 1 if it moved.
const REJECT: &str = r#"
local e = entry(KEYS[1], ARGV[2])
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 and e then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*',
    'topic', ARGV[4], 'id', ARGV[2], 'p', e.p, 'w', e.w, 'reason', ARGV[3])
  redis.call('XDEL', KEYS[1], ARGV[2])
  settle(e.w)
  return 1
end
return 0
"#;

/// One script, run with `EVALSHA` by the SHA1 that `SCRIPT LOAD` returned (the
/// client's `script` feature is not built in). A Redis that lost its script cache
/// (restarted) answers `NOSCRIPT`; the script is then loaded again and run once more.
pub(crate) struct LuaScript {
    code: String,
    sha: Mutex<Option<String>>,
}

impl LuaScript {
    fn new(code: String) -> Self {
        Self {
            code,
            sha: Mutex::new(None),
        }
    }

    /// Runs the script with `keys` (all of one hash tag) and `args`.
    pub async fn run<T: FromRedisValue>(
        &self,
        conn: &Conn,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, RedisError> {
        let known = self
            .sha
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let sha = match known {
            Some(sha) => sha,
            None => self.load(conn).await?,
        };
        match self.evalsha(conn, &sha, keys, args).await {
            Err(e) if e.code() == Some("NOSCRIPT") => {
                let sha = self.load(conn).await?;
                self.evalsha(conn, &sha, keys, args).await
            }
            other => other,
        }
    }

    async fn load(&self, conn: &Conn) -> Result<String, RedisError> {
        let mut cmd = ::redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(&self.code);
        let sha: String = cmd.query_async(&mut conn.clone()).await?;
        *self.sha.lock().unwrap_or_else(PoisonError::into_inner) = Some(sha.clone());
        Ok(sha)
    }

    async fn evalsha<T: FromRedisValue>(
        &self,
        conn: &Conn,
        sha: &str,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, RedisError> {
        let mut cmd = ::redis::cmd("EVALSHA");
        cmd.arg(sha).arg(keys.len());
        for key in keys {
            cmd.arg(*key);
        }
        for arg in args {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn.clone()).await
    }
}

/// The scripts of a bus handle.
pub(crate) struct Scripts {
    pub publish: LuaScript,
    pub ack: LuaScript,
    pub nack: LuaScript,
    pub reject: LuaScript,
}

impl Scripts {
    pub fn new() -> Self {
        let settling = |body: &str| {
            LuaScript::new(format!("redis.replicate_commands()\n{READ_ENTRY}\n{body}"))
        };
        Self {
            publish: LuaScript::new(PUBLISH.to_string()),
            ack: settling(ACK),
            nack: settling(NACK),
            reject: settling(REJECT),
        }
    }
}
