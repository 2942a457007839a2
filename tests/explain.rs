//! `explain`: five suspension stories, an account in arrears and an active app, each
//! built through the library, asserted on the facts of the explanation (dates, rule ids,
//! amounts) apart from the snapshot of its plain text, so an accepted snapshot cannot
//! hide a wrong number.

use chat_ledger::explain::{explain_account, explain_app, render, Explanation};
use chat_ledger::import;
use chat_ledger::ledger::{Ledger, RawLogin, SeededKeys};
use chat_ledger::replay;
use chat_ledger::rulebook::Rulebook;
use chat_ledger::store::MemoryStore;
use chat_ledger_events::{AccountId, AppId, HoldKind, Instant};

fn ledger() -> Ledger {
    Ledger::open_with_keys(
        Box::new(MemoryStore::new()),
        Rulebook::intl_2025(),
        Box::new(SeededKeys("test".into())),
    )
    .expect("open ledger")
}

fn run(ledger: &mut Ledger, name: &str, text: &str) {
    import::import(ledger, name, text, 100, |_| {}).unwrap_or_else(|e| panic!("{name}: {e}"));
}

fn t(text: &str) -> Instant {
    Instant::parse(text).unwrap()
}

/// At the head, also as the CLI does it: from a snapshot's parts (the app without its
/// settled months), which must tell the same.
fn app_at(ledger: &Ledger, app: u64, at: Option<&str>) -> Explanation {
    let until = at.map(t);
    let store = ledger.store();
    let mut view = replay::load(store, until).expect("replay");
    let x = explain_app(store, &view, AppId(app), until).expect("explain app");
    if until.is_none() {
        replay::save_snapshot(store, &mut view).expect("save a snapshot");
        let part = replay::load_for_app(store, AppId(app), None).expect("the app's part");
        let from_part = explain_app(store, &part, AppId(app), None).expect("explain app");
        assert_eq!(render(&from_part), render(&x), "explained from the snapshot's parts");
    }
    x
}

fn account_at(ledger: &Ledger, account: &str, at: Option<&str>) -> Explanation {
    let until = at.map(t);
    let view = replay::load(ledger.store(), until).expect("replay");
    explain_account(ledger.store(), &view, &AccountId::new(account).unwrap(), until).expect("explain account")
}

/// The step of `event_type` decided by `rule`, or a panic listing the steps.
fn step<'x>(x: &'x Explanation, event_type: &str, rule: Option<&str>) -> &'x chat_ledger::explain::Step {
    x.steps
        .iter()
        .find(|s| s.event_type == event_type && s.rule.as_deref() == rule)
        .unwrap_or_else(|| {
            let seen: Vec<String> = x
                .steps
                .iter()
                .map(|s| format!("{} {}", s.event_type, s.rule.as_deref().unwrap_or("-")))
                .collect();
            panic!("no {event_type} step by {rule:?}; steps: {seen:#?}")
        })
}

/// The step of `event_type` whose text contains `needle`.
fn step_saying<'x>(x: &'x Explanation, event_type: &str, needle: &str) -> &'x chat_ledger::explain::Step {
    x.steps
        .iter()
        .find(|s| s.event_type == event_type && s.text.contains(needle))
        .unwrap_or_else(|| panic!("no {event_type} step saying {needle:?}; steps: {:#?}", x.steps))
}

fn holds(x: &Explanation) -> Vec<HoldKind> {
    x.holds.iter().map(|h| h.hold).collect()
}

fn has(texts: &[String], needle: &str) -> bool {
    texts.iter().any(|t| t.contains(needle))
}

const OPEN_ACME: &str = r#"{"key":"acme-open","at":"2025-03-01T09:00:00+08:00","actor":"customer","type":"open_account","account":"acme","creator":{"email":"ops@acme.example","sms":"+65-8000-0001"}}
{"key":"acme-app","at":"2025-03-01T09:10:00+08:00","actor":"customer","type":"create_app","account":"acme","app":1400000001,"name":"Acme Chat"}
"#;

/// Story 1: the plan expired, nobody renewed, the app was suspended 24 h later and waits
/// for reclamation; a login tried after the suspension was refused.
#[test]
fn story_1_expired_not_renewed_suspended_reclamation_pending() {
    let mut ledger = ledger();
    run(
        &mut ledger,
        "story1.jsonl",
        r#"{"key":"acme-open","at":"2025-03-01T09:00:00+08:00","actor":"customer","type":"open_account","account":"acme","creator":{"email":"ops@acme.example","sms":"+65-8000-0001"}}
{"key":"acme-topup","at":"2025-03-01T09:05:00+08:00","actor":"customer","type":"add_funds","account":"acme","kind":"cash","amount":"500.00"}
{"key":"acme-app","at":"2025-03-01T09:10:00+08:00","actor":"customer","type":"create_app","account":"acme","app":1400000001,"name":"Acme Chat"}
{"key":"acme-buy","at":"2025-03-01T10:00:00+08:00","actor":"customer","type":"buy_edition","app":1400000001,"edition":"standard","months":1}
{"key":"acme-login","at":"2025-04-03T09:00:00+08:00","actor":"customer","type":"login","app":1400000001,"user":"alice"}
{"key":"tick","at":"2025-04-05T00:00:00+08:00","actor":"system","type":"advance_clock"}
"#,
    );

    let x = app_at(&ledger, 1400000001, None);
    assert_eq!(x.status, "suspended");
    assert_eq!(holds(&x), [HoldKind::Expiry]);
    assert_eq!(x.holds[0].since, t("2025-04-02T10:00:00+08:00"));
    let hold = step(&x, "hold.placed", Some("expiry.grace"));
    assert_eq!(hold.at, t("2025-04-02T10:00:00+08:00"));
    assert_eq!(hold.rulebook.as_deref(), Some("intl-2025@1"));
    let expired = step(&x, "plan.expired", Some("plan.expiry"));
    assert_eq!(expired.at, t("2025-04-01T10:00:00+08:00"));
    assert!(
        expired.text.contains("24 h grace to renew, until 2025-04-02 10:00"),
        "{}",
        expired.text
    );
    let bought = step(&x, "edition.purchased", Some("plan.purchase"));
    assert_eq!(bought.at, t("2025-03-01T10:00:00+08:00"));
    assert!(bought.text.contains("399.00 USD"), "{}", bought.text);
    step_saying(
        &x,
        "input.recorded",
        "customer asked to buy standard for 1 month (input acme-buy)",
    );
    assert!(
        !x.steps.iter().any(|s| s.event_type == "auto_renew.attempted"),
        "auto-renew was off"
    );
    assert!(
        x.holds[0].summary.ends_with("auto-renew was off"),
        "{}",
        x.holds[0].summary
    );
    assert_eq!(x.reclamation_at, Some(t("2025-07-01T00:00:00+08:00")));
    let reminders = x.reminders.as_ref().expect("reminders");
    assert_eq!(
        reminders.count, 8,
        "7 before expiry (day -6 .. the expiry day) and 1 after"
    );
    assert_eq!(reminders.last_at, t("2025-04-02T00:00:00+08:00"));
    assert_eq!(x.refusals_total, 1);
    assert_eq!(x.refusals[0].rule.as_deref(), Some("login.suspended"));
    assert!(
        has(&x.advice, "Buy a plan (any paid edition) before 2025-07-01 00:00"),
        "{:#?}",
        x.advice
    );
    assert!(
        has(&x.advice, "the balance (101.00 USD)") || has(&x.advice, "the balance is 101.00 USD"),
        "{:#?}",
        x.advice
    );
    insta::assert_snapshot!("story_1_expired", render(&x));

    // The same app during its grace, with --at: the chain ends at the expiry.
    let grace = app_at(&ledger, 1400000001, Some("2025-04-01T12:00:00+08:00"));
    assert_eq!(grace.status, "grace");
    assert!(grace.holds.is_empty());
    assert!(grace.steps.iter().all(|s| s.at <= t("2025-04-01T12:00:00+08:00")));
    assert!(
        has(&grace.advice, "Renew before 2025-04-02 10:00"),
        "{:#?}",
        grace.advice
    );
    insta::assert_snapshot!("story_1_in_grace", render(&grace));
}

/// Story 2: auto-renew was on, but at expiry the balance (350.00) was below the price (399.00).
#[test]
fn story_2_auto_renew_failed_for_a_low_balance() {
    let mut ledger = ledger();
    run(
        &mut ledger,
        "story2.jsonl",
        r#"{"key":"acme-open","at":"2025-03-01T09:00:00+08:00","actor":"customer","type":"open_account","account":"acme","creator":{"email":"ops@acme.example","sms":"+65-8000-0001"}}
{"key":"acme-topup","at":"2025-03-01T09:05:00+08:00","actor":"customer","type":"add_funds","account":"acme","kind":"cash","amount":"749.00"}
{"key":"acme-app","at":"2025-03-01T09:10:00+08:00","actor":"customer","type":"create_app","account":"acme","app":1400000001,"name":"Acme Chat"}
{"key":"acme-buy","at":"2025-03-01T10:00:00+08:00","actor":"customer","type":"buy_edition","app":1400000001,"edition":"standard","months":1}
{"key":"acme-auto","at":"2025-03-02T10:00:00+08:00","actor":"customer","type":"set_auto_renew","app":1400000001,"on":true}
{"key":"tick","at":"2025-04-05T00:00:00+08:00","actor":"system","type":"advance_clock"}
"#,
    );
    let x = app_at(&ledger, 1400000001, None);
    assert_eq!(x.status, "suspended");
    assert_eq!(holds(&x), [HoldKind::Expiry]);
    let attempt = step(&x, "auto_renew.attempted", Some("auto_renew.renewal"));
    assert_eq!(attempt.at, t("2025-04-01T10:00:00+08:00"));
    assert!(
        attempt
            .text
            .contains("the balance (350.00 USD) was below the price (399.00 USD)"),
        "{}",
        attempt.text
    );
    assert!(
        x.holds[0]
            .summary
            .contains("auto-renew was on but the balance (350.00 USD) was below the price (399.00 USD)"),
        "{}",
        x.holds[0].summary
    );
    assert!(x.summary.contains("plan expired 2025-04-01 10:00"), "{}", x.summary);
    assert!(x.summary.contains("rule expiry.grace, intl-2025@1"), "{}", x.summary);
    assert!(x.summary.contains("suspended 2025-04-02 10:00"), "{}", x.summary);
    assert!(
        x.summary
            .contains("reclaimed on 2025-07-01 00:00 unless a purchase arrives"),
        "{}",
        x.summary
    );
    assert!(has(&x.advice, "top up at least 49.00 USD first"), "{:#?}", x.advice);
    insta::assert_snapshot!("story_2_auto_renew_failed", render(&x));
}

/// Story 3: the plan was refunded within five days: the refund hold.
#[test]
fn story_3_refunded_within_five_days() {
    let mut ledger = ledger();
    run(
        &mut ledger,
        "story3.jsonl",
        r#"{"key":"acme-open","at":"2025-03-01T09:00:00+08:00","actor":"customer","type":"open_account","account":"acme","creator":{"email":"ops@acme.example","sms":"+65-8000-0001"}}
{"key":"acme-topup","at":"2025-03-01T09:05:00+08:00","actor":"customer","type":"add_funds","account":"acme","kind":"cash","amount":"500.00"}
{"key":"acme-app","at":"2025-03-01T09:10:00+08:00","actor":"customer","type":"create_app","account":"acme","app":1400000001,"name":"Acme Chat"}
{"key":"acme-buy","at":"2025-03-01T10:00:00+08:00","actor":"customer","type":"buy_edition","app":1400000001,"edition":"standard","months":1}
{"key":"acme-refund","at":"2025-03-03T12:00:00+08:00","actor":"customer","type":"refund_edition","app":1400000001}
{"key":"tick","at":"2025-03-10T00:00:00+08:00","actor":"system","type":"advance_clock"}
"#,
    );
    let x = app_at(&ledger, 1400000001, None);
    assert_eq!(x.status, "suspended");
    assert_eq!(holds(&x), [HoldKind::Refund]);
    assert_eq!(x.holds[0].since, t("2025-03-03T12:00:00+08:00"));
    let refunded = step(&x, "edition.refunded", Some("refund.five_day"));
    // 3 started days of 31 used: 399 × 28 / 31 = 360.39.
    assert!(refunded.text.contains("3 of 31 days used"), "{}", refunded.text);
    assert!(refunded.text.contains("360.39 USD back"), "{}", refunded.text);
    assert_eq!(
        step(&x, "hold.placed", Some("refund.five_day")).at,
        t("2025-03-03T12:00:00+08:00")
    );
    step_saying(
        &x,
        "input.recorded",
        "customer asked to refund the plan of app 1400000001",
    );
    // The purchase it refunded is told too, though no cause link leads to it.
    assert_eq!(
        step(&x, "edition.purchased", Some("plan.purchase")).at,
        t("2025-03-01T10:00:00+08:00")
    );
    assert_eq!(x.reclamation_at, Some(t("2025-06-01T00:00:00+08:00")));
    assert!(x.reminders.is_none(), "a refunded plan has no reminders left to tell");
    assert!(
        has(&x.advice, "Buy a plan (any paid edition) before 2025-06-01 00:00"),
        "{:#?}",
        x.advice
    );
    assert!(has(&x.advice, "lifts the refund hold"), "{:#?}", x.advice);
    insta::assert_snapshot!("story_3_refunded", render(&x));
}

/// Story 4: support flagged a content violation: the hold is never lifted, and a purchase
/// tried afterwards was refused.
#[test]
fn story_4_content_violation_flagged_by_support() {
    let mut ledger = ledger();
    run(
        &mut ledger,
        "story4.jsonl",
        r#"{"key":"acme-open","at":"2025-03-01T09:00:00+08:00","actor":"customer","type":"open_account","account":"acme","creator":{"email":"ops@acme.example","sms":"+65-8000-0001"}}
{"key":"acme-topup","at":"2025-03-01T09:05:00+08:00","actor":"customer","type":"add_funds","account":"acme","kind":"cash","amount":"1000.00"}
{"key":"acme-app","at":"2025-03-01T09:10:00+08:00","actor":"customer","type":"create_app","account":"acme","app":1400000001,"name":"Acme Chat"}
{"key":"acme-buy","at":"2025-03-01T10:00:00+08:00","actor":"customer","type":"buy_edition","app":1400000001,"edition":"standard","months":1}
{"key":"acme-flag","at":"2025-03-12T15:30:00+08:00","actor":"support:mei","type":"flag_violation","app":1400000001,"reason":"spam campaign reported in ticket 4711"}
{"key":"acme-buy-again","at":"2025-03-13T09:00:00+08:00","actor":"customer","type":"buy_edition","app":1400000001,"edition":"pro","months":1}
{"key":"tick","at":"2025-03-20T00:00:00+08:00","actor":"system","type":"advance_clock"}
"#,
    );
    let x = app_at(&ledger, 1400000001, None);
    assert_eq!(x.status, "suspended");
    assert_eq!(holds(&x), [HoldKind::Violation]);
    let hold = step(&x, "hold.placed", Some("violation.hold"));
    assert_eq!(hold.at, t("2025-03-12T15:30:00+08:00"));
    let flagged = step(&x, "input.recorded", None);
    assert!(
        flagged.text.starts_with("support:mei asked to flag app 1400000001"),
        "{}",
        flagged.text
    );
    assert!(
        flagged.text.contains("spam campaign reported in ticket 4711"),
        "{}",
        flagged.text
    );
    assert!(x.holds[0].summary.contains("never lifted"), "{}", x.holds[0].summary);
    assert_eq!(x.refusals_total, 1);
    assert_eq!(x.refusals[0].rule.as_deref(), Some("violation.hold"));
    assert!(
        x.refusals[0].text.starts_with("buy_edition refused"),
        "{}",
        x.refusals[0].text
    );
    assert!(has(&x.advice, "Nothing lifts the violation hold"), "{:#?}", x.advice);
    assert!(!has(&x.advice, "Buy a plan"), "no purchase helps: {:#?}", x.advice);
    assert_eq!(x.reclamation_at, Some(t("2025-06-10T00:00:00+08:00")));
    insta::assert_snapshot!("story_4_violation", render(&x));
}

const GLOBEX: &str = r#"{"key":"globex-open","at":"2025-04-01T09:00:00+08:00","actor":"customer","type":"open_account","account":"globex","creator":{"email":"billing@globex.example","sms":"+1-555-0100"}}
{"key":"globex-topup","at":"2025-04-01T09:05:00+08:00","actor":"customer","type":"add_funds","account":"globex","kind":"cash","amount":"399.00"}
{"key":"globex-app","at":"2025-04-01T09:10:00+08:00","actor":"customer","type":"create_app","account":"globex","app":1400000005,"name":"Globex Support Desk"}
{"key":"globex-buy","at":"2025-04-01T10:00:00+08:00","actor":"customer","type":"buy_edition","app":1400000005,"edition":"standard","months":1}
"#;

/// A Standard app with 10,200 distinct users in April 2025 and a zero balance: the
/// 3.00 USD bill pushed 2025-05-01 00:00 puts the account in arrears; the plan expires
/// the same day, 10:00.
fn globex() -> Ledger {
    let mut ledger = ledger();
    run(&mut ledger, "globex.jsonl", GLOBEX);
    let start = t("2025-04-02T00:00:00+08:00").utc();
    let rows: Vec<RawLogin> = (0..10_200u64)
        .map(|n| RawLogin {
            line: n + 1,
            app: AppId(1400000005),
            user: format!("user-{n}"),
            logged_in_at: Instant::from_utc(start + chrono::Duration::seconds(100 * n as i64)),
        })
        .collect();
    let summary = ledger
        .ingest_logins("april-logins.csv", "april", &rows, 5000, |_, _| {})
        .expect("logins");
    assert_eq!(summary.users_counted, 10_200);
    run(
        &mut ledger,
        "globex-later.jsonl",
        r#"{"key":"tick","at":"2025-05-03T00:00:00+08:00","actor":"system","type":"advance_clock"}
"#,
    );
    ledger
}

/// Story 5: two holds at once — arrears (an unpaid MAU bill) and expiry — both explained.
#[test]
fn story_5_overlapping_expiry_and_arrears() {
    let ledger = globex();
    let x = app_at(&ledger, 1400000005, None);
    assert_eq!(x.status, "suspended");
    assert_eq!(holds(&x), [HoldKind::Arrears, HoldKind::Expiry], "first placed first");
    assert_eq!(x.holds[0].since, t("2025-05-02T00:00:00+08:00"));
    assert_eq!(x.holds[1].since, t("2025-05-02T10:00:00+08:00"));

    let bill = step(&x, "bill.issued", Some("bill.push"));
    assert_eq!(bill.at, t("2025-05-01T00:00:00+08:00"));
    assert!(
        bill.text.contains("200 × 0.015 USD = 3.00 USD [mau.overage]"),
        "{}",
        bill.text
    );
    let charged = step(&x, "bill.charged", Some("bill.payment"));
    assert!(charged.text.contains("balance after: -3.00 USD"), "{}", charged.text);
    let arrears = step(&x, "arrears.started", Some("arrears.grace"));
    assert!(arrears.text.contains("held at 2025-05-02 00:00"), "{}", arrears.text);
    let counted = step(&x, "mau.counted", Some("mau.count"));
    assert!(counted.text.contains("10200 in that month in all"), "{}", counted.text);
    assert!(counted.text.contains("bill for 2025-05-01 00:00"), "{}", counted.text);
    step_saying(
        &x,
        "input.recorded",
        "system asked to count the logins of april-logins.csv, lines 1–",
    );
    assert!(x.steps.iter().any(|s| s.event_type == "account.suspended"));
    let arrears_hold = x
        .steps
        .iter()
        .find(|s| s.event_type == "hold.placed" && s.rule.as_deref() == Some("arrears.grace"))
        .unwrap();
    assert!(
        arrears_hold.text.contains("reclaimed at 2025-07-31 00:00"),
        "{}",
        arrears_hold.text
    );
    let expiry_hold = step(&x, "hold.placed", Some("expiry.grace"));
    assert!(expiry_hold.text.contains("already unusable"), "{}", expiry_hold.text);
    assert_eq!(
        step(&x, "plan.expired", Some("plan.expiry")).at,
        t("2025-05-01T10:00:00+08:00")
    );
    assert_eq!(x.reclamation_at, Some(t("2025-07-31T00:00:00+08:00")));

    assert!(
        x.holds[0]
            .summary
            .contains("bill 1400000005-2025-04 (2025-04, 3.00 USD) pushed 2025-05-01 00:00"),
        "{}",
        x.holds[0].summary
    );
    assert!(
        x.holds[0].summary.contains("24 h arrears grace"),
        "{}",
        x.holds[0].summary
    );
    assert!(has(&x.advice, "Top up at least 3.00 USD"), "{:#?}", x.advice);
    assert!(has(&x.advice, "top up at least 402.00 USD in all"), "{:#?}", x.advice);
    insta::assert_snapshot!("story_5_expiry_and_arrears", render(&x));
}

#[test]
fn an_account_in_arrears_is_explained_from_the_bill_to_the_holds() {
    let ledger = globex();
    let x = account_at(&ledger, "globex", None);
    assert_eq!(x.status, "in arrears, suspended");
    for (event_type, rule) in [
        ("bill.issued", "bill.push"),
        ("bill.charged", "bill.payment"),
        ("arrears.started", "arrears.grace"),
        ("account.suspended", "arrears.grace"),
        ("hold.placed", "arrears.grace"),
        ("reminder.sent", "reminder.arrears"),
    ] {
        step(&x, event_type, Some(rule));
    }
    assert_eq!(
        step(&x, "account.suspended", Some("arrears.grace")).at,
        t("2025-05-02T00:00:00+08:00")
    );
    assert!(x.summary.contains("-3.00 USD"), "{}", x.summary);
    assert_eq!(x.apps.len(), 1);
    assert_eq!(x.apps[0].holds, [HoldKind::Expiry, HoldKind::Arrears]);
    assert!(has(&x.advice, "Top up at least 3.00 USD"), "{:#?}", x.advice);
    insta::assert_snapshot!("account_in_arrears", render(&x));

    // Before the arrears grace ended: in arrears, not yet suspended.
    let before = account_at(&ledger, "globex", Some("2025-05-01T12:00:00+08:00"));
    assert_eq!(before.status, "in arrears");
    assert!(!before.steps.iter().any(|s| s.event_type == "account.suspended"));
    assert!(
        before.summary.contains("held at 2025-05-02 00:00"),
        "{}",
        before.summary
    );
}

#[test]
fn an_active_app_follows_its_auto_renewal_back_to_the_purchase() {
    let mut ledger = ledger();
    run(
        &mut ledger,
        "active.jsonl",
        r#"{"key":"acme-open","at":"2025-03-01T09:00:00+08:00","actor":"customer","type":"open_account","account":"acme","creator":{"email":"ops@acme.example","sms":"+65-8000-0001"}}
{"key":"acme-topup","at":"2025-03-01T09:05:00+08:00","actor":"customer","type":"add_funds","account":"acme","kind":"cash","amount":"1000.00"}
{"key":"acme-app","at":"2025-03-01T09:10:00+08:00","actor":"customer","type":"create_app","account":"acme","app":1400000001,"name":"Acme Chat"}
{"key":"acme-buy","at":"2025-03-01T10:00:00+08:00","actor":"customer","type":"buy_edition","app":1400000001,"edition":"standard","months":1}
{"key":"acme-auto","at":"2025-03-02T10:00:00+08:00","actor":"customer","type":"set_auto_renew","app":1400000001,"on":true}
{"key":"tick","at":"2025-04-10T00:00:00+08:00","actor":"system","type":"advance_clock"}
"#,
    );
    let x = app_at(&ledger, 1400000001, None);
    assert_eq!(x.status, "active");
    assert!(x.holds.is_empty());
    let renewed = step(&x, "edition.purchased", Some("auto_renew.renewal"));
    assert_eq!(renewed.at, t("2025-04-01T10:00:00+08:00"));
    assert!(
        renewed.text.contains("valid 2025-04-01 10:00 → 2025-05-01 10:00"),
        "{}",
        renewed.text
    );
    assert_eq!(
        step(&x, "edition.purchased", Some("plan.purchase")).at,
        t("2025-03-01T10:00:00+08:00")
    );
    assert!(step(&x, "auto_renew.attempted", Some("auto_renew.renewal"))
        .text
        .contains("renewed"));
    assert!(
        has(
            &x.advice,
            "Nothing is needed now: the standard plan is valid until 2025-05-01 10:00"
        ),
        "{:#?}",
        x.advice
    );
    // 1000 − 399 − 399 = 202 < 399: the next renewal would fail.
    assert!(
        has(&x.advice, "top up at least 197.00 USD before 2025-05-01 10:00"),
        "{:#?}",
        x.advice
    );
    assert_eq!(x.refusals_total, 0);
    insta::assert_snapshot!("active_auto_renewed", render(&x));
}

#[test]
fn json_output_carries_the_same_facts() {
    let mut ledger = ledger();
    run(&mut ledger, "open.jsonl", OPEN_ACME);
    let x = app_at(&ledger, 1400000001, None);
    assert_eq!(x.status, "trial");
    let json = serde_json::to_value(&x).unwrap();
    assert_eq!(json["subject"]["kind"], "app");
    assert_eq!(json["subject"]["app"], 1400000001);
    assert_eq!(json["steps"][1]["event_type"], "app.created");
    assert_eq!(json["steps"][1]["rule"], "app.create");
    assert!(json["advice"][0].as_str().unwrap().contains("free edition"));
}

#[test]
fn an_unknown_app_or_time_before_it_is_not_found() {
    let mut ledger = ledger();
    run(&mut ledger, "open.jsonl", OPEN_ACME);
    let view = replay::load(ledger.store(), None).unwrap();
    let err = explain_app(ledger.store(), &view, AppId(1400009999), None).unwrap_err();
    assert!(err.to_string().contains("no app 1400009999"), "{err}");
    let early = t("2025-03-01T09:05:00+08:00");
    let view = replay::load(ledger.store(), Some(early)).unwrap();
    let err = explain_app(ledger.store(), &view, AppId(1400000001), Some(early)).unwrap_err();
    assert!(err.to_string().contains("as of 2025-03-01 09:05"), "{err}");
}

/// The CLI wiring: `explain app` and `explain account`, plain and `--json`, with `--at`.
#[test]
fn the_cli_explains_an_app_and_an_account() {
    let bin = env!("CARGO_BIN_EXE_chat-ledger");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger-data");
    let file = dir.path().join("story.jsonl");
    std::fs::write(
        &file,
        r#"{"key":"acme-open","at":"2025-03-01T09:00:00+08:00","actor":"customer","type":"open_account","account":"acme","creator":{"email":"ops@acme.example","sms":"+65-8000-0001"}}
{"key":"acme-topup","at":"2025-03-01T09:05:00+08:00","actor":"customer","type":"add_funds","account":"acme","kind":"cash","amount":"500.00"}
{"key":"acme-app","at":"2025-03-01T09:10:00+08:00","actor":"customer","type":"create_app","account":"acme","app":1400000001,"name":"Acme Chat"}
{"key":"acme-buy","at":"2025-03-01T10:00:00+08:00","actor":"customer","type":"buy_edition","app":1400000001,"edition":"standard","months":1}
{"key":"tick","at":"2025-04-05T00:00:00+08:00","actor":"system","type":"advance_clock"}
"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .arg("--data")
            .arg(&data)
            .args(args)
            .output()
            .expect("run chat-ledger");
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, _, err) = run(&["import", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");

    let (code, out, err) = run(&["explain", "app", "1400000001"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("app 1400000001 \"Acme Chat\" (account acme): suspended\n"),
        "{out}"
    );
    assert!(out.contains("rule expiry.grace, intl-2025@1"), "{out}");
    assert!(out.contains("What the customer can do now:"), "{out}");

    let (code, out, err) = run(&[
        "explain",
        "app",
        "1400000001",
        "--at",
        "2025-03-15T00:00:00+08:00",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(json["status"], "active");
    assert_eq!(json["as_of"], "2025-03-14T16:00:00Z");

    let (code, out, err) = run(&["explain", "account", "acme"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("account acme: in good standing\n"), "{out}");

    let (code, _, err) = run(&["explain", "app", "1400000001", "--at", "2025-03-01T09:05:00+08:00"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no app 1400000001 as of 2025-03-01 09:05"), "{err}");
    let (code, _, err) = run(&["explain", "app", "1400000001", "--at", "yesterday"]);
    assert_eq!(code, Some(65), "{err}");
}
