//! The docs cannot rot silently. docs/events.md has a heading for every event type, and
//! every line of its ```json blocks is a stored event that decodes, belongs to the section
//! it is in, has a derived id, chains to the line before it, and is byte for byte an event
//! of a replay fixture's log. docs/inputs.md has a heading for every input type, and every
//! line of its ```json blocks parses as an input of its section's type and is a line of a
//! replay fixture (or, for the inputs only the ledger writes, the input of an
//! `input.recorded` in a replay fixture's log).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use chat_ledger::import;
use chat_ledger::ledger::{Ledger, SeededKeys};
use chat_ledger::rulebook::Rulebook;
use chat_ledger::store::MemoryStore;
use chat_ledger_events::{decode, event_id, Command, EventBody, Hash, Input};

/// Every event type, as `EventBody::type_name` spells it.
const EVENT_TYPES: [&str; 26] = [
    "rulebook.adopted",
    "input.recorded",
    "command.rejected",
    "clock.advanced",
    "account.opened",
    "funds.added",
    "balance.adjusted",
    "account.charged",
    "account.refunded",
    "app.created",
    "edition.purchased",
    "edition.upgraded",
    "edition.refunded",
    "auto_renew.switched",
    "auto_renew.attempted",
    "plan.expired",
    "hold.placed",
    "hold.lifted",
    "app.reclaimed",
    "reminder.sent",
    "mau.counted",
    "bill.issued",
    "bill.charged",
    "arrears.started",
    "account.suspended",
    "arrears.cleared",
];

/// Every input type, as `Command::type_name` spells it.
const INPUT_TYPES: [&str; 11] = [
    "open_account",
    "add_funds",
    "create_app",
    "buy_edition",
    "set_auto_renew",
    "login",
    "login_batch",
    "refund_edition",
    "adjust_balance",
    "flag_violation",
    "advance_clock",
];

/// Inputs only the ledger writes: no file may hold them (`import` refuses them as bad
/// input), so their example is checked against the inputs recorded in the fixtures' logs.
const LEDGER_WRITTEN_INPUTS: [&str; 1] = ["login_batch"];

/// The seed of the fixtures' vault keys: the one `tests/fixtures.rs` uses, so a login's
/// user digest in an example is the one the fixture's snapshot shows.
const FIXTURE_KEY_SEED: &str = "replay-fixtures";

/// Where a variant sits in [`EVENT_TYPES`]. No wildcard arm: a new variant does not
/// compile until it is listed, and once listed it needs a heading and an example.
fn event_slot(body: &EventBody) -> usize {
    match body {
        EventBody::RulebookAdopted { .. } => 0,
        EventBody::InputRecorded { .. } => 1,
        EventBody::CommandRejected { .. } => 2,
        EventBody::ClockAdvanced { .. } => 3,
        EventBody::AccountOpened { .. } => 4,
        EventBody::FundsAdded { .. } => 5,
        EventBody::BalanceAdjusted { .. } => 6,
        EventBody::AccountCharged { .. } => 7,
        EventBody::AccountRefunded { .. } => 8,
        EventBody::AppCreated { .. } => 9,
        EventBody::EditionPurchased { .. } => 10,
        EventBody::EditionUpgraded { .. } => 11,
        EventBody::EditionRefunded { .. } => 12,
        EventBody::AutoRenewSwitched { .. } => 13,
        EventBody::AutoRenewAttempted { .. } => 14,
        EventBody::PlanExpired { .. } => 15,
        EventBody::HoldPlaced { .. } => 16,
        EventBody::HoldLifted { .. } => 17,
        EventBody::AppReclaimed { .. } => 18,
        EventBody::ReminderSent { .. } => 19,
        EventBody::MauCounted { .. } => 20,
        EventBody::BillIssued { .. } => 21,
        EventBody::BillCharged { .. } => 22,
        EventBody::ArrearsStarted { .. } => 23,
        EventBody::AccountSuspended { .. } => 24,
        EventBody::ArrearsCleared { .. } => 25,
    }
}

/// Where a variant sits in [`INPUT_TYPES`]; exhaustive for the same reason.
fn input_slot(command: &Command) -> usize {
    match command {
        Command::OpenAccount { .. } => 0,
        Command::AddFunds { .. } => 1,
        Command::CreateApp { .. } => 2,
        Command::BuyEdition { .. } => 3,
        Command::SetAutoRenew { .. } => 4,
        Command::Login { .. } => 5,
        Command::LoginBatch { .. } => 6,
        Command::RefundEdition { .. } => 7,
        Command::AdjustBalance { .. } => 8,
        Command::FlagViolation { .. } => 9,
        Command::AdvanceClock {} => 10,
    }
}

/// Derived ids are `"<key>#<index>"`; no input or deadline produces more events than this.
const EVENTS_PER_KEY_MAX: usize = 16;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One line of a ```json block.
struct Example {
    /// 1-based line number in the file.
    line: usize,
    /// Which ```json block of the file it is in (0, 1, …).
    block: usize,
    /// The text of the nearest heading above it, backticks removed.
    section: String,
    text: String,
}

struct Doc {
    name: String,
    headings: Vec<String>,
    examples: Vec<Example>,
}

impl Doc {
    fn read(relative: &str) -> Doc {
        let path = root().join(relative);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut doc = Doc {
            name: relative.to_owned(),
            headings: Vec::new(),
            examples: Vec::new(),
        };
        let mut section = String::new();
        // Inside a fence: Some(block index) for ```json, None for any other language.
        let mut fence: Option<Option<usize>> = None;
        let mut json_blocks = 0;
        for (index, line) in text.lines().enumerate() {
            if let Some(info) = line.trim_start().strip_prefix("```") {
                fence = match fence {
                    Some(_) => None,
                    None if info.trim() == "json" => {
                        json_blocks += 1;
                        Some(Some(json_blocks - 1))
                    }
                    None => Some(None),
                };
                continue;
            }
            match fence {
                Some(Some(block)) if !line.trim().is_empty() => doc.examples.push(Example {
                    line: index + 1,
                    block,
                    section: section.clone(),
                    text: line.to_owned(),
                }),
                Some(_) => {}
                None if line.starts_with('#') => {
                    section = line.trim_start_matches('#').trim().replace('`', "");
                    doc.headings.push(section.clone());
                }
                None => {}
            }
        }
        assert!(fence.is_none(), "{relative}: a code fence is not closed");
        doc
    }

    fn at(&self, example: &Example) -> String {
        format!("{}:{}", self.name, example.line)
    }

    /// Every type has exactly one heading and exactly one example under it.
    fn check_sections(&self, types: &[&str]) {
        for name in types {
            let headings = self.headings.iter().filter(|h| h == name).count();
            assert_eq!(
                headings, 1,
                "{}: needs exactly one heading `{name}`, found {headings}",
                self.name
            );
            let examples = self.examples.iter().filter(|e| e.section == *name).count();
            assert_eq!(
                examples, 1,
                "{}: section `{name}` needs exactly one example line in a ```json block, found {examples}",
                self.name
            );
        }
    }
}

fn fixture_paths() -> Vec<PathBuf> {
    let dir = root().join("replay-fixtures");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no fixtures in {}", dir.display());
    paths
}

/// The stored bytes of every event of every fixture's log. Imported under the fixture's
/// full path, as `tests/fixtures.rs` does: bulk login files are found next to it.
fn fixture_events() -> HashSet<Vec<u8>> {
    let mut events = HashSet::new();
    for path in fixture_paths() {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut ledger = Ledger::open_with_keys(
            Box::new(MemoryStore::new()),
            Rulebook::intl_2025(),
            Box::new(SeededKeys(FIXTURE_KEY_SEED.to_owned())),
        )
        .unwrap();
        import::import(&mut ledger, &name, &text, import::CHUNK_INPUTS_DEFAULT, |_| {})
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for stored in ledger.store().read(1, usize::MAX).unwrap() {
            events.insert(stored.bytes);
        }
    }
    events
}

/// The inputs recorded in the fixtures' logs, as compact JSON, keyed by their type.
fn recorded_inputs(events: &HashSet<Vec<u8>>) -> HashSet<(&'static str, String)> {
    events
        .iter()
        .filter_map(|bytes| match decode(bytes).expect("fixture events decode").event {
            EventBody::InputRecorded { input } => Some((
                input.command.type_name(),
                serde_json::to_string(&input).expect("inputs serialize"),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn every_event_type_is_documented_with_a_real_stored_example() {
    let doc = Doc::read("docs/events.md");
    doc.check_sections(&EVENT_TYPES);
    let stored = fixture_events();
    let mut previous: Option<(usize, u64, Hash)> = None;
    for example in &doc.examples {
        let at = doc.at(example);
        let envelope = decode(example.text.as_bytes()).unwrap_or_else(|e| panic!("{at}: does not decode: {e}"));
        let type_name = envelope.event.type_name();
        assert_eq!(
            EVENT_TYPES[event_slot(&envelope.event)],
            type_name,
            "EVENT_TYPES is out of order with EventBody"
        );
        if EVENT_TYPES.contains(&example.section.as_str()) {
            assert_eq!(
                type_name, example.section,
                "{at}: a {type_name} example in the section of another type"
            );
        }
        assert!(
            (0..EVENTS_PER_KEY_MAX).any(|index| event_id(&envelope.key, index) == envelope.id),
            "{at}: id {} is not derived from key {:?}",
            envelope.id,
            envelope.key.as_str()
        );
        if envelope.seq == 1 {
            assert_eq!(envelope.prev, Hash::GENESIS, "{at}: event 1 must follow 64 zeros");
        }
        // Consecutive lines of one block must be consecutive events of one log.
        if let Some((block, seq, hash)) = previous.filter(|(block, ..)| *block == example.block) {
            assert_eq!(
                envelope.seq,
                seq + 1,
                "{at}: does not follow the line before it (block {block})"
            );
            assert_eq!(envelope.prev, hash, "{at}: prev is not the hash of the line before it");
        }
        previous = Some((example.block, envelope.seq, Hash::of(example.text.as_bytes())));
        assert!(
            stored.contains(example.text.as_bytes()),
            "{at}: not a stored event of any replay fixture; paste a fresh line from `chat-ledger log --json`"
        );
    }
}

#[test]
fn every_input_type_is_documented_with_a_real_fixture_line() {
    let doc = Doc::read("docs/inputs.md");
    doc.check_sections(&INPUT_TYPES);
    let mut fixture_lines = HashSet::new();
    for path in fixture_paths() {
        let text = std::fs::read_to_string(&path).unwrap();
        fixture_lines.extend(text.lines().map(str::to_owned));
    }
    let recorded = recorded_inputs(&fixture_events());
    for name in LEDGER_WRITTEN_INPUTS {
        assert!(
            recorded.iter().any(|(type_name, _)| *type_name == name),
            "no replay fixture records a {name}: add one, its example must be a recorded one"
        );
    }
    for example in &doc.examples {
        let at = doc.at(example);
        let input: Input =
            serde_json::from_str(&example.text).unwrap_or_else(|e| panic!("{at}: not a valid input: {e}"));
        let type_name = input.command.type_name();
        assert_eq!(
            INPUT_TYPES[input_slot(&input.command)],
            type_name,
            "INPUT_TYPES is out of order with Command"
        );
        if INPUT_TYPES.contains(&example.section.as_str()) {
            assert_eq!(
                type_name, example.section,
                "{at}: a {type_name} example in the section of another type"
            );
        }
        if LEDGER_WRITTEN_INPUTS.contains(&type_name) {
            assert!(
                recorded.contains(&(type_name, example.text.clone())),
                "{at}: not an input recorded in any replay fixture's log; copy the \"input\" of a real input.recorded from `chat-ledger log --json`"
            );
        } else {
            assert!(
                fixture_lines.contains(&example.text),
                "{at}: not a line of any replay fixture; copy a real one from replay-fixtures/"
            );
        }
    }
}
