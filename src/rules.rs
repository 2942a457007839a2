//! The decider: pure functions from an input (or a due deadline) and the current state
//! to the events that follow, or to a refusal. No IO, no clock, no randomness: time comes
//! from the input or the deadline, every parameter from the rulebook.

use chat_ledger_events::{
    round_cents, AppId, Command, EventBody, HoldKind, Input, Money, MoneyKind, PaymentSplit, PurchasePurpose, StreamId,
};
use chat_ledger_projections::{AppView, Deadline, DeadlineKind, LedgerView};
use rust_decimal::Decimal;

use crate::rulebook::{rule, Rulebook};

/// One event the rules decided, with the rule that decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fact {
    pub stream: StreamId,
    pub rule: &'static str,
    pub body: EventBody,
}

/// Why the rules refused a command. Recorded as `command.rejected`, never silently dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub rule: &'static str,
    pub reason: String,
}

fn refuse<T>(rule: &'static str, reason: String) -> Result<T, Refusal> {
    Err(Refusal { rule, reason })
}

fn fact(stream: StreamId, rule: &'static str, body: EventBody) -> Fact {
    Fact { stream, rule, body }
}

/// Decides an input against the state. References (accounts and apps named) are checked
/// by the importer before anything is appended; here they are refused all the same, so
/// any other caller gets a recorded refusal rather than a panic.
pub fn decide(input: &Input, state: &LedgerView, book: &Rulebook) -> Result<Vec<Fact>, Refusal> {
    let at = input.at;
    match &input.command {
        Command::OpenAccount { account, creator } => {
            if state.accounts.contains_key(account) {
                return refuse(rule::ACCOUNT_OPEN, format!("account {account} is already open"));
            }
            Ok(vec![fact(
                StreamId::account(account),
                rule::ACCOUNT_OPEN,
                EventBody::AccountOpened {
                    account: account.clone(),
                    creator: creator.clone(),
                },
            )])
        }
        Command::AddFunds { account, kind, amount } => {
            if !state.accounts.contains_key(account) {
                return refuse(rule::FUNDS_ADD, format!("account {account} is not open"));
            }
            if amount.0.is_zero() {
                return refuse(rule::FUNDS_ADD, "a top-up of 0 adds nothing".to_owned());
            }
            Ok(vec![fact(
                StreamId::account(account),
                rule::FUNDS_ADD,
                EventBody::FundsAdded {
                    account: account.clone(),
                    kind: *kind,
                    amount: Money::new(amount.0, book.currency),
                },
            )])
        }
        Command::CreateApp { account, app, name } => {
            let Some(owner) = state.accounts.get(account) else {
                return refuse(rule::APP_CREATE, format!("account {account} is not open"));
            };
            if state.apps.contains_key(app) {
                return refuse(rule::APP_CREATE, format!("SDKAppID {app} already exists"));
            }
            let max = book.app_limit.max_apps_per_account;
            let live = owner
                .apps
                .iter()
                .filter(|a| state.apps.get(a).is_some_and(|v| v.reclaimed_at.is_none()))
                .count();
            if live >= max as usize {
                return refuse(
                    rule::APP_LIMIT,
                    format!("account {account} already has {live} apps, the most one account may have ({max})"),
                );
            }
            Ok(vec![fact(
                StreamId::app(*app),
                rule::APP_CREATE,
                EventBody::AppCreated {
                    app: *app,
                    account: account.clone(),
                    name: name.clone(),
                    edition: book.catalog.free_edition.clone(),
                },
            )])
        }
        Command::BuyEdition {
            app,
            edition,
            months,
            contract_monthly_price,
        } => {
            let view = known_app(state, *app)?;
            let Some(entry) = book.edition(edition).filter(|e| e.purchasable) else {
                return refuse(
                    rule::EDITION_CATALOG,
                    format!("edition {edition} cannot be bought under {}", book.label()),
                );
            };
            let monthly = match (entry.monthly_price, contract_monthly_price) {
                (Some(list), None) => list.0,
                (None, Some(contract)) => contract.0,
                (Some(_), Some(_)) => {
                    return refuse(
                        rule::EDITION_CATALOG,
                        format!("edition {edition} has a list price; drop contract_monthly_price"),
                    )
                }
                (None, None) => {
                    return refuse(
                        rule::EDITION_CATALOG,
                        format!("edition {edition} is sold at a contract price: give contract_monthly_price"),
                    )
                }
            };
            if !(book.validity.months_min..=book.validity.months_max).contains(months) {
                return refuse(
                    rule::PLAN_VALIDITY,
                    format!(
                        "{months} months: a plan is bought for {} to {} months",
                        book.validity.months_min, book.validity.months_max
                    ),
                );
            }
            let (purpose, valid_from, purpose_rule) = if view.holds.contains_key(&HoldKind::Expiry) {
                (PurchasePurpose::Reactivation, at, rule::PLAN_REACTIVATION)
            } else {
                match &view.plan {
                    None => (PurchasePurpose::New, at, rule::PLAN_PURCHASE),
                    Some(plan) if &plan.edition == edition => {
                        (PurchasePurpose::Renewal, plan.valid_until, rule::PLAN_RENEWAL)
                    }
                    Some(plan) => {
                        return refuse(
                            rule::EDITION_CHANGE,
                            format!(
                                "app {app} has a {} plan until {}; changing edition while it runs is an upgrade, \
                                 which this build does not sell yet: renew {} or buy {edition} after suspension",
                                plan.edition,
                                plan.valid_until.display_in(book.zone),
                                plan.edition
                            ),
                        )
                    }
                }
            };
            let amount = round_cents(monthly * Decimal::from(*months));
            let account = state.accounts.get(&view.account).expect("an app's account is open");
            let available = account.balances.available();
            if available.amount() < amount {
                return refuse(
                    rule::PAYMENT_BALANCE,
                    format!(
                        "the balance ({available}) is below the price ({} {}) of {months} month(s) of {edition}; add funds and buy again",
                        Money::new(amount, book.currency).amount(),
                        book.currency.as_str()
                    ),
                );
            }
            let order = format!("{app}-{}", view.orders + 1);
            let mut facts = vec![
                fact(
                    StreamId::account(&view.account),
                    rule::PAYMENT_ORDER,
                    EventBody::AccountCharged {
                        account: view.account.clone(),
                        order: order.clone(),
                        amount: Money::new(amount, book.currency),
                        split: split_payment(amount, account, book),
                    },
                ),
                fact(
                    StreamId::app(*app),
                    purpose_rule,
                    EventBody::EditionPurchased {
                        app: *app,
                        order,
                        edition: edition.clone(),
                        months: *months,
                        monthly_price: Money::new(monthly, book.currency),
                        amount: Money::new(amount, book.currency),
                        purpose,
                        valid_from,
                        valid_until: book.validity_end(valid_from, *months),
                    },
                ),
            ];
            if purpose == PurchasePurpose::Reactivation {
                facts.push(fact(
                    StreamId::app(*app),
                    rule::PLAN_REACTIVATION,
                    EventBody::HoldLifted {
                        app: *app,
                        hold: HoldKind::Expiry,
                    },
                ));
            }
            Ok(facts)
        }
        Command::SetAutoRenew { app, on } => {
            known_app(state, *app)?;
            Ok(vec![fact(
                StreamId::app(*app),
                rule::AUTO_RENEW_SWITCH,
                EventBody::AutoRenewSwitched { app: *app, on: *on },
            )])
        }
        Command::AdvanceClock {} => Ok(vec![fact(
            StreamId::named(StreamId::CLOCK),
            rule::CLOCK_ADVANCE,
            EventBody::ClockAdvanced { to: at },
        )]),
    }
}

fn known_app(state: &LedgerView, app: AppId) -> Result<&AppView, Refusal> {
    let Some(view) = state.apps.get(&app) else {
        return refuse(rule::APP_CREATE, format!("SDKAppID {app} does not exist"));
    };
    if let Some(when) = view.reclaimed_at {
        return refuse(
            rule::APP_RECLAIMED,
            format!("app {app}'s resources were reclaimed at {when}; create a new app"),
        );
    }
    Ok(view)
}

/// Rule `payment.order`: takes `amount` from the account's money kinds in the
/// rulebook's order. The caller has checked the total suffices.
fn split_payment(amount: Decimal, account: &chat_ledger_projections::AccountView, book: &Rulebook) -> PaymentSplit {
    let mut left = amount;
    let mut taken = [Decimal::ZERO; 3];
    for kind in &book.payment_order.order {
        let have = account.balances.get(*kind).amount().max(Decimal::ZERO);
        let take = have.min(left);
        taken[MoneyKind::ALL
            .iter()
            .position(|k| k == kind)
            .expect("every kind is listed")] = take;
        left -= take;
    }
    assert!(left.is_zero(), "split_payment called without enough balance");
    let money = |kind: MoneyKind| {
        Money::new(
            taken[MoneyKind::ALL.iter().position(|k| *k == kind).expect("listed")],
            book.currency,
        )
    };
    PaymentSplit {
        gift: money(MoneyKind::Gift),
        income_transfer: money(MoneyKind::IncomeTransfer),
        cash: money(MoneyKind::Cash),
    }
}

/// Decides what a due deadline does. The deadline index is kept equal to the apps'
/// state by the projection, so a due deadline always has something to do.
pub fn decide_deadline(deadline: &Deadline, state: &LedgerView, book: &Rulebook) -> Vec<Fact> {
    let view = state.apps.get(&deadline.app).expect("deadlines belong to known apps");
    let stream = deadline.stream.clone();
    let app = deadline.app;
    match deadline.kind {
        DeadlineKind::Expiry => vec![fact(
            stream,
            rule::PLAN_EXPIRY,
            EventBody::PlanExpired {
                app,
                valid_until: deadline.at,
                grace_ends_at: book.grace_end(deadline.at),
            },
        )],
        DeadlineKind::Suspension => vec![fact(
            stream,
            rule::EXPIRY_GRACE,
            EventBody::HoldPlaced {
                app,
                hold: HoldKind::Expiry,
                reclamation_at: view.is_usable().then(|| book.reclamation_at(deadline.at)),
            },
        )],
        DeadlineKind::Reclamation => vec![fact(
            stream,
            rule::APP_RECLAMATION,
            EventBody::AppReclaimed {
                app,
                unusable_since: view.unusable_since.expect("a reclamation follows unusability"),
            },
        )],
    }
}
