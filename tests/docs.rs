//! The docs cannot rot silently. docs/events.md has a heading for every event type, and
//! every line of its ```json blocks is a stored event that decodes, belongs to the section
//! it is in, has a derived id, chains to the line before it, and is byte for byte an event
//! of a replay fixture's log. docs/inputs.md has a heading for every input type, and every
//! line of its ```json blocks parses as an input of its section's type and is a line of a
//! replay fixture.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use chat_ledger::import;
use chat_ledger::ledger::Ledger;
use chat_ledger::rulebook::Rulebook;
use chat_ledger::store::MemoryStore;
use chat_ledger_events::{decode, event_id, Command, EventBody, Hash, Input};

/// Every event type, as `EventBody::type_name` spells it.
const EVENT_TYPES: [&str; 14] = [
    "rulebook.adopted",
    "input.recorded",
    "command.rejected",
    "clock.advanced",
    "account.opened",
    "funds.added",
    "account.charged",
    "app.created",
    "edition.purchased",
    "auto_renew.switched",
    "plan.expired",
    "hold.placed",
    "hold.lifted",
    "app.reclaimed",
];

/// Every input type, as `Command::type_name` spells it.
const INPUT_TYPES: [&str; 6] = [
    "open_account",
    "add_funds",
    "create_app",
    "buy_edition",
    "set_auto_renew",
    "advance_clock",
];

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
        EventBody::AccountCharged { .. } => 6,
        EventBody::AppCreated { .. } => 7,
        EventBody::EditionPurchased { .. } => 8,
        EventBody::AutoRenewSwitched { .. } => 9,
        EventBody::PlanExpired { .. } => 10,
        EventBody::HoldPlaced { .. } => 11,
        EventBody::HoldLifted { .. } => 12,
        EventBody::AppReclaimed { .. } => 13,
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
        Command::AdvanceClock {} => 5,
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

/// The stored bytes of every event of every fixture's log.
fn fixture_events() -> HashSet<Vec<u8>> {
    let mut events = HashSet::new();
    for path in fixture_paths() {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut ledger = Ledger::open(Box::new(MemoryStore::new()), Rulebook::intl_2025()).unwrap();
        import::import(&mut ledger, &name, &text, import::CHUNK_INPUTS_DEFAULT, |_| {})
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for stored in ledger.store().read(1, usize::MAX).unwrap() {
            events.insert(stored.bytes);
        }
    }
    events
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
        assert!(
            fixture_lines.contains(&example.text),
            "{at}: not a line of any replay fixture; copy a real one from replay-fixtures/"
        );
    }
}
