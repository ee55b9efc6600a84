//! The signaling gateway: the I/O shell around the sans-io hub core
//! ([`tether_signaling::hub::HubCore`]).
//!
//! The core decides (who is where, what to send, relay, close or audit); this module owns
//! what the core must not: the sockets ([`socket`]), admission against the replicated state
//! with the read barrier (S1, S2; [`admission`]), calls to other nodes ([`mesh`]), session
//! ends from the state machine (S4; [`teardown`]) and the lease clock (S7; [`lease`]).
//! Actions are performed in the core's order under one lock (they only queue frames);
//! messages to other nodes are sent after the lock is released.

mod admission;
mod lease;
mod mesh;
mod socket;
mod teardown;

use crate::audit::AuditLog;
use crate::auth::Verifier;
use crate::config::NodeConfig;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tether_raft::RaftNode;
use tether_signaling::codes::{AuditEvent, CloseCode};
use tether_signaling::hub::{Action, HubCore, RelayPath};
use tether_signaling::mesh::NodeSignal;
use tether_signaling::protocol::ServerFrame;
use tether_signaling::rate::RecordGate;
use tether_signaling::rooms::{ConnId, NodeId};
use tokio::sync::mpsc;

/// Join-denial audit records a node writes at once, and per second sustained.
const DENIAL_RECORD_BURST: u32 = 100;
const DENIAL_RECORDS_PER_SECOND: u32 = 20;

/// Something for a connection's writer task.
#[derive(Debug)]
enum Outbound {
    Frame(ServerFrame),
    /// A relayed frame, when it reached this node, and the histogram (by path) that times
    /// the relay up to the socket.
    Relayed(ServerFrame, Instant, metrics::Histogram),
    Close(u16, String),
}

/// A message for other nodes that an action asked for, sent once the lock is released.
enum Remote {
    To(NodeId, NodeSignal),
    Everyone(NodeSignal),
}

/// The core and the writers of this node's connections (authenticated or not yet).
#[derive(Default)]
struct Shell {
    core: HubCore,
    writers: HashMap<ConnId, Writer>,
}

/// A connection's two outbound lanes. Frames wait in order in a bounded queue: a client
/// that stops reading fills it and is closed (`too_slow`). What ends the connection (the
/// frames before a close, and the close) takes the closing lane, which the writer always
/// serves first, so a revocation never waits behind a backlog.
struct Writer {
    frames: mpsc::Sender<Outbound>,
    closing: mpsc::UnboundedSender<Outbound>,
    /// Set once the frames lane overflowed and the close was queued (queued only once).
    overflowed: std::sync::atomic::AtomicBool,
}

/// Why a socket got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    /// `max_connections` are open.
    Full,
    /// `max_unauthenticated` sockets are still to authenticate.
    Unauthenticated,
}

impl NoSlot {
    /// The `reason` label of `tether_signal_refused_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Unauthenticated => "unauthenticated",
        }
    }

    /// What the refused client is told.
    pub fn message(self) -> &'static str {
        match self {
            Self::Full => "this node is full; try another",
            Self::Unauthenticated => {
                "too many connections are waiting to authenticate; try again shortly"
            }
        }
    }
}

/// A connection's slots, held from the upgrade: one of `max_connections` for its life, and
/// one of `max_unauthenticated` until it authenticates.
pub struct SocketSlots {
    _connection: tokio::sync::OwnedSemaphorePermit,
    unauthenticated: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// A count of live things (per-connection tasks, armed per-connection timers) for the
/// leak checks: [`Live::enter`] counts one until its guard drops.
#[derive(Default)]
struct Live(Arc<AtomicI64>);

impl Live {
    fn enter(&self) -> LiveGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        LiveGuard(self.0.clone())
    }

    fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counts one in a [`Live`] until dropped.
struct LiveGuard(Arc<AtomicI64>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the signaling side of a node holds, for `/metrics` and leak checks: each must
/// return to zero once every connection has closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubCounts {
    /// Authenticated connections.
    pub connections: usize,
    /// Session rooms with at least one member.
    pub rooms: usize,
    /// Members of those rooms.
    pub room_members: usize,
    /// Per-connection tasks (the connection's reader and its writer).
    pub tasks: i64,
    /// Armed per-connection timers (the auth deadline, the closing drain).
    pub timers: i64,
}

/// The node's signaling hub.
pub struct Hub {
    raft: Arc<RaftNode>,
    audit: AuditLog,
    config: Arc<NodeConfig>,
    verifier: Verifier,
    shell: Mutex<Shell>,
    next_conn: AtomicU64,
    live: AtomicU64,
    /// When the hub started: the clock of its rate limits.
    started: Instant,
    /// The rate limit on join-denial audit records.
    denial_records: Mutex<RecordGate>,
    connection_slots: Arc<tokio::sync::Semaphore>,
    unauthenticated_slots: Arc<tokio::sync::Semaphore>,
    tasks: Live,
    timers: Live,
    /// Robots' lease requests waiting for the next quorum check, and the lease task's bell.
    lease_desk: Mutex<tether_signaling::lease::LeaseDesk>,
    lease_wake: tokio::sync::Notify,
    /// The sessions this hub last saw active, so that a re-check after a snapshot or a
    /// missed event tears down exactly those that ended meanwhile.
    known_active: Mutex<std::collections::HashSet<String>>,
    /// Forwarded relays in a row that got no answer, by node.
    relay_failures: Mutex<HashMap<NodeId, u32>>,
    /// `tether_relay_seconds` by path, looked up once rather than for every relayed frame.
    relay_local: metrics::Histogram,
    relay_from_peer_node: metrics::Histogram,
}

impl Hub {
    /// A hub for this node; call [`Hub::start`] to run its background tasks.
    pub fn new(
        raft: Arc<RaftNode>,
        config: Arc<NodeConfig>,
        verifier: Verifier,
        audit: AuditLog,
    ) -> Arc<Self> {
        use crate::telemetry::names;
        Arc::new(Self {
            raft,
            audit,
            config: config.clone(),
            verifier,
            shell: Mutex::new(Shell::default()),
            next_conn: AtomicU64::new(1),
            live: AtomicU64::new(0),
            started: Instant::now(),
            denial_records: Mutex::new(RecordGate::new(
                DENIAL_RECORD_BURST,
                DENIAL_RECORDS_PER_SECOND,
                0,
            )),
            connection_slots: Arc::new(tokio::sync::Semaphore::new(
                config.sessions.max_connections,
            )),
            unauthenticated_slots: Arc::new(tokio::sync::Semaphore::new(
                config.sessions.max_unauthenticated,
            )),
            tasks: Live::default(),
            timers: Live::default(),
            lease_desk: Mutex::default(),
            lease_wake: tokio::sync::Notify::new(),
            known_active: Mutex::default(),
            relay_failures: Mutex::default(),
            relay_local: metrics::histogram!(names::RELAY_SECONDS, "path" => RelayPath::Local.as_str()),
            relay_from_peer_node: metrics::histogram!(
                names::RELAY_SECONDS,
                "path" => RelayPath::FromPeerNode.as_str()
            ),
        })
    }

    fn shell(&self) -> std::sync::MutexGuard<'_, Shell> {
        self.shell.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs the node-to-node handler and starts the teardown and lease tasks.
    pub fn start(
        self: &Arc<Self>,
        stopped: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let hub = self.clone();
        self.raft.set_signal_handler(Arc::new(move |from, payload| {
            let hub = hub.clone();
            Box::pin(async move { hub.on_node_signal(from, &payload) })
        }));
        vec![
            tokio::spawn(self.clone().teardown_loop(stopped.clone())),
            tokio::spawn(self.clone().lease_loop(stopped.clone())),
            tokio::spawn(self.clone().membership_loop(stopped)),
        ]
    }

    /// What the hub holds, for metrics and leak checks.
    pub fn counts(&self) -> HubCounts {
        let core = self.shell().core.counts();
        HubCounts {
            connections: core.connections,
            rooms: core.rooms,
            room_members: core.room_members,
            tasks: self.tasks.get(),
            timers: self.timers.get(),
        }
    }

    /// Slots for one more connection, or why there are none (the node is full, or too many
    /// sockets are still to authenticate).
    pub fn reserve_socket(&self) -> Result<SocketSlots, NoSlot> {
        let unauthenticated = (self.unauthenticated_slots.clone().try_acquire_owned())
            .map_err(|_| NoSlot::Unauthenticated)?;
        let connection =
            (self.connection_slots.clone().try_acquire_owned()).map_err(|_| NoSlot::Full)?;
        Ok(SocketSlots {
            _connection: connection,
            unauthenticated: Some(unauthenticated),
        })
    }

    /// Runs `decide` on the core and performs what it returns: frames, relays and closes
    /// are queued on the writers and audit records written, in order, under the lock; then
    /// the messages for other nodes are sent, in order. `since` is when the event that led
    /// here reached this node (relays are timed from it).
    async fn act(&self, since: Instant, decide: impl FnOnce(&mut HubCore) -> Vec<Action>) {
        let remote = {
            let mut shell = self.shell();
            let actions = decide(&mut shell.core);
            self.perform(&shell, actions, since)
        };
        self.send_remote(remote).await;
    }

    /// Performs local actions on `shell`'s writers; returns the ones for other nodes.
    /// Frames for a connection these actions close take its closing lane, with the close.
    fn perform(&self, shell: &Shell, actions: Vec<Action>, since: Instant) -> Vec<Remote> {
        // Closes are rare: no allocation on the relay path, where there are none.
        let closing: Vec<ConnId> = (actions.iter())
            .filter_map(|a| match a {
                Action::Close(conn, ..) => Some(*conn),
                _ => None,
            })
            .collect();
        let mut remote = Vec::new();
        for action in actions {
            match action {
                Action::Send(conn, frame) if closing.contains(&conn) => {
                    self.queue_closing(shell, conn, Outbound::Frame(frame))
                }
                Action::Send(conn, frame) => self.queue(shell, conn, Outbound::Frame(frame)),
                Action::Relay { to, frame, path } => {
                    let histogram = match path {
                        RelayPath::Local => self.relay_local.clone(),
                        RelayPath::FromPeerNode => self.relay_from_peer_node.clone(),
                    };
                    self.queue(shell, to, Outbound::Relayed(frame.into(), since, histogram));
                }
                Action::Close(conn, code, reason) => {
                    self.queue_closing(shell, conn, Outbound::Close(code.code(), reason))
                }
                Action::ToNode(node, signal) => remote.push(Remote::To(node, signal)),
                Action::Broadcast(signal) => remote.push(Remote::Everyone(signal)),
                Action::Audit {
                    event,
                    session_id,
                    detail,
                } => self.audit(event, &session_id, detail),
            }
        }
        remote
    }

    /// Writes an audit record; join denials (any token holder can cause them at will) pass
    /// a rate limit, and the next one written says how many were held back.
    fn audit(&self, event: AuditEvent, session_id: &str, mut detail: serde_json::Value) {
        if event == AuditEvent::JoinDenied {
            let now_ms = self.started.elapsed().as_millis() as u64;
            let admitted = (self.denial_records.lock())
                .unwrap_or_else(|e| e.into_inner())
                .admit(now_ms);
            match (admitted, detail.as_object_mut()) {
                (None, _) => {
                    metrics::counter!(crate::telemetry::names::AUDIT_SUPPRESSED_TOTAL).increment(1);
                    return;
                }
                (Some(held_back), Some(fields)) if held_back > 0 => {
                    fields.insert("held_back_before".into(), held_back.into());
                }
                _ => {}
            }
        }
        self.audit.record(event.as_str(), session_id, detail);
    }

    /// Queues a frame in order; a full queue closes the connection (`too_slow`).
    fn queue(&self, shell: &Shell, conn: ConnId, out: Outbound) {
        let Some(writer) = shell.writers.get(&conn) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = writer.frames.try_send(out) {
            if !writer.overflowed.swap(true, Ordering::Relaxed) {
                metrics::counter!(crate::telemetry::names::SIGNAL_TOO_SLOW_TOTAL).increment(1);
                let reason = format!(
                    "more than {} frames left unread",
                    self.config.sessions.outbound_queue_frames
                );
                let _ = writer
                    .closing
                    .send(Outbound::Close(CloseCode::TooSlow.code(), reason));
            }
        }
    }

    /// Queues what ends a connection on its closing lane, ahead of any backlog.
    fn queue_closing(&self, shell: &Shell, conn: ConnId, out: Outbound) {
        if let Some(writer) = shell.writers.get(&conn) {
            let _ = writer.closing.send(out);
        }
    }
}
