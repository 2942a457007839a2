//! Importing a file of inputs (JSON Lines): the whole file is parsed and checked —
//! syntax, schema, references, time order, keys — before anything of it is appended.
//! Bad input is refused with its file, line and reason, and the log is left as it was.
//! Rule refusals are different: they are decisions, and are recorded.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use chat_ledger_events::{AccountId, AppId, Command, Input, Instant, Key};

use crate::ledger::{Ledger, LedgerError, LoginSummary, Outcome};
use crate::logins::{self, LoginFile};

/// Inputs appended per acknowledged batch (one durable flush each) by default.
pub const CHUNK_INPUTS_DEFAULT: usize = 1000;

/// Input refused before anything was appended: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadInput {
    pub file: String,
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.reason)
    }
}

impl std::error::Error for BadInput {}

/// What one line of an input file holds.
#[derive(Debug, Clone)]
pub enum Entry {
    Input(Input),
    /// `{"type":"ingest_logins","file":"<path relative to the input file>"}`: a bulk
    /// login file, ingested at this point of the timeline (`Ledger::ingest_logins`).
    Logins(LoginFile),
}

/// One entry and the line it came from.
#[derive(Debug, Clone)]
pub struct Line {
    pub number: usize,
    pub entry: Entry,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginsDirective {
    #[serde(rename = "type")]
    _type: String,
    file: String,
}

/// Parses every line of `text` (syntax and schema). Blank lines are skipped.
pub fn parse(file: &str, text: &str) -> Result<Vec<Line>, BadInput> {
    let mut lines = Vec::new();
    let complete = text.is_empty() || text.ends_with('\n');
    let count = text.lines().count();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| BadInput {
            file: file.to_owned(),
            line: number,
            reason,
        };
        if raw.contains("\"ingest_logins\"") {
            if let Ok(directive) = serde_json::from_str::<LoginsDirective>(raw) {
                if directive._type == "ingest_logins" {
                    let base = Path::new(file).parent().unwrap_or(Path::new("."));
                    let logins = logins::read(&base.join(&directive.file))?;
                    lines.push(Line {
                        number,
                        entry: Entry::Logins(logins),
                    });
                    continue;
                }
            }
        }
        match serde_json::from_str::<Input>(raw) {
            Ok(input) => lines.push(Line {
                number,
                entry: Entry::Input(input),
            }),
            Err(e) if e.is_eof() && !complete && number == count => {
                return Err(bad(format!(
                    "the last line is truncated: it ends mid-record without a newline ({e}); was the file cut short?"
                )))
            }
            Err(e) if e.is_syntax() || e.is_eof() => return Err(bad(format!("not valid JSON: {e}"))),
            Err(e) => return Err(bad(format!("not a valid input: {}", strip_position(&e.to_string())))),
        }
    }
    Ok(lines)
}

/// serde_json appends " at line 1 column 57" to messages about a single-line document;
/// the file's own line is already in front.
fn strip_position(message: &str) -> &str {
    message.rfind(" at line ").map_or(message, |i| &message[..i])
}

/// What the check decided for a file: the inputs still to append, and how many lines
/// were already recorded (a re-run resumes by key).
pub struct Plan {
    pub pending: Vec<Line>,
    pub already_recorded: usize,
}

/// Checks references, time order and keys of a parsed file against the ledger's state,
/// as if the file's inputs were applied in order. Nothing is appended.
pub fn check(file: &str, lines: Vec<Line>, ledger: &Ledger) -> Result<Plan, LedgerCheckError> {
    let (state, store, book) = (ledger.state(), ledger.store(), ledger.rulebook());
    let mut accounts: BTreeMap<AccountId, String> = state
        .accounts
        .keys()
        .map(|a| (a.clone(), "already in the ledger".to_owned()))
        .collect();
    let mut apps: BTreeMap<AppId, String> = state
        .apps
        .keys()
        .map(|a| (*a, "already in the ledger".to_owned()))
        .collect();
    let mut seen: HashMap<Key, (usize, [u8; 32])> = HashMap::new();
    let mut clock: Option<(Instant, String)> = state.clock.map(|c| (c, "the ledger's clock".to_owned()));
    let mut plan = Plan {
        pending: Vec::new(),
        already_recorded: 0,
    };
    for line in lines {
        let input = match &line.entry {
            Entry::Input(input) => input,
            Entry::Logins(file) => {
                for row in &file.rows {
                    if !apps.contains_key(&row.app) {
                        return Err(LedgerCheckError::Bad(BadInput {
                            file: file.source.clone(),
                            line: row.line as usize,
                            reason: format!(
                                "unknown app {}: no create_app for this SDKAppID precedes line {}",
                                row.app, line.number
                            ),
                        }));
                    }
                }
                if let Some(latest) = file.rows.iter().map(|r| r.logged_in_at).max() {
                    if clock.as_ref().is_none_or(|(c, _)| latest > *c) {
                        clock = Some((latest, format!("the last login of line {}", line.number)));
                    }
                }
                plan.pending.push(line);
                continue;
            }
        };
        let bad = |reason: String| {
            LedgerCheckError::Bad(BadInput {
                file: file.to_owned(),
                line: line.number,
                reason,
            })
        };
        let digest = input.digest();
        if let Some(record) = store.key_record(&input.key).map_err(LedgerError::from)? {
            // A login is recorded with its user digest; when the app's key is gone
            // (reclaimed) the payload can no longer be compared, only the key.
            let recorded = ledger.recorded_digest(input)?;
            if recorded.is_some_and(|d| d != record.digest) {
                return Err(bad(format!(
                    "key {:?} was already recorded (event {}) with a different payload; a new input needs a new key",
                    input.key.as_str(),
                    record.first_seq
                )));
            }
            plan.already_recorded += 1;
            continue;
        }
        if let Some((first, first_digest)) = seen.get(&input.key) {
            if *first_digest != digest {
                return Err(bad(format!(
                    "key {:?} is used by line {first} for another input",
                    input.key.as_str()
                )));
            }
            plan.already_recorded += 1;
            continue;
        }
        seen.insert(input.key.clone(), (line.number, digest));
        if let Some((before, what)) = &clock {
            if input.at < *before {
                return Err(bad(format!(
                    "dated {}, before {what} ({before}); inputs must come in time order and time never goes back",
                    input.at
                )));
            }
        }
        clock = Some((input.at, format!("line {}", line.number)));
        let at_line = format!("line {}", line.number);
        let need_account = |account: &AccountId| {
            if accounts.contains_key(account) {
                Ok(())
            } else {
                Err(bad(format!(
                    "unknown account {:?}: open it first (open_account)",
                    account.as_str()
                )))
            }
        };
        let need_app = |app: &AppId| {
            if apps.contains_key(app) {
                Ok(())
            } else {
                Err(bad(format!(
                    "unknown app {app}: no create_app for this SDKAppID precedes this line"
                )))
            }
        };
        match &input.command {
            Command::OpenAccount { account, .. } => {
                if let Some(where_) = accounts.get(account) {
                    return Err(bad(format!(
                        "account {:?} is already open ({where_})",
                        account.as_str()
                    )));
                }
                accounts.insert(account.clone(), at_line);
            }
            Command::AddFunds { account, .. } => need_account(account)?,
            Command::CreateApp { account, app, .. } => {
                need_account(account)?;
                if let Some(where_) = apps.get(app) {
                    return Err(bad(format!("SDKAppID {app} already exists ({where_})")));
                }
                apps.insert(*app, at_line);
            }
            Command::BuyEdition {
                app,
                edition,
                contract_monthly_price,
                ..
            } => {
                need_app(app)?;
                let sold: Vec<&str> = book
                    .catalog
                    .editions
                    .iter()
                    .filter(|e| e.purchasable)
                    .map(|e| e.edition.0.as_str())
                    .collect();
                let Some(entry) = book.edition(edition).filter(|e| e.purchasable) else {
                    return Err(bad(format!(
                        "unknown edition {:?}: {} sells {}",
                        edition.0,
                        book.label(),
                        sold.join(", ")
                    )));
                };
                match (entry.monthly_price, contract_monthly_price) {
                    (None, None) => {
                        return Err(bad(format!(
                            "edition {edition} is sold at a contract price: add \"contract_monthly_price\""
                        )))
                    }
                    (Some(_), Some(_)) => {
                        return Err(bad(format!(
                        "edition {edition} has a list price; \"contract_monthly_price\" is for contract editions only"
                    )))
                    }
                    _ => {}
                }
            }
            Command::Login {
                app,
                logged_in_at: Some(logged_in_at),
                ..
            } if *logged_in_at > input.at => {
                need_app(app)?;
                return Err(bad(format!(
                    "logged_in_at {logged_in_at} is after the input's at {}: a login is received after it happens",
                    input.at
                )));
            }
            Command::SetAutoRenew { app, .. }
            | Command::Login { app, .. }
            | Command::RefundEdition { app }
            | Command::FlagViolation { app, .. } => need_app(app)?,
            Command::AdjustBalance { account, .. } => need_account(account)?,
            Command::LoginBatch { .. } => {
                return Err(bad(
                    "login_batch is written by `chat-ledger logins`, not by hand".to_owned()
                ))
            }
            Command::AdvanceClock {} => {}
        }
        plan.pending.push(line);
    }
    Ok(plan)
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerCheckError {
    #[error("{0}")]
    Bad(BadInput),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub lines_recorded: usize,
    pub lines_already_recorded: usize,
    pub rejected: Vec<(usize, Key, String, String)>,
    pub events_appended: u64,
    pub logins: LoginSummary,
}

/// An acknowledgement: everything through `seq` is durable, through `line` of the file.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub seq: u64,
    pub line: usize,
}

/// Parses, checks, then appends a file of inputs in acknowledged chunks of `chunk_inputs`.
pub fn import(
    ledger: &mut Ledger,
    file: &str,
    text: &str,
    chunk_inputs: usize,
    mut on_ack: impl FnMut(Ack),
) -> Result<ImportSummary, LedgerCheckError> {
    assert!(chunk_inputs > 0, "a chunk holds at least one input");
    let lines = parse(file, text).map_err(LedgerCheckError::Bad)?;
    let plan = check(file, lines, ledger)?;
    let mut summary = ImportSummary {
        lines_already_recorded: plan.already_recorded,
        ..ImportSummary::default()
    };
    let start_seq = ledger.head().seq;
    let mut pending = plan.pending.as_slice();
    while !pending.is_empty() {
        if let Entry::Logins(file) = &pending[0].entry {
            let number = pending[0].number;
            let done = ledger.ingest_logins(
                &file.source,
                &file.digest,
                &file.rows,
                logins::CHUNK_ROWS_DEFAULT,
                |seq, _| on_ack(Ack { seq, line: number }),
            )?;
            summary.logins.rows += done.rows;
            summary.logins.rows_already_recorded += done.rows_already_recorded;
            summary.logins.users_counted += done.users_counted;
            summary.logins.refused_over_limit += done.refused_over_limit;
            summary.logins.refused_suspended += done.refused_suspended;
            summary.lines_recorded += 1;
            pending = &pending[1..];
            continue;
        }
        // Every input up to the next bulk login file, in acknowledged batches.
        let run = pending
            .iter()
            .take_while(|l| matches!(l.entry, Entry::Input(_)))
            .count();
        let (lines, rest) = pending.split_at(run);
        pending = rest;
        let inputs: Vec<Input> = lines
            .iter()
            .map(|l| match &l.entry {
                Entry::Input(input) => input.clone(),
                Entry::Logins(_) => unreachable!("taken only while inputs"),
            })
            .collect();
        ledger.submit_chunks(&inputs, chunk_inputs, |first, outcomes, head| {
            let chunk = &lines[first..first + outcomes.len()];
            for ((line, input), outcome) in chunk.iter().zip(&inputs[first..]).zip(outcomes) {
                match outcome {
                    Outcome::Recorded {
                        refusal: Some(refusal), ..
                    } => {
                        summary
                            .rejected
                            .push((line.number, input.key.clone(), refusal.rule.to_owned(), refusal.reason))
                    }
                    Outcome::Recorded { refusal: None, .. } => {}
                    Outcome::Repeated(_) => {
                        summary.lines_already_recorded += 1;
                        continue;
                    }
                }
                summary.lines_recorded += 1;
            }
            on_ack(Ack {
                seq: head.seq,
                line: chunk.last().expect("chunks are not empty").number,
            });
        })?;
    }
    summary.events_appended = ledger.head().seq - start_seq;
    Ok(summary)
}
