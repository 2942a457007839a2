//! Rule shapes are data: the same inputs under a test-only rulebook (48 h grace, T → T−1
//! validity, 2 apps per account, cash paid first, 7 reminder days after expiry instead of
//! 1) behave differently with no code change.

use std::path::Path;

use chat_ledger::import;
use chat_ledger::ledger::{Ledger, LedgerError};
use chat_ledger::rulebook::Rulebook;
use chat_ledger::store::MemoryStore;
use chat_ledger_events::{AccountId, AppId, Instant, StreamId};
use chat_ledger_projections::{AppStatus, LedgerView};

const INPUTS: &str = r#"{"key":"open","at":"2025-03-01T09:00:00+08:00","actor":"customer","type":"open_account","account":"acme","creator":{"email":"ops@acme.example","sms":"+65-8000-0001"}}
{"key":"gift","at":"2025-03-01T09:01:00+08:00","actor":"support:mei","type":"add_funds","account":"acme","kind":"gift","amount":"100.00"}
{"key":"cash","at":"2025-03-01T09:02:00+08:00","actor":"customer","type":"add_funds","account":"acme","kind":"cash","amount":"500.00"}
{"key":"app-1","at":"2025-03-01T09:10:00+08:00","actor":"customer","type":"create_app","account":"acme","app":1400000001,"name":"One"}
{"key":"app-2","at":"2025-03-01T09:11:00+08:00","actor":"customer","type":"create_app","account":"acme","app":1400000002,"name":"Two"}
{"key":"app-3","at":"2025-03-01T09:12:00+08:00","actor":"customer","type":"create_app","account":"acme","app":1400000003,"name":"Three"}
{"key":"buy","at":"2025-03-01T10:00:00+08:00","actor":"customer","type":"buy_edition","app":1400000001,"edition":"standard","months":1}
{"key":"tick","at":"2025-04-01T12:00:00+08:00","actor":"system","type":"advance_clock"}
"#;

fn t(text: &str) -> Instant {
    Instant::parse(text).unwrap()
}

fn run(book: Rulebook) -> LedgerView {
    let mut ledger = Ledger::open(Box::new(MemoryStore::new()), book).unwrap();
    import::import(&mut ledger, "inline", INPUTS, 100, |_| {}).unwrap();
    ledger.state().clone()
}

fn test_rulebook() -> Rulebook {
    Rulebook::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rulebooks/test-48h.json")).unwrap()
}

#[test]
fn a_second_rulebook_changes_behaviour_without_code() {
    let intl = run(Rulebook::intl_2025());
    let test = run(test_rulebook());
    let app = AppId(1400000001);
    let acme = AccountId::new("acme").unwrap();

    // plan.validity: T → T (intl-2025) vs T → T−1 (test).
    assert_eq!(
        intl.apps[&app].plan.as_ref().unwrap().valid_until,
        t("2025-04-01T10:00:00+08:00")
    );
    assert_eq!(
        test.apps[&app].plan.as_ref().unwrap().valid_until,
        t("2025-03-31T10:00:00+08:00")
    );

    // expiry.grace: 24 h vs 48 h. At Apr 1 12:00 the intl plan expired 2 h ago and is in
    // grace until Apr 2 10:00; the test plan expired Mar 31 10:00 with grace until Apr 2 10:00.
    assert_eq!(intl.apps[&app].status, AppStatus::Grace);
    assert_eq!(
        intl.apps[&app].expired.as_ref().unwrap().grace_ends_at,
        t("2025-04-02T10:00:00+08:00")
    );
    assert_eq!(test.apps[&app].status, AppStatus::Grace);
    assert_eq!(
        test.apps[&app].expired.as_ref().unwrap().grace_ends_at,
        t("2025-04-02T10:00:00+08:00")
    );

    // app.limit: 300 vs 2 apps per account.
    assert!(intl.apps.contains_key(&AppId(1400000003)));
    assert!(!test.apps.contains_key(&AppId(1400000003)));
    assert_eq!(test.commands_rejected, 1);

    // payment.order: gift first (intl-2025) vs cash first (test).
    let (intl_b, test_b) = (&intl.accounts[&acme].balances, &test.accounts[&acme].balances);
    assert_eq!(
        (intl_b.gift.to_string(), intl_b.cash.to_string()),
        ("0.00 USD".into(), "201.00 USD".into())
    );
    assert_eq!(
        (test_b.gift.to_string(), test_b.cash.to_string()),
        ("100.00 USD".into(), "101.00 USD".into())
    );

    // reminder.expiry: 7 days up to the expiry day, then 1 day (intl-2025) or 7 (test).
    // By Apr 1 12:00 the intl plan (expiry day Apr 1) sent its reminders of Mar 26 … Apr 1:
    // 7; the test plan (expiry day Mar 31) those of Mar 25 … Mar 31 and, after, Apr 1: 8.
    // They go on the account's stream, after account.opened, 2 × funds.added and
    // account.charged (and, under the test rulebook, the refused third app).
    let account = StreamId::account(&acme);
    assert_eq!(intl.stream_version(&account), 4 + 7);
    assert_eq!(test.stream_version(&account), 4 + 1 + 8);
    for view in [&intl, &test] {
        let next = view.apps[&app].next_reminder.as_ref().expect("the series goes on");
        assert_eq!(next.at, t("2025-04-02T00:00:00+08:00"));
    }
}

#[test]
fn a_ledger_keeps_the_rulebook_it_was_started_under() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = chat_ledger::store::SledStore::open(dir.path()).unwrap();
        let mut ledger = Ledger::open(Box::new(store), Rulebook::intl_2025()).unwrap();
        import::import(&mut ledger, "inline", INPUTS, 100, |_| {}).unwrap();
    }
    let store = chat_ledger::store::SledStore::open(dir.path()).unwrap();
    match Ledger::open(Box::new(store), test_rulebook()) {
        Err(LedgerError::RulebookMismatch { ledger, given }) => {
            assert_eq!((ledger.as_str(), given.as_str()), ("intl-2025@1", "test-48h@1"));
        }
        Err(other) => panic!("expected a rulebook mismatch, got {other}"),
        Ok(_) => panic!("expected a rulebook mismatch, the ledger opened"),
    }
}
