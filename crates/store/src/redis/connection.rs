//! The one place the Redis store's two deployments differ in kind: how it
//! connects. One server is reached through a connection manager that
//! reconnects by itself ([`Observed`]); a cluster through the cluster client,
//! which follows the topology. Either way a command goes out through
//! [`Conn`], which times and traces it, and subscriptions get connections
//! of their own.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::StreamExt as _;
use redis::{
    Client, Cmd, Pipeline, PushInfo, PushKind, RedisError, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
};
use tokio::sync::OnceCell;

use super::{
    config::{ClusterConfig, RedisConfig},
    error::map_error,
};
use crate::{
    StoreError, Subscription,
    observed::{Observed, command_name, observe},
    stream::MAX_BLOCK,
};

/// Messages a cluster subscription buffers before it drops new ones (a
/// subscriber that far behind resyncs from history, as after any lost
/// message).
const SUBSCRIPTION_BUFFER: usize = 16_384;

/// How the store reaches Redis.
#[derive(Clone)]
pub(crate) enum Connection {
    Single {
        client: Client,
        commands: Observed,
        /// A connection of its own for blocking reads: a blocked command
        /// holds up everything behind it on its connection, and `commands`
        /// serves requests that must stay fast.
        blocking: Observed,
        timeout: Duration,
    },
    Cluster {
        config: Arc<ClusterConfig>,
        client: ClusterClient,
        /// Connected on first use, so a process starts while the cluster is
        /// down; the connection then follows the cluster's topology by
        /// itself.
        connection: Arc<OnceCell<ClusterConnection>>,
    },
}

/// A connection to send commands on. Cheap to clone.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(Observed),
    Cluster(ClusterConnection),
}

impl Connection {
    /// Checks the URL and prepares the connections without connecting.
    pub(crate) fn single(config: &RedisConfig) -> Result<Self, StoreError> {
        let client = Client::open(config.url.as_str())
            .map_err(|e| StoreError::Backend(format!("invalid redis url: {e}")))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1);
        let commands = Observed::new_lazy(client.clone(), manager_config.clone()).map_err(map_error)?;
        // A blocking read may take its block time plus the usual answer time.
        let blocking_config = manager_config.set_response_timeout(Some(config.timeout + MAX_BLOCK));
        let blocking = Observed::new_lazy(client.clone(), blocking_config).map_err(map_error)?;
        Ok(Self::Single { client, commands, blocking, timeout: config.timeout })
    }

    /// Checks the settings and prepares the client without connecting.
    pub(crate) fn cluster(config: &ClusterConfig) -> Result<Self, StoreError> {
        let client = cluster_client(config)
            .build()
            .map_err(|e| StoreError::Backend(format!("invalid redis cluster settings: {e}")))?;
        Ok(Self::Cluster { config: Arc::new(config.clone()), client, connection: Arc::new(OnceCell::new()) })
    }

    pub(crate) fn timeout(&self) -> Duration {
        match self {
            Self::Single { timeout, .. } => *timeout,
            Self::Cluster { config, .. } => config.timeout,
        }
    }

    /// The connection for commands that answer at once.
    pub(crate) async fn get(&self) -> Result<Conn, StoreError> {
        match self {
            Self::Single { commands, .. } => Ok(Conn::Single(commands.clone())),
            Self::Cluster { config, client, connection } => {
                let connect = || async {
                    tokio::time::timeout(config.timeout, client.get_async_connection())
                        .await
                        .map_err(|_| {
                            StoreError::Unavailable("timed out connecting to the redis cluster".into())
                        })?
                        .map_err(map_error)
                };
                connection.get_or_try_init(connect).await.cloned().map(Conn::Cluster)
            }
        }
    }

    /// On one server, the connection for commands that block; `None` on a
    /// cluster, where a blocked command would hold up its node's
    /// connection and one per partition would hold them all.
    pub(crate) fn blocking(&self) -> Option<Conn> {
        match self {
            Self::Single { blocking, .. } => Some(Conn::Single(blocking.clone())),
            Self::Cluster { .. } => None,
        }
    }

    /// Subscribes to `channels` on a connection of the subscription's own:
    /// plain channels on one server, sharded ones on a cluster (each on the
    /// node of its slot). Returns once Redis has confirmed every channel,
    /// so nothing published after is missed. The subscription ends when a
    /// node's connection drops (a failover, a restart): its owner
    /// subscribes again, to whichever node serves each channel now, and
    /// fills what it missed from history.
    pub(crate) async fn subscribe(&self, channels: Vec<String>) -> Result<Subscription, StoreError> {
        match self {
            Self::Single { client, timeout, .. } => {
                let subscribe = async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    for channel in &channels {
                        pubsub.subscribe(channel).await?;
                    }
                    Ok::<_, RedisError>(pubsub)
                };
                let pubsub = tokio::time::timeout(*timeout, subscribe)
                    .await
                    .map_err(|_| StoreError::Unavailable("timed out subscribing".into()))?
                    .map_err(map_error)?;
                let messages =
                    pubsub.into_on_message().map(|msg| Bytes::copy_from_slice(msg.get_payload_bytes()));
                Ok(Subscription::new(messages))
            }
            Self::Cluster { config, .. } => subscribe_sharded(config, channels).await,
        }
    }
}

fn cluster_client(config: &ClusterConfig) -> ClusterClientBuilder {
    ClusterClientBuilder::new(config.nodes.clone())
        .connection_timeout(config.timeout)
        .response_timeout(config.timeout)
        // Retries follow MOVED and ride out a failover; the overall bound
        // keeps a request's wait for them short.
        .retries(4)
        .min_retry_wait(20)
        .max_retry_wait(500)
        .overall_response_timeout(Some(config.timeout * 3))
}

async fn subscribe_sharded(
    config: &ClusterConfig,
    channels: Vec<String>,
) -> Result<Subscription, StoreError> {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(SUBSCRIPTION_BUFFER);
    let lost = Arc::new(tokio::sync::Notify::new());
    let lost_in_push = Arc::clone(&lost);
    let push = move |info: PushInfo| -> Result<(), ()> {
        match info.kind {
            PushKind::SMessage => {
                if let Some(payload) = info.data.get(1)
                    && let Ok(bytes) = redis::from_redis_value_ref::<Vec<u8>>(payload)
                {
                    // Full: dropped, as Redis drops a client that far behind.
                    let _ = sender.try_send(Bytes::from(bytes));
                }
            }
            PushKind::Disconnection | PushKind::SUnsubscribe => lost_in_push.notify_one(),
            _ => {}
        }
        Ok(())
    };
    // A client of its own: its pushes go to this subscription only, and
    // dropping the subscription closes its connections.
    let client = cluster_client(config)
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(push)
        .build()
        .map_err(map_error)?;
    let subscribe = async {
        let mut conn = client.get_async_connection().await?;
        for channel in &channels {
            conn.ssubscribe(channel).await?;
        }
        Ok::<_, RedisError>(conn)
    };
    let conn = tokio::time::timeout(config.timeout * 2, subscribe)
        .await
        .map_err(|_| StoreError::Unavailable("timed out subscribing".into()))?
        .map_err(map_error)?;
    // The stream owns the connection: it stays subscribed while read.
    let messages = futures::stream::unfold((receiver, conn, lost), |(mut receiver, conn, lost)| async move {
        tokio::select! {
            biased;
            message = receiver.recv() => message.map(|message| (message, (receiver, conn, lost))),
            () = lost.notified() => None,
        }
    });
    Ok(Subscription::new(messages))
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            // Observed times and traces by itself.
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => Box::pin(observe(command_name(cmd), 1, conn.req_packed_command(cmd))),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => {
                let name = crate::observed::pipeline_name(pipeline);
                Box::pin(observe(name, pipeline.len(), conn.req_packed_commands(pipeline, offset, count)))
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}
