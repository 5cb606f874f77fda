//! Every Redis command, timed and traced at one point: the connection.
//!
//! [`Observed`] wraps a connection and is what the Redis store sends its
//! commands through, so each command or pipeline gets a client span (named
//! after the command, as the OpenTelemetry database conventions ask) and a
//! sample in `db_client_operation_duration_seconds`. A span is a child of
//! whatever the caller is doing: an ingest request's trace shows its round
//! trips to Redis.

use std::{future::Future, time::Instant};

use redis::{
    Cmd, Pipeline, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager},
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
    "MGET",
    "PING",
    "PUBLISH",
    "SCRIPT",
    "SET",
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

/// A connection whose commands are timed and traced.
#[derive(Clone)]
pub(crate) struct Observed(pub(crate) ConnectionManager);

impl ConnectionLike for Observed {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let name = command_name(cmd);
        Box::pin(observe(name, 1, self.0.req_packed_command(cmd)))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        // Named after its last command: a pipeline is a script load and
        // then the work, or the same command many times.
        let name = pipeline.cmd_iter().last().map_or("OTHER", command_name);
        Box::pin(observe(name, pipeline.len(), self.0.req_packed_commands(pipeline, offset, count)))
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

async fn observe<T>(
    name: &'static str,
    batch: usize,
    command: impl Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    let span = tracing::info_span!(
        "redis",
        otel.name = name,
        otel.kind = "client",
        otel.status_code = Empty,
        db.system.name = "redis",
        db.operation.name = name,
        db.operation.batch.size = batch,
        error.type = Empty,
    );
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

fn command_name(cmd: &Cmd) -> &'static str {
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
