//! Money-side properties that no single fixture shows: conservation is checked
//! independently of the balance fold, user data is crypto-shredded at reclamation, and
//! bulk login ingestion resumes by key.

use chat_ledger::import;
use chat_ledger::ledger::{user_digest, Ledger, RawLogin, SeededKeys};
use chat_ledger::rulebook::Rulebook;
use chat_ledger::rules::digest_hex;
use chat_ledger::store::MemoryStore;
use chat_ledger::verify;
use chat_ledger_events::{AccountId, AppId, Instant, Money};

const SETUP: &str = r#"{"key":"open","at":"2025-03-01T09:00:00+08:00","actor":"customer","type":"open_account","account":"acme","creator":{"email":"ops@acme.example","sms":"+65-8000-0001"}}
{"key":"cash","at":"2025-03-01T09:01:00+08:00","actor":"customer","type":"add_funds","account":"acme","kind":"cash","amount":"1000.00"}
{"key":"voucher","at":"2025-03-01T09:02:00+08:00","actor":"support:mei","type":"add_funds","account":"acme","kind":"voucher","amount":"50.00"}
{"key":"app","at":"2025-03-01T09:10:00+08:00","actor":"customer","type":"create_app","account":"acme","app":1400000001,"name":"One"}
{"key":"buy","at":"2025-03-01T10:00:00+08:00","actor":"customer","type":"buy_edition","app":1400000001,"edition":"standard","months":1}
"#;

const APP: AppId = AppId(1400000001);

fn t(text: &str) -> Instant {
    Instant::parse(text).unwrap()
}

fn ledger() -> Ledger {
    let mut ledger = Ledger::open_with_keys(
        Box::new(MemoryStore::new()),
        Rulebook::intl_2025(),
        Box::new(SeededKeys("test".into())),
    )
    .unwrap();
    import::import(&mut ledger, "setup", SETUP, 100, |_| {}).unwrap();
    ledger
}

fn logins(count: u64, day: u32) -> Vec<RawLogin> {
    (0..count)
        .map(|i| RawLogin {
            line: i + 2,
            app: APP,
            user: format!("user-{i}"),
            logged_in_at: t(&format!("2025-03-{day:02}T{:02}:00:00+08:00", 10 + i % 12)),
        })
        .collect()
}

#[test]
fn conservation_catches_a_balance_the_flows_do_not_explain() {
    let ledger = ledger();
    let view = ledger.state().clone();
    view.check_conservation().expect("an honest ledger conserves money");
    let acme = AccountId::new("acme").unwrap();
    assert_eq!(
        view.accounts[&acme].balances.voucher.to_string(),
        "0.00 USD",
        "the voucher paid first"
    );
    assert_eq!(view.accounts[&acme].balances.cash.to_string(), "651.00 USD");

    let mut tampered = view.clone();
    let cash = &mut tampered.accounts.get_mut(&acme).unwrap().balances.cash;
    *cash = cash.checked_add("0.01 USD".parse::<Money>().unwrap()).unwrap();
    let err = tampered.check_conservation().unwrap_err();
    assert!(err.contains("account acme, cash"), "{err}");
    assert!(err.contains("651.00 USD") && err.contains("651.01 USD"), "{err}");
}

#[test]
fn reclamation_destroys_the_key_and_the_chain_still_verifies() {
    let mut ledger = ledger();
    ledger
        .ingest_logins("march.csv", "0123456789abcdef", &logins(3, 5), 100, |_, _| {})
        .unwrap();
    let key = ledger
        .store()
        .app_key(APP)
        .unwrap()
        .expect("a key once users were counted");
    let digest = digest_hex(user_digest(&key, "user-1"));
    let mut text = Vec::new();
    verify::export(ledger.store(), &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains(&digest), "the log holds the digest");
    assert!(!text.contains("user-1"), "the log never holds the user id");

    let tick = r#"{"key":"tick","at":"2025-07-02T00:00:00+08:00","actor":"system","type":"advance_clock"}
"#;
    import::import(&mut ledger, "tick", tick, 100, |_| {}).unwrap();
    assert!(ledger.state().apps[&APP].reclaimed_at.is_some());
    assert_eq!(
        ledger.store().app_key(APP).unwrap(),
        None,
        "the key is destroyed with the app"
    );
    verify::verify_store(ledger.store(), None)
        .unwrap()
        .expect("the chain verifies after shredding");
}

#[test]
fn a_bulk_ingestion_resumes_by_key_to_the_same_bytes() {
    let rows = logins(250, 6);
    let mut whole = ledger();
    whole
        .ingest_logins("march.csv", "00000000000000aa", &rows, 100, |_, _| {})
        .unwrap();
    let mut expected = Vec::new();
    verify::export(whole.store(), &mut expected).unwrap();

    let mut resumed = ledger();
    // The first run stops after its first chunk (as if killed after that ack).
    resumed
        .ingest_logins("march.csv", "00000000000000aa", &rows[..100], 100, |_, _| {})
        .unwrap();
    let summary = resumed
        .ingest_logins("march.csv", "00000000000000aa", &rows, 100, |_, _| {})
        .unwrap();
    assert_eq!(summary.rows_already_recorded, 100);
    assert_eq!(summary.users_counted, 150);
    let mut got = Vec::new();
    verify::export(resumed.store(), &mut got).unwrap();
    assert!(
        got == expected,
        "a resumed ingestion appends exactly what a whole one does"
    );
    let again = resumed
        .ingest_logins("march.csv", "00000000000000aa", &rows, 100, |_, _| {})
        .unwrap();
    assert_eq!((again.rows_already_recorded, again.events_appended), (250, 0));
}

#[test]
fn user_digests_made_ahead_with_a_key_that_changed_are_made_again() {
    // The next chunk's digests are made while this one is decided; app 2's first logins
    // come in the second chunk, before app 2 has a key: made ahead without one, they must
    // be made again with the key the second chunk creates.
    const APP2: AppId = AppId(1400000002);
    let mut ledger = ledger();
    let second = r#"{"key":"app2","at":"2025-03-01T11:00:00+08:00","actor":"customer","type":"create_app","account":"acme","app":1400000002,"name":"Two"}
{"key":"buy2","at":"2025-03-01T11:01:00+08:00","actor":"customer","type":"buy_edition","app":1400000002,"edition":"standard","months":1}
"#;
    import::import(&mut ledger, "second", second, 100, |_| {}).unwrap();
    let mut rows = logins(150, 6);
    rows.extend((0..100u64).map(|i| RawLogin {
        line: 152 + i,
        app: APP2,
        user: format!("u-{i}"),
        logged_in_at: t("2025-03-07T10:00:00+08:00"),
    }));
    assert!(ledger.store().app_key(APP2).unwrap().is_none());
    let summary = ledger
        .ingest_logins("march.csv", "00000000000000bb", &rows, 100, |_, _| {})
        .unwrap();
    assert_eq!(summary.users_counted, 250);
    let users = |app: AppId| ledger.state().apps[&app].usage["2025-03"].users.len();
    assert_eq!((users(APP), users(APP2)), (150, 100), "every user counted once");
    let key2 = ledger.store().app_key(APP2).unwrap().expect("app 2 has a key now");
    let mut text = Vec::new();
    verify::export(ledger.store(), &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    for user in ["u-0", "u-49", "u-50", "u-99"] {
        let digest = digest_hex(user_digest(&key2, user));
        assert!(text.contains(&digest), "{user} is counted under app 2's key");
    }
}

#[test]
fn a_chunk_recorded_between_two_new_ones_is_skipped_and_the_next_counts_its_own_users() {
    // A first run ingested only the middle chunk (lines 102-201); the whole file then
    // comes again in chunks of 100: the first chunk is new, the second recorded, the third
    // new. Digests made ahead for the skipped chunk must not stand for the third's.
    let rows = logins(300, 6);
    let mut ledger = ledger();
    let first = ledger
        .ingest_logins("march.csv", "00000000000000cc", &rows[100..200], 100, |_, _| {})
        .unwrap();
    assert_eq!(first.users_counted, 100);
    let again = ledger
        .ingest_logins("march.csv", "00000000000000cc", &rows, 100, |_, _| {})
        .unwrap();
    assert_eq!((again.rows_already_recorded, again.users_counted), (100, 200));
    assert_eq!(ledger.state().apps[&APP].usage["2025-03"].users.len(), 300);
}
