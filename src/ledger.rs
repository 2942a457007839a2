//! The ledger: the IO edge around the pure decider. It turns inputs into sealed events
//! (input → decide → seal → evolve), appends them in acknowledged batches, and fires the
//! deadlines that the clock passes, in the documented order.

use std::collections::HashSet;

use chat_ledger_events::{
    event_id, seal, Actor, Decision, EventBody, Hash, Input, Instant, Key, NewEvent, SealedEvent, StreamId,
};
use chat_ledger_projections::LedgerView;
use uuid::Uuid;

use crate::replay::{self, ReplayError};
use crate::rulebook::{rule, Rulebook};
use crate::rules::{decide, decide_deadline, Fact, Refusal};
use crate::store::{AppendBatch, Commit, EventStore, Head, KeyRecord, StoreError};

/// What became of one submitted input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Appended as events `first_seq..=last_seq`; `refusal` says if the rules refused it.
    Recorded {
        first_seq: u64,
        last_seq: u64,
        refusal: Option<Refusal>,
    },
    /// The key was already recorded with the same payload: nothing appended; these are
    /// the events the original produced.
    Repeated(KeyRecord),
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("key \"{key}\" was recorded at event {first_seq} with a different payload; a new input needs a new key")]
    KeyConflict { key: Key, first_seq: u64 },
    #[error("input \"{key}\" is dated {at}, before the ledger's clock ({clock}); time only moves forward")]
    BeforeClock { key: Key, at: Instant, clock: Instant },
    #[error("this ledger was started under rulebook {ledger}; it cannot continue under {given}")]
    RulebookMismatch { ledger: String, given: String },
}

pub struct Ledger {
    store: Box<dyn EventStore>,
    state: LedgerView,
    book: Rulebook,
}

/// Builds one append batch: seals each decided event onto the chain and folds it into
/// the state at once, so the next decision of the same batch sees it.
struct BatchBuilder<'a> {
    state: &'a mut LedgerView,
    book: &'a Rulebook,
    commits: Vec<Commit>,
}

impl BatchBuilder<'_> {
    fn seal_into(&mut self, events: &mut Vec<SealedEvent>, new: NewEvent) {
        let sealed = seal(self.state.seq + 1, self.state.head_hash, new);
        self.state
            .apply(&sealed.envelope, sealed.hash)
            .unwrap_or_else(|e| panic!("the rules decided an event the projection refuses: {e}"));
        events.push(sealed);
    }

    fn new_event(
        &self,
        key: &Key,
        index: usize,
        at: Instant,
        actor: &Actor,
        cause: Option<Uuid>,
        fact: Fact,
    ) -> NewEvent {
        NewEvent {
            id: event_id(key, index),
            version: self.state.stream_version(&fact.stream) + 1,
            stream: fact.stream,
            occurred_at: at,
            actor: actor.clone(),
            key: key.clone(),
            cause,
            decision: Some(Decision {
                rule: fact.rule.to_owned(),
                rulebook: self.book.label(),
            }),
            body: fact.body,
        }
    }

    /// A commit of facts decided by the rules alone (adoption, deadlines): its digest is its key's.
    fn commit_facts(&mut self, key: Key, at: Instant, cause: Option<Uuid>, facts: Vec<Fact>) {
        let mut events = Vec::with_capacity(facts.len());
        for (index, fact) in facts.into_iter().enumerate() {
            let new = self.new_event(&key, index, at, &Actor::System, cause, fact);
            self.seal_into(&mut events, new);
        }
        let digest = crate::verify::key_digest(&key);
        self.commits.push(Commit { key, digest, events });
    }

    /// Fires, in order, every deadline due at or before `until`.
    fn fire_due(&mut self, until: Instant) {
        while let Some(deadline) = self.state.next_deadline().filter(|d| d.at <= until).cloned() {
            let key = Key::new(format!(
                "deadline/{}/{}/{}",
                deadline.kind.as_str(),
                deadline.stream,
                deadline.at
            ))
            .expect("derived keys are well-formed");
            let facts = decide_deadline(&deadline, self.state, self.book);
            self.commit_facts(key, deadline.at, Some(deadline.cause), facts);
        }
    }

    fn commit_input(&mut self, input: &Input) -> Option<Refusal> {
        let mut events = Vec::new();
        let record = NewEvent {
            id: event_id(&input.key, 0),
            version: self.state.stream_version(&StreamId::named(StreamId::INPUTS)) + 1,
            stream: StreamId::named(StreamId::INPUTS),
            occurred_at: input.at,
            actor: input.actor.clone(),
            key: input.key.clone(),
            cause: None,
            decision: None,
            body: EventBody::InputRecorded { input: input.clone() },
        };
        let cause = Some(record.id);
        self.seal_into(&mut events, record);
        let (facts, refusal) = match decide(input, self.state, self.book) {
            Ok(facts) => (facts, None),
            Err(refusal) => {
                let rejected = Fact {
                    stream: input.command.primary_stream(),
                    rule: refusal.rule,
                    body: EventBody::CommandRejected {
                        command: input.command.type_name().to_owned(),
                        reason: refusal.reason.clone(),
                    },
                };
                (vec![rejected], Some(refusal))
            }
        };
        for (index, fact) in facts.into_iter().enumerate() {
            let new = self.new_event(&input.key, index + 1, input.at, &input.actor, cause, fact);
            self.seal_into(&mut events, new);
        }
        self.commits.push(Commit {
            key: input.key.clone(),
            digest: input.digest(),
            events,
        });
        refusal
    }
}

impl Ledger {
    /// Opens a ledger on `store`, rebuilding the projections (from the stored projection
    /// snapshot when it is valid). A ledger keeps the rulebook it was started under.
    pub fn open(store: Box<dyn EventStore>, book: Rulebook) -> Result<Ledger, LedgerError> {
        let state = replay::load(store.as_ref(), None)?;
        if let Some(adopted) = &state.rulebook {
            if adopted.rulebook != book.label() {
                return Err(LedgerError::RulebookMismatch {
                    ledger: adopted.rulebook.clone(),
                    given: book.label(),
                });
            }
        }
        Ok(Ledger { store, state, book })
    }

    pub fn state(&self) -> &LedgerView {
        &self.state
    }

    pub fn rulebook(&self) -> &Rulebook {
        &self.book
    }

    pub fn store(&self) -> &dyn EventStore {
        self.store.as_ref()
    }

    pub fn head(&self) -> Head {
        Head {
            seq: self.state.seq,
            hash: self.state.head_hash,
        }
    }

    /// Runs `inputs` through the rules, in order, and appends everything they and the
    /// deadlines they pass produce as ONE batch: all of it is acknowledged (durable) when
    /// this returns `Ok`, or none of it is in the log.
    pub fn submit(&mut self, inputs: &[Input]) -> Result<Vec<Outcome>, LedgerError> {
        let expected_head = self.head();
        let result = self.build(inputs).and_then(|(commits, outcomes)| {
            if !commits.is_empty() {
                self.store.append(&AppendBatch { expected_head, commits })?;
            }
            Ok(outcomes)
        });
        if result.is_err() {
            // The state already folded the refused batch in: rebuild it from what is stored.
            self.state = replay::load(self.store.as_ref(), None)?;
        }
        result
    }

    fn build(&mut self, inputs: &[Input]) -> Result<(Vec<Commit>, Vec<Outcome>), LedgerError> {
        let mut builder = BatchBuilder {
            state: &mut self.state,
            book: &self.book,
            commits: Vec::new(),
        };
        let mut outcomes = Vec::with_capacity(inputs.len());
        let mut keys_in_batch: HashSet<&Key> = HashSet::new();
        for input in inputs {
            if let Some(record) = self.store.key_record(&input.key)? {
                if record.digest != input.digest() {
                    return Err(LedgerError::KeyConflict {
                        key: input.key.clone(),
                        first_seq: record.first_seq,
                    });
                }
                outcomes.push(Outcome::Repeated(record));
                continue;
            }
            if !keys_in_batch.insert(&input.key) {
                let first = builder
                    .commits
                    .iter()
                    .find(|c| c.key == input.key)
                    .expect("seen in this batch");
                if first.digest != input.digest() {
                    return Err(LedgerError::KeyConflict {
                        key: input.key.clone(),
                        first_seq: first.events[0].envelope.seq,
                    });
                }
                let record = KeyRecord {
                    digest: first.digest,
                    first_seq: first.events[0].envelope.seq,
                    last_seq: first.events.last().expect("commits are not empty").envelope.seq,
                };
                outcomes.push(Outcome::Repeated(record));
                continue;
            }
            if let Some(clock) = builder.state.clock.filter(|clock| input.at < *clock) {
                return Err(LedgerError::BeforeClock {
                    key: input.key.clone(),
                    at: input.at,
                    clock,
                });
            }
            if builder.state.rulebook.is_none() {
                let book = builder.book;
                let adopt = Fact {
                    stream: StreamId::named(StreamId::LEDGER),
                    rule: rule::RULEBOOK_ADOPT,
                    body: EventBody::RulebookAdopted {
                        rulebook: book.label(),
                        seed: book.seed.clone(),
                        zone: book.zone.to_string(),
                        currency: book.currency,
                    },
                };
                let key = Key::new(format!("ledger/rulebook/{}", book.label())).expect("derived keys are well-formed");
                builder.commit_facts(key, input.at, None, vec![adopt]);
            }
            builder.fire_due(input.at);
            let first_seq = builder.state.seq + 1;
            let refusal = builder.commit_input(input);
            outcomes.push(Outcome::Recorded {
                first_seq,
                last_seq: builder.state.seq,
                refusal,
            });
        }
        Ok((builder.commits, outcomes))
    }

    /// Stores the current projections as a snapshot, so the next start replays only what follows.
    pub fn save_snapshot(&self) -> Result<(), LedgerError> {
        replay::save_snapshot(self.store.as_ref(), &self.state)?;
        Ok(())
    }

    /// The hash of the stored bytes of event `seq`.
    pub fn hash_at(&self, seq: u64) -> Result<Option<Hash>, LedgerError> {
        Ok(self
            .store
            .read(seq, 1)?
            .into_iter()
            .find(|e| e.seq == seq)
            .map(|e| Hash::of(&e.bytes)))
    }
}
