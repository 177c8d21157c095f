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
//! ([`DispatchOutput::Execute`]); a polling node gets them from [`Dispatcher::lease`]. Every command
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
//! **Cost.** Nodes and commands live in slots (a command refers to its node by slot, not by
//! name); a node is found by name and a command by id in hash maps with a fixed hasher (never
//! iterated: nothing they hold reaches an output in their order). Deadlines are kept in one
//! ordered set keyed by instant and creation number, node timers in a [`DeadlineQueue`], and
//! finished commands in forgetting order. Each input costs O(log n) in the number of live
//! commands and timers (a revocation and a narrowing of scopes walk that node's own commands).
//! A heartbeat touches no timer: the offline timer is moved lazily when it fires early. A
//! command that its node can take at once goes out without passing through the queue, with its
//! deadline timer set once.

mod commands;
pub mod records;
mod registry;
mod results;
mod tables;
mod types;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use self::records::{CommandRecord, DispatchRecord, NodeRecord};
pub(crate) use self::tables::FnvHasher;
use self::tables::{Ids, InFlight, Ix, Memory, NodeIx, Slab};
pub use self::types::{
    CancelOutcome, CommandOutcome, CommandStatus, DispatchConfig, DispatchError, DispatchEvent,
    DispatchOutput, DispatchRequest, Execute, PeerInput, Refusal, ResultAck, Transport,
};
use crate::chunk::Reassembler;
use crate::scope::ScopeSet;
use crate::time::{saturating_add, DeadlineQueue};
use crate::wire::dto::CommandProgressDto;

/// A command's creation number: the order of commands wherever order matters (deadlines that
/// fall at the same instant, approvals, a restore).
type Key = u64;

/// A node's timer. At equal instants command deadlines fire first (they are kept apart, see
/// [`Dispatcher::handle_timeout`]), so that a command whose deadline coincides with its node's
/// resumption ends instead of going out with no time left.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Offline(String),
    Resume(String),
    Lease(String),
}

/// A command that is known: live, or finished and remembered.
#[derive(Debug)]
struct Command {
    key: Key,
    /// Shared with the outputs that name the command (no copy per output).
    id: Arc<str>,
    node: Arc<str>,
    /// The node's slot while the command is live (set at dispatch, or at the end of a restore);
    /// `None` once it has finished.
    node_ix: Option<NodeIx>,
    /// The request as `dispatch` accepted it, shared with its `Created` record: the command's
    /// name, params, origin, scope and criticality (`params` are dropped when it finishes, if
    /// nothing else holds the record).
    record: Arc<CommandRecord>,
    timeout: Duration,
    created: Instant,
    deadline: Instant,
    stage: Stage,
    /// Cancellation sent to the node, waiting for its answer.
    cancel: Option<Instant>,
    reassembler: Option<Box<Reassembler>>,
    /// Digests of the chunked parts recorded, by `partIndex` (docs: repeats after the end).
    part_digests: BTreeMap<u32, u64>,
    /// The instant its deadline timer is armed at, if it is.
    timer: Option<Instant>,
    /// The instant it is forgotten, once finished.
    forget_at: Option<Instant>,
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
    name: Arc<str>,
    attached: Option<Transport>,
    /// The last heartbeat (or hub connection becoming ready).
    last_contact: Option<Instant>,
    online: bool,
    /// The instant the `Offline` timer is armed at, if it is.
    offline_timer: Option<Instant>,
    /// Advertised slots; 0: unknown.
    slots: u32,
    scopes: ScopeSet,
    queue: BTreeMap<i64, Ix>,
    in_flight: InFlight,
    /// Commands awaiting approval, in creation order.
    awaiting: BTreeMap<Key, Ix>,
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
    fn new(name: Arc<str>) -> Self {
        Self {
            name,
            attached: None,
            last_contact: None,
            online: false,
            offline_timer: None,
            slots: 0,
            scopes: ScopeSet::new(),
            queue: BTreeMap::new(),
            in_flight: InFlight::default(),
            awaiting: BTreeMap::new(),
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
    nodes: Slab<NodeIx, NodeEntry>,
    /// Never iterated: a fixed hasher, and no order to leak.
    node_names: HashMap<Arc<str>, NodeIx, BuildHasherDefault<FnvHasher>>,
    commands: Slab<Ix, Command>,
    ids: Ids,
    next_key: Key,
    next_seq: u64,
    /// The nodes' timers.
    timers: DeadlineQueue<Timer>,
    /// The commands' deadline timers (see [`Command::timer`]), in firing order.
    deadlines: BTreeSet<(Instant, Key, Ix)>,
    /// Finished commands, by the instant they are forgotten.
    forgets: Memory,
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
            nodes: Slab::new(),
            node_names: HashMap::default(),
            commands: Slab::new(),
            ids: Ids::new(),
            next_key: 0,
            next_seq: 0,
            timers: DeadlineQueue::new(),
            deadlines: BTreeSet::new(),
            forgets: Memory::new(),
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
        self.node(node)
            .and_then(|n| n.last_contact)
            .is_some_and(|at| now < saturating_add(at, self.config.offline_after))
    }

    /// The node's last heartbeat (a hub connection becoming ready counts as one) since this
    /// dispatcher started; `None` for an unknown node or one not heard from since.
    pub fn last_heartbeat(&self, node: &str) -> Option<Instant> {
        self.node(node).and_then(|n| n.last_contact)
    }

    /// The node's last-seen wall-clock time in unix milliseconds, as last persisted (restored
    /// nodes keep theirs until they are seen again).
    pub fn last_seen_unix_ms(&self, node: &str) -> Option<u64> {
        self.node(node).and_then(|n| n.last_seen_ms)
    }

    /// Whether `node` is registered.
    pub fn is_registered(&self, node: &str) -> bool {
        self.node_names.contains_key(node)
    }

    /// How the node takes commands right now, if it is attached.
    pub fn transport(&self, node: &str) -> Option<&Transport> {
        self.node(node).and_then(|n| n.attached.as_ref())
    }

    /// The node's effective scopes (empty until [`set_scopes`](Self::set_scopes)).
    pub fn scopes(&self, node: &str) -> Option<&ScopeSet> {
        self.node(node).map(|n| &n.scopes)
    }

    /// How many commands are known (live, and finished ones still remembered).
    pub fn command_count(&self) -> usize {
        self.commands.len()
    }

    /// The ids of the node's live commands with the node (sent or leased), in dispatch order.
    pub fn in_flight(&self, node: &str) -> Vec<String> {
        self.node(node).map_or_else(Vec::new, |n| {
            n.in_flight
                .values()
                .filter_map(|ix| self.commands.get(*ix).map(|c| String::from(&*c.id)))
                .collect()
        })
    }

    /// Acts on every timer due at `now`: offline nodes, deadlines, the end of `busy` pauses and
    /// of leases, forgotten outcomes. Early or spurious calls do nothing.
    ///
    /// Command deadlines and node timers are two queues fired as one: by instant, and at equal
    /// instants deadlines first (in creation order).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.started = true;
        loop {
            let deadline = self
                .deadlines
                .first()
                .copied()
                .filter(|(at, ..)| *at <= now);
            let node_timer = self.timers.next_deadline().filter(|at| *at <= now);
            match (deadline, node_timer) {
                (Some(first), other) if other.is_none_or(|at| first.0 <= at) => {
                    let (_, _, ix) = first;
                    self.deadlines.remove(&first);
                    self.commands[ix].timer = None;
                    self.deadline_passed(now, ix);
                }
                (_, Some(_)) => {
                    let Some(timer) = self.timers.pop_expired(now) else {
                        break;
                    };
                    match timer {
                        Timer::Offline(node) => self.offline_timer(now, node),
                        Timer::Resume(node) => self.resume_timer(now, &node),
                        Timer::Lease(node) => self.lease_timer(now, node),
                    }
                }
                _ => break,
            }
        }
        while let Some(first) = self.forgets.first().filter(|(at, ..)| *at <= now) {
            self.forgets.pop_first();
            let (_, _, ix) = first;
            self.commands[ix].forget_at = None;
            self.forget(ix);
        }
    }

    /// The earliest instant [`handle_timeout`](Self::handle_timeout) has something to do.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.timers.next_deadline(),
            self.deadlines.first().map(|(at, ..)| *at),
            self.forgets.first().map(|(at, ..)| at),
        ]
        .into_iter()
        .flatten()
        .min()
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

    /// The registered node of this name.
    fn node_ix(&self, node: &str) -> Option<NodeIx> {
        self.node_names.get(node).copied()
    }

    fn node(&self, node: &str) -> Option<&NodeEntry> {
        self.node_ix(node).map(|ix| &self.nodes[ix])
    }

    /// Arms (or moves) the command's deadline timer.
    fn arm(&mut self, ix: Ix, at: Instant) {
        let command = &mut self.commands[ix];
        if command.timer == Some(at) {
            return;
        }
        let key = command.key;
        if let Some(previous) = command.timer.replace(at) {
            self.deadlines.remove(&(previous, key, ix));
        }
        self.deadlines.insert((at, key, ix));
    }

    /// Disarms the command's deadline timer, if it is armed.
    fn disarm(&mut self, ix: Ix) {
        let command = &mut self.commands[ix];
        if let Some(previous) = command.timer.take() {
            self.deadlines.remove(&(previous, command.key, ix));
        }
    }

    /// Removes a command from every table but its node's (callers detach it first) and frees
    /// its slot.
    fn remove_command(&mut self, ix: Ix) -> Option<Command> {
        let command = self.commands.remove(ix)?;
        if let Some(at) = command.timer {
            self.deadlines.remove(&(at, command.key, ix));
        }
        if let Some(at) = command.forget_at {
            self.forgets.remove((at, command.key, ix));
        }
        self.ids.remove(&command.id);
        Some(command)
    }
}

/// FNV-1a (64 bit) of a part's JSON: how a repeat of a recorded chunked part is recognized.
fn digest(part: &crate::wire::dto::CommandResultDto) -> u64 {
    let bytes = serde_json::to_vec(part).unwrap_or_default();
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
