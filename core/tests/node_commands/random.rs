//! Random sequences of receive / finish / cancel / progress / time / shutdown against a model.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const IDS: [&str; 5] = ["c0", "c1", "c2", "c3", "c4"];
/// `p.bad` (no scope granted), `zz` (unknown), `g1`/`g2` (one group), `a` (hooked), `b`.
const COMMANDS: [&str; 6] = ["a", "b", "g1", "g2", "p.bad", "zz"];

#[derive(Clone, Debug)]
enum Op {
    Receive {
        id: usize,
        command: usize,
        timeout_ms: Option<u64>,
        bad_params: bool,
    },
    Finish {
        id: usize,
        ok: bool,
    },
    Cancel {
        id: usize,
    },
    Progress {
        id: usize,
        fraction: f64,
    },
    Advance {
        ms: u64,
    },
    AdvanceToNextTimeout,
    Shutdown,
    Abort,
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0..IDS.len();
    prop_oneof![
        8 => (
            id.clone(),
            0..COMMANDS.len(),
            prop_oneof![Just(None), Just(Some(0)), Just(Some(1_500)), Just(Some(4_000)), Just(Some(99_000))],
            prop::bool::weighted(0.1),
        )
            .prop_map(|(id, command, timeout_ms, bad_params)| Op::Receive {
                id,
                command,
                timeout_ms,
                bad_params
            }),
        5 => (id.clone(), any::<bool>()).prop_map(|(id, ok)| Op::Finish { id, ok }),
        2 => id.clone().prop_map(|id| Op::Cancel { id }),
        4 => (id, -0.5f64..1.5).prop_map(|(id, fraction)| Op::Progress { id, fraction }),
        5 => (0u64..3_000).prop_map(|ms| Op::Advance { ms }),
        3 => Just(Op::AdvanceToNextTimeout),
        1 => Just(Op::Shutdown),
        1 => Just(Op::Abort),
    ]
}

fn limits() -> CommandLimits {
    CommandLimits {
        slots: 3,
        busy_retry_after: Duration::from_secs(1),
        default_timeout: Duration::from_secs(10),
        max_timeout: Duration::from_secs(20),
        remembered_results: 2,
        remember_for: Duration::from_secs(15),
        progress_interval: Duration::from_secs(1),
        ..CommandLimits::default()
    }
}

fn specs() -> Vec<CommandSpec> {
    vec![
        CommandSpec::new("a").validated_by(|p| {
            if p.get("bad").is_some() {
                Err("bad".into())
            } else {
                Ok(())
            }
        }),
        CommandSpec::new("b"),
        CommandSpec::new("g1").serialized_by("g"),
        CommandSpec::new("g2").serialized_by("g"),
        CommandSpec::new("p.bad").scope("p.bad"),
    ]
}

/// What the test knows about one life of a command id: from admission to being forgotten.
#[derive(Debug, Default)]
struct Life {
    group: bool,
    deadline: Option<Instant>,
    executed: bool,
    executing: bool,
    answer: Option<CommandResultDto>,
}

struct Model {
    lives: BTreeMap<String, Life>,
    group_running: Option<String>,
    aborted: bool,
    closed: bool,
}

impl Model {
    /// Checks the actions of one step (other than the receive-specific ones).
    fn apply(&mut self, actions: &[CommandAction]) -> Result<(), TestCaseError> {
        for action in actions {
            match action {
                CommandAction::Execute(req) => {
                    let life = self.lives.get_mut(&req.command_id);
                    let life = life.ok_or_else(|| {
                        TestCaseError::fail(format!("Execute of unknown {req:?}"))
                    })?;
                    prop_assert!(!life.executed, "two Execute for {}", req.command_id);
                    life.executed = true;
                    life.executing = true;
                    if life.group {
                        prop_assert!(
                            self.group_running.is_none(),
                            "two of one group at once: {:?} and {}",
                            self.group_running,
                            req.command_id
                        );
                        self.group_running = Some(req.command_id.clone());
                    }
                }
                CommandAction::Result(result) => {
                    prop_assert!(!self.aborted, "a result after abort_all: {result:?}");
                    let life = self.lives.get_mut(&result.command_id).ok_or_else(|| {
                        TestCaseError::fail(format!("result of unknown {result:?}"))
                    })?;
                    prop_assert!(
                        life.answer.is_none(),
                        "two results for {}: {:?} then {result:?}",
                        result.command_id,
                        life.answer
                    );
                    life.answer = Some(CommandResultDto::clone(result));
                    life.executing = false;
                    if self.group_running.as_deref() == Some(result.command_id.as_str()) {
                        self.group_running = None;
                    }
                }
                CommandAction::Cancel { command_id, .. } => {
                    let life = self.lives.get(command_id);
                    prop_assert!(
                        life.is_some_and(|l| l.executing),
                        "Cancel of {command_id}, which is not executing"
                    );
                    if self.aborted {
                        if let Some(life) = self.lives.get_mut(command_id) {
                            life.executing = false;
                        }
                    }
                }
                CommandAction::Progress(p) => {
                    prop_assert!(!self.aborted, "progress after abort_all: {p:?}");
                    let life = self.lives.get(&p.command_id);
                    prop_assert!(
                        life.is_some_and(|l| l.executing && l.answer.is_none()),
                        "progress of {} while not executing",
                        p.command_id
                    );
                    prop_assert!((0.0..=1.0).contains(&p.progress));
                }
                CommandAction::Event(_) => {}
            }
        }
        if self.aborted {
            self.group_running = None;
        }
        Ok(())
    }

    /// After `handle_timeout(now)`: no unanswered life is past its deadline.
    fn check_deadlines(&self, now: Instant) -> Result<(), TestCaseError> {
        if self.aborted {
            return Ok(());
        }
        for (id, life) in &self.lives {
            if life.answer.is_none() {
                prop_assert!(
                    life.deadline.is_some_and(|d| d > now),
                    "{id} is past its deadline {:?} unanswered",
                    life.deadline
                );
            }
        }
        Ok(())
    }

    /// Ends the lives the table has forgotten; each must have been answered.
    fn end_forgotten(&mut self, table: &CommandTable) -> Result<(), TestCaseError> {
        let forgotten: Vec<String> = self
            .lives
            .keys()
            .filter(|id| !table.is_known(id))
            .cloned()
            .collect();
        for id in forgotten {
            let life = self.lives.remove(&id).expect("listed above");
            prop_assert!(
                life.answer.is_some() || self.aborted,
                "{id} forgotten without an answer: {life:?}"
            );
        }
        Ok(())
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = SimClock::new();
    let mut now = clock.at(0.0);
    let mut table = CommandTable::new(specs(), limits()).expect("valid specs");
    let scopes = ScopeSet::parse(["a.*"]).unwrap();
    let mut model = Model {
        lives: BTreeMap::new(),
        group_running: None,
        aborted: false,
        closed: false,
    };
    let mut ops = ops;
    // Finally: let every deadline pass, so every life must be answered.
    ops.push(Op::Advance { ms: 60_000 });
    for op in ops {
        match op {
            Op::Receive {
                id,
                command,
                timeout_ms,
                bad_params,
            } => {
                let id = IDS[id];
                let before = table.command_state(id);
                let stored = model.lives.get(id).and_then(|l| l.answer.clone());
                let mut dto = cmd(id, COMMANDS[command]);
                dto.timeout_ms = timeout_ms;
                if bad_params {
                    dto.params = Some(json!({"bad": true}));
                }
                table.receive(now, dto, &scopes);
                let actions = drain(&mut table);
                let results: Vec<_> = actions
                    .iter()
                    .filter_map(|a| match a {
                        CommandAction::Result(r) => Some(CommandResultDto::clone(r)),
                        _ => None,
                    })
                    .collect();
                if model.closed {
                    prop_assert!(actions.iter().all(|a| matches!(a, CommandAction::Event(_))));
                } else if before.is_some() {
                    // A redelivery: never run; a finished one resends its stored result.
                    prop_assert!(!actions
                        .iter()
                        .any(|a| matches!(a, CommandAction::Execute(_))));
                    if before == Some(CommandState::Finished) {
                        prop_assert_eq!(
                            results,
                            vec![stored.expect("a finished life has an answer")]
                        );
                    } else {
                        prop_assert!(results.is_empty());
                    }
                } else if table.is_known(id) {
                    prop_assert!(results.is_empty(), "admitted and answered at once");
                    model.lives.insert(
                        id.to_owned(),
                        Life {
                            group: COMMANDS[command].starts_with('g'),
                            deadline: Some(
                                now + timeout_ms
                                    .map(Duration::from_millis)
                                    .unwrap_or(Duration::from_secs(10))
                                    .min(Duration::from_secs(20)),
                            ),
                            ..Life::default()
                        },
                    );
                    model.apply(&actions)?;
                } else {
                    // Rejected: one result, never run, nothing remembered.
                    prop_assert_eq!(results.len(), 1);
                    prop_assert!(!results[0].ok);
                    prop_assert_eq!(actions.len(), 1);
                }
            }
            Op::Finish { id, ok } => {
                let id = IDS[id];
                let before = table.command_state(id);
                let outcome = if ok {
                    Ok(json!(id))
                } else {
                    Err(CommandError {
                        code: ErrorCode::InternalError,
                        message: "boom".into(),
                        details: None,
                        retry_after_ms: None,
                    })
                };
                let finish = table.finish(now, id, outcome);
                match (&finish, before) {
                    (Ok(Finish::Answered), Some(CommandState::Executing)) => {}
                    (
                        Ok(Finish::Late | Finish::Repeated),
                        Some(CommandState::Finished | CommandState::Abandoned),
                    ) => {}
                    (Err(CommandUsageError::NotStarted { .. }), Some(CommandState::Queued)) => {}
                    (Err(CommandUsageError::UnknownCommand { .. }), None) => {}
                    other => prop_assert!(false, "finish gave {other:?}"),
                }
                let actions = drain(&mut table);
                model.apply(&actions)?;
            }
            Op::Cancel { id } => {
                table.cancel(now, IDS[id], Some("why"));
                let actions = drain(&mut table);
                model.apply(&actions)?;
            }
            Op::Progress { id, fraction } => {
                let _ = table.progress(now, IDS[id], Progress::fraction(fraction));
                let actions = drain(&mut table);
                model.apply(&actions)?;
            }
            Op::Advance { ms } => {
                let target = now + Duration::from_millis(ms);
                // Wake at every timer on the way, as a shell does.
                while let Some(at) = table.poll_timeout().filter(|at| *at <= target) {
                    now = at.max(now);
                    table.handle_timeout(now);
                    prop_assert!(table.poll_timeout().is_none_or(|next| next > now));
                    let actions = drain(&mut table);
                    model.apply(&actions)?;
                    model.check_deadlines(now)?;
                    model.end_forgotten(&table)?;
                }
                now = target;
                table.handle_timeout(now);
                prop_assert!(table.poll_timeout().is_none_or(|next| next > now));
                let actions = drain(&mut table);
                model.apply(&actions)?;
                model.check_deadlines(now)?;
            }
            Op::AdvanceToNextTimeout => {
                if let Some(at) = table.poll_timeout() {
                    now = at.max(now);
                    table.handle_timeout(now);
                    prop_assert!(table.poll_timeout().is_none_or(|next| next > now));
                    let actions = drain(&mut table);
                    model.apply(&actions)?;
                    model.check_deadlines(now)?;
                }
            }
            Op::Shutdown => {
                let was_closed = model.closed;
                table.shutdown(now);
                model.closed = true;
                let actions = drain(&mut table);
                model.apply(&actions)?;
                if !was_closed && !model.aborted {
                    // Every life still running or queued was answered.
                    for (id, life) in &model.lives {
                        prop_assert!(life.answer.is_some(), "{id} not answered at shutdown");
                    }
                }
            }
            Op::Abort => {
                let was_closed = model.closed;
                model.closed = true;
                if !was_closed {
                    model.aborted = true;
                }
                table.abort_all(now);
                let actions = drain(&mut table);
                model.apply(&actions)?;
            }
        }
        prop_assert!(table.executing() <= table.slots());
        prop_assert!(table.in_flight() <= table.slots());
        if !model.closed {
            let executing = model.lives.values().filter(|l| l.executing).count();
            prop_assert_eq!(table.executing(), executing);
        } else {
            prop_assert_eq!(table.in_flight(), 0);
            prop_assert_eq!(table.poll_timeout(), None);
        }
        model.end_forgotten(&table)?;
    }
    // Every deadline has passed: every life is answered (or the table was revoked).
    if !model.aborted {
        for (id, life) in &model.lives {
            prop_assert!(life.answer.is_some(), "{id} never answered: {life:?}");
        }
        prop_assert_eq!(table.in_flight(), 0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_the_table_invariants(ops in prop::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}
