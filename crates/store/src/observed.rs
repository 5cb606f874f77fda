//! Every Redis command, timed and traced at one point: the connection.
//!
//! [`Observed`] wraps a connection and is what the Redis store sends its
//! commands through, so each command or pipeline gets a client span (named
//! after the command, as the OpenTelemetry database conventions ask) and a
//! sample in `db_client_operation_duration_seconds`. A span is a child of
//! whatever the caller is doing: an ingest request's trace shows its round
//! trips to Redis.
//!
//! It also starts the connection over when Redis refuses our credentials:
//! the connection manager reconnects by itself after I/O errors only, so
//! once a reconnect was refused (Redis came back with another password)
//! every later command failed with that refusal and no new attempt was
//! made, even after Redis accepted the password again. A fresh manager
//! behaves as after a plain restart.

use std::{
    future::Future,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use redis::{
    Client, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
};
use tracing::{Instrument as _, field::Empty};

/// Operation duration, by command, as the database conventions name it.
pub const DB_DURATION: &str = "db_client_operation_duration_seconds";

/// Commands named in spans and labels; anything else is `OTHER`, so label
/// values stay a small fixed set.
const KNOWN: &[&str] = &[
    "DEL",
    "EVALSHA",
    "EXISTS",
    "GET",
    "HGET",
    "HGETALL",
    "HMGET",
    "INCR",
    "MGET",
    "PING",
    "PUBLISH",
    "ROLE",
    "SCRIPT",
    "SET",
    "SPUBLISH",
    "WAIT",
    "XACK",
    "XADD",
    "XAUTOCLAIM",
    "XGROUP",
    "XINFO",
    "XLEN",
    "XPENDING",
    "XRANGE",
    "XREADGROUP",
    "XREVRANGE",
    "ZADD",
    "ZRANGE",
    "ZREVRANGE",
    "ZSCORE",
];

/// Refused credentials start a new connection at most this often, however
/// many commands fail meanwhile.
const RENEW_EVERY: Duration = Duration::from_millis(250);

/// A connection whose commands are timed and traced. Cheap to clone; clones
/// share the connection.
#[derive(Clone)]
pub(crate) struct Observed(Arc<Renewable>);

struct Renewable {
    client: Client,
    config: ConnectionManagerConfig,
    current: RwLock<Current>,
}

struct Current {
    /// Counts renewals, so that of many commands refused on one connection
    /// only the first replaces it.
    generation: u64,
    manager: ConnectionManager,
    since: Instant,
}

impl Observed {
    /// Prepares a connection without connecting.
    pub(crate) fn new_lazy(client: Client, config: ConnectionManagerConfig) -> RedisResult<Self> {
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        let current = Current { generation: 0, manager, since: Instant::now() };
        Ok(Self(Arc::new(Renewable { client, config, current: RwLock::new(current) })))
    }

    fn current(&self) -> (u64, ConnectionManager) {
        let current = self.0.current.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        (current.generation, current.manager.clone())
    }

    /// Replaces the connection that failed with `err` if Redis refused our
    /// credentials on it and nobody replaced it yet.
    fn renew_after(&self, generation: u64, err: &RedisError) {
        if !refused_credentials(err) {
            return;
        }
        let mut current = self.0.current.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.generation != generation || current.since.elapsed() < RENEW_EVERY {
            return;
        }
        if let Ok(manager) =
            ConnectionManager::new_lazy_with_config(self.0.client.clone(), self.0.config.clone())
        {
            *current = Current { generation: generation + 1, manager, since: Instant::now() };
            tracing::warn!(error = %err, "redis refused our credentials; the next command connects again");
        }
    }
}

impl ConnectionLike for Observed {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let name = command_name(cmd);
        let (generation, mut manager) = self.current();
        Box::pin(async move {
            let result = observe(name, 1, manager.req_packed_command(cmd)).await;
            if let Err(err) = &result {
                self.renew_after(generation, err);
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let name = pipeline_name(pipeline);
        let (generation, mut manager) = self.current();
        Box::pin(async move {
            let result =
                observe(name, pipeline.len(), manager.req_packed_commands(pipeline, offset, count)).await;
            if let Err(err) = &result {
                self.renew_after(generation, err);
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.current().1.get_db()
    }
}

fn refused_credentials(err: &RedisError) -> bool {
    err.kind() == ErrorKind::AuthenticationFailed || matches!(err.code(), Some("NOAUTH" | "WRONGPASS"))
}

pub(crate) async fn observe<T>(
    name: &'static str,
    batch: usize,
    command: impl Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    // Inside an unsampled request no span is opened (its trace is not kept).
    let span = if telemetry::propagation::unsampled_request().is_some() {
        tracing::Span::none()
    } else {
        tracing::info_span!(
            "redis",
            otel.name = name,
            otel.kind = "client",
            otel.status_code = Empty,
            db.system.name = "redis",
            db.operation.name = name,
            db.operation.batch.size = batch,
            error.type = Empty,
        )
    };
    let started = Instant::now();
    let result = command.instrument(span.clone()).await;
    let seconds = started.elapsed().as_secs_f64();
    match &result {
        Ok(_) => {
            metrics::histogram!(DB_DURATION, "db_system_name" => "redis", "db_operation_name" => name)
                .record(seconds);
        }
        Err(err) => {
            let kind = error_type(err);
            span.record("otel.status_code", "ERROR");
            span.record("error.type", kind);
            metrics::histogram!(
                DB_DURATION,
                "db_system_name" => "redis",
                "db_operation_name" => name,
                "error_type" => kind,
            )
            .record(seconds);
        }
    }
    result
}

/// A pipeline is named after its first command that is not a script load:
/// a pipeline is a script load and then the work (perhaps with `WAIT` after
/// it), or the same command many times.
pub(crate) fn pipeline_name(pipeline: &Pipeline) -> &'static str {
    pipeline.cmd_iter().map(command_name).find(|name| *name != "SCRIPT").unwrap_or("OTHER")
}

pub(crate) fn command_name(cmd: &Cmd) -> &'static str {
    let Some(redis::Arg::Simple(first)) = cmd.args_iter().next() else { return "OTHER" };
    KNOWN.iter().find(|known| known.as_bytes().eq_ignore_ascii_case(first)).copied().unwrap_or("OTHER")
}

fn error_type(err: &redis::RedisError) -> &'static str {
    if err.is_timeout() {
        "timeout"
    } else if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
        "connection"
    } else {
        "server"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_named_from_a_fixed_set() {
        assert_eq!(command_name(&redis::cmd("evalsha")), "EVALSHA");
        assert_eq!(command_name(redis::cmd("XREADGROUP").arg("GROUP")), "XREADGROUP");
        assert_eq!(command_name(&redis::cmd("FLUSHALL")), "OTHER");
    }
}
