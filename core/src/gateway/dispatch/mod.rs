//! The dispatcher: the gateway's registry of nodes and every command's life, from
//! [`Dispatcher::dispatch`] to its one terminal outcome.
//!
//! # Theory of operation
//! The dispatcher knows no sockets, HTTP or tokens. The gateway tells it which node is attached
//! on which transport ([`Dispatcher::node_connected`], [`Dispatcher::node_disconnected`], a poll
//! through [`Dispatcher::lease`]), what nodes send (heartbeats, results, progress, their
//! effective scopes) and the time; it decides which `ExecuteCommand` or `CancelCommand` goes to
//! which node and how each command ends. The normative rules are in docs/protocol.md (the
//! gateway's dispatcher, written in docs/gateway-parts/dispatch.md); in short:
//!
//! **Online.** A node is online from a hub connection becoming ready, or a heartbeat (hub or
//! REST), until exactly `offline_after` (90 s) after the last of them; nothing else counts (not a
//! poll, a result, progress or a Ping). A connection ending does not make it offline: its
//! commands wait. Commands go to a node only while it is online and attached.
//!
//! **Commands.** [`Dispatcher::dispatch`] checks the node, the timeout, the scope and the queue
//! bound at once (a refused request creates nothing), then the command waits for approval
//! (critical ones) or is queued, FIFO per node. A node takes at most `slots` commands at once
//! (its heartbeat's `capabilities.slots`, or `default_slots`). A hub node gets them pushed
//! ([`DispatchOutput::Send`]); a polling node gets them from [`Dispatcher::lease`]. Every command
//! has a deadline, its dispatch instant plus its timeout; it ends `timeout` at that deadline when
//! it is not with a node, and at the deadline plus `result_grace` when it is (the node times out
//! too, a little later). A `busy` answer puts the command back at the head of the queue and
//! pauses the node for `retryAfterMs`. When a node attaches again, the commands it was given and
//! has not answered are given again (same `commandId`; the node's exactly-once memory answers
//! repeats), before anything new.
//!
//! **Results.** Correlated by `commandId` and checked against the node; parts are reassembled
//! ([`crate::chunk::Reassembler`]); every recorded message is acknowledged, and an identical
//! repeat is acknowledged again without being recorded twice; anything else is refused with a
//! [`Refusal`] and an event. Exactly one [`DispatchOutput::Finished`] per command, ever.
//!
//! **Persistence.** Every durable change is a [`DispatchOutput::Persist`] record; a restarted
//! gateway rebuilds from them with [`Dispatcher::restore`] (see [`records`]).
//!
//! **Cost.** Nodes and commands live in `BTreeMap`s, every timer in one [`DeadlineQueue`]: each
//! input costs O(log n) in the number of nodes and commands (a revocation and a narrowing of
//! scopes walk that node's own commands). A heartbeat touches no timer: the offline timer is
//! moved lazily when it fires early.

mod commands;
pub mod records;
mod registry;
mod results;
mod types;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use self::records::{CommandRecord, DispatchRecord, NodeRecord};
pub use self::types::{
    CancelOutcome, CommandOutcome, CommandStatus, DispatchConfig, DispatchError, DispatchEvent,
    DispatchOutput, DispatchRequest, PeerInput, Refusal, ResultAck, Transport,
};
use crate::chunk::Reassembler;
use crate::scope::ScopeSet;
use crate::time::{saturating_add, DeadlineQueue};
use crate::wire::dto::{CommandProgressDto, OriginatedBy};

/// A command's internal number: its creation order, and its key in every internal table.
type Key = u64;

/// A timer. At equal instants deadlines fire first, so that a command whose deadline coincides
/// with its node's resumption ends instead of going out with no time left.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Deadline(Key),
    Offline(String),
    Resume(String),
    Lease(String),
}

/// A command that is known: live, or finished and remembered.
#[derive(Debug)]
struct Command {
    id: String,
    node: String,
    command: String,
    params: Option<Value>,
    originated_by: Option<OriginatedBy>,
    timeout: Duration,
    created: Instant,
    deadline: Instant,
    required_scope: Option<String>,
    critical: bool,
    stage: Stage,
    /// Cancellation sent to the node, waiting for its answer.
    cancel: Option<Instant>,
    reassembler: Option<Box<Reassembler>>,
    /// Digests of the chunked parts recorded, by `partIndex` (docs: repeats after the end).
    part_digests: BTreeMap<u32, u64>,
}

#[derive(Debug)]
enum Stage {
    AwaitingApproval,
    /// In its node's queue under this position key.
    Queued(i64),
    /// With the node: sent on a hub connection or leased, under this dispatch number.
    InFlight {
        seq: u64,
        at: Instant,
        progress: Option<CommandProgressDto>,
    },
    Finished(CommandOutcome),
}

/// A registered node.
#[derive(Debug)]
struct NodeEntry {
    attached: Option<Transport>,
    /// The last heartbeat (or hub connection becoming ready).
    last_contact: Option<Instant>,
    online: bool,
    /// The instant the `Offline` timer is armed at, if it is.
    offline_timer: Option<Instant>,
    /// Advertised slots; 0: unknown.
    slots: u32,
    scopes: ScopeSet,
    queue: BTreeMap<i64, Key>,
    in_flight: BTreeMap<u64, Key>,
    awaiting: BTreeSet<Key>,
    paused_until: Option<Instant>,
    /// A polling node's lease ends then unless it polls again.
    lease_until: Option<Instant>,
    /// The instant the `Lease` timer is armed at, if it is.
    lease_timer: Option<Instant>,
    /// Last-seen as persisted (unix ms), and when it was.
    last_seen_ms: Option<u64>,
    seen_persisted_at: Option<Instant>,
}

impl NodeEntry {
    fn new() -> Self {
        Self {
            attached: None,
            last_contact: None,
            online: false,
            offline_timer: None,
            slots: 0,
            scopes: ScopeSet::new(),
            queue: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            awaiting: BTreeSet::new(),
            paused_until: None,
            lease_until: None,
            lease_timer: None,
            last_seen_ms: None,
            seen_persisted_at: None,
        }
    }

    fn waiting(&self) -> usize {
        self.queue.len() + self.awaiting.len()
    }
}

/// The registry and the commands; see the module docs.
#[derive(Debug)]
pub struct Dispatcher {
    config: DispatchConfig,
    /// `epoch` is `epoch_unix` on the wall clock: records carry unix milliseconds.
    epoch: Instant,
    epoch_unix: Duration,
    nodes: BTreeMap<String, NodeEntry>,
    commands: BTreeMap<Key, Command>,
    by_id: BTreeMap<String, Key>,
    next_key: Key,
    next_seq: u64,
    timers: DeadlineQueue<Timer>,
    /// Finished commands, by the instant they are forgotten.
    forgets: DeadlineQueue<Key>,
    outputs: VecDeque<DispatchOutput>,
    started: bool,
}

impl Dispatcher {
    /// A dispatcher with no nodes and no commands. `unix_ts` is the wall-clock time at `now`
    /// (since the Unix epoch): records carry wall-clock milliseconds so that they survive a
    /// restart.
    pub fn new(config: DispatchConfig, now: Instant, unix_ts: Duration) -> Self {
        Self {
            config,
            epoch: now,
            epoch_unix: unix_ts,
            nodes: BTreeMap::new(),
            commands: BTreeMap::new(),
            by_id: BTreeMap::new(),
            next_key: 0,
            next_seq: 0,
            timers: DeadlineQueue::new(),
            forgets: DeadlineQueue::new(),
            outputs: VecDeque::new(),
            started: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DispatchConfig {
        &self.config
    }

    /// Whether `node` is online at `now`: registered, and a heartbeat (or a hub connection)
    /// less than `offline_after` ago.
    pub fn is_online(&self, now: Instant, node: &str) -> bool {
        self.nodes
            .get(node)
            .and_then(|n| n.last_contact)
            .is_some_and(|at| now < saturating_add(at, self.config.offline_after))
    }

    /// The node's last heartbeat (a hub connection becoming ready counts as one) since this
    /// dispatcher started; `None` for an unknown node or one not heard from since.
    pub fn last_heartbeat(&self, node: &str) -> Option<Instant> {
        self.nodes.get(node).and_then(|n| n.last_contact)
    }

    /// The node's last-seen wall-clock time in unix milliseconds, as last persisted (restored
    /// nodes keep theirs until they are seen again).
    pub fn last_seen_unix_ms(&self, node: &str) -> Option<u64> {
        self.nodes.get(node).and_then(|n| n.last_seen_ms)
    }

    /// Whether `node` is registered.
    pub fn is_registered(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }

    /// How the node takes commands right now, if it is attached.
    pub fn transport(&self, node: &str) -> Option<&Transport> {
        self.nodes.get(node).and_then(|n| n.attached.as_ref())
    }

    /// The node's effective scopes (empty until [`set_scopes`](Self::set_scopes)).
    pub fn scopes(&self, node: &str) -> Option<&ScopeSet> {
        self.nodes.get(node).map(|n| &n.scopes)
    }

    /// How many commands are known (live, and finished ones still remembered).
    pub fn command_count(&self) -> usize {
        self.commands.len()
    }

    /// The ids of the node's live commands with the node (sent or leased), in dispatch order.
    pub fn in_flight(&self, node: &str) -> Vec<String> {
        self.nodes.get(node).map_or_else(Vec::new, |n| {
            n.in_flight
                .values()
                .filter_map(|k| self.commands.get(k).map(|c| c.id.clone()))
                .collect()
        })
    }

    /// Acts on every timer due at `now`: offline nodes, deadlines, the end of `busy` pauses and
    /// of leases, forgotten outcomes. Early or spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.started = true;
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                Timer::Deadline(key) => self.deadline_passed(now, key),
                Timer::Offline(node) => self.offline_timer(now, node),
                Timer::Resume(node) => self.resume_timer(now, &node),
                Timer::Lease(node) => self.lease_timer(now, node),
            }
        }
        while let Some(key) = self.forgets.pop_expired(now) {
            self.forget(key);
        }
    }

    /// The earliest instant [`handle_timeout`](Self::handle_timeout) has something to do.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.timers.next_deadline(), self.forgets.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next output, in the order they were produced.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<DispatchOutput> {
        self.outputs.pop_front()
    }

    fn emit(&mut self, output: DispatchOutput) {
        self.outputs.push_back(output);
    }

    fn persist(&mut self, record: DispatchRecord) {
        self.outputs.push_back(DispatchOutput::Persist(record));
    }

    fn event(&mut self, event: DispatchEvent) {
        self.outputs.push_back(DispatchOutput::Event(event));
    }

    /// `at` on the wall clock, in unix milliseconds.
    fn unix_ms(&self, at: Instant) -> u64 {
        let unix = if at >= self.epoch {
            self.epoch_unix.saturating_add(at - self.epoch)
        } else {
            self.epoch_unix.saturating_sub(self.epoch - at)
        };
        u64::try_from(unix.as_millis()).unwrap_or(u64::MAX)
    }

    /// The instant of a unix-millisecond time; clamped to `floor` when the clock cannot reach it
    /// (far in the past).
    fn instant_of(&self, unix_ms: u64, floor: Instant) -> Instant {
        let unix = Duration::from_millis(unix_ms);
        if unix >= self.epoch_unix {
            saturating_add(self.epoch, unix - self.epoch_unix)
        } else {
            self.epoch
                .checked_sub(self.epoch_unix - unix)
                .unwrap_or(floor)
        }
    }
}

/// FNV-1a (64 bit) of a part's JSON: how a repeat of a recorded chunked part is recognized.
fn digest(part: &crate::wire::dto::CommandResultDto) -> u64 {
    let bytes = serde_json::to_vec(part).unwrap_or_default();
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
