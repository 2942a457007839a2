//! Plain-language lines for events and views: what `log` prints in a terminal and what
//! the snapshot tests record, so a reviewer reads the story, not JSON.

use chat_ledger_events::{Envelope, EventBody, Instant, KindAmounts, PurchasePurpose, Reminder, RenewalOutcome};
use chat_ledger_projections::{AppStatus, AppView};
use chrono::FixedOffset;

/// The zone a ledger's instants are shown in, from its adopted rulebook.
pub fn zone_of(zone: Option<&str>) -> FixedOffset {
    zone.and_then(|z| z.parse().ok())
        .unwrap_or_else(|| FixedOffset::east_opt(8 * 3600).expect("valid offset"))
}

fn when(t: Instant, zone: FixedOffset) -> String {
    t.display_in(zone)
}

pub fn describe(body: &EventBody, zone: FixedOffset) -> String {
    match body {
        EventBody::RulebookAdopted {
            rulebook,
            seed,
            zone: z,
            currency,
        } => {
            format!(
                "rulebook {rulebook} adopted (seed {seed}, zone {z}, {})",
                currency.as_str()
            )
        }
        EventBody::InputRecorded { input } => format!(
            "input {} {:?} by {}",
            input.command.type_name(),
            input.key.as_str(),
            input.actor
        ),
        EventBody::CommandRejected { command, reason } => format!("{command} refused: {reason}"),
        EventBody::ClockAdvanced { to } => format!("clock advanced to {}", when(*to, zone)),
        EventBody::AccountOpened { account, creator } => {
            format!(
                "account {account} opened (reminders to {} / {})",
                creator.email, creator.sms
            )
        }
        EventBody::FundsAdded { account, kind, amount } => format!("{amount} added to {account} as {}", kind.as_str()),
        EventBody::AccountCharged { account, order, amount, split } => {
            format!("{account} charged {amount} for order {order} ({})", kinds(split))
        }
        EventBody::AccountRefunded { account, orders, amount, split } => {
            format!("{account} refunded {amount} for order(s) {} ({})", orders.join(", "), kinds(split))
        }
        EventBody::BalanceAdjusted { account, kind, amount, reason } => {
            format!("{account} {} adjusted by {amount} by support: {reason}", kind.as_str())
        }
        EventBody::EditionUpgraded { app, order, from, to, amount, remaining_seconds, period_seconds, .. } => format!(
            "app {app} upgraded {from} → {to} for {amount} (order {order}: {remaining_seconds} of {period_seconds} s of the plan left)"
        ),
        EventBody::EditionRefunded { app, orders, refund, days_used, days_total } => format!(
            "plan of app {app} refunded: {refund} for order(s) {} ({days_used} of {days_total} days used, a started day counted)",
            orders.join(", ")
        ),
        EventBody::AutoRenewAttempted { app, outcome, price, available } => match outcome {
            RenewalOutcome::Renewed => format!("auto-renewal of app {app}: renewed for {price}"),
            RenewalOutcome::InsufficientFunds => {
                format!("auto-renewal of app {app} failed: the balance ({available}) was below the price ({price})")
            }
            RenewalOutcome::NotRenewable => format!("auto-renewal of app {app} skipped: this plan cannot be renewed"),
        },
        EventBody::ReminderSent { account, to, reminder, next_at } => {
            let what = match reminder {
                Reminder::ExpiryUpcoming { app, valid_until } => {
                    format!("plan of app {app} expires {}", when(*valid_until, zone))
                }
                Reminder::Expired { app, valid_until } => format!("plan of app {app} expired {}", when(*valid_until, zone)),
                Reminder::Arrears { balance, suspend_at } => {
                    format!("balance {balance}: services stop {} unless topped up", when(*suspend_at, zone))
                }
            };
            let next = next_at.map(|t| format!("; next {}", when(t, zone))).unwrap_or_default();
            format!("reminder to {account} ({} / {}): {what}{next}", to.email, to.sms)
        }
        EventBody::MauCounted { app, month, users, refused, repeats, bill_push_at, late } => {
            let mut text = format!("app {app} {month}: {} user(s) counted, {repeats} repeat login(s)", users.len());
            if !refused.is_empty() {
                text.push_str(&format!(", {} refused over the edition's MAU limit", refused.len()));
            }
            if *late {
                text.push_str(", late: billed as an adjustment");
            }
            if let Some(push) = bill_push_at {
                text.push_str(&format!("; the bill goes out {}", when(*push, zone)));
            }
            text
        }
        EventBody::BillIssued { app, bill, month, lines, total, .. } => {
            let lines: Vec<String> = lines
                .iter()
                .map(|l| match (l.usable_seconds, l.month_seconds) {
                    (Some(usable), Some(month)) => format!(
                        "{} × {} × {usable}/{month} s usable = {} [{}]",
                        l.quantity, l.unit_price, l.amount, l.rule
                    ),
                    _ => format!("{} × {} = {} [{}]", l.quantity, l.unit_price, l.amount, l.rule),
                })
                .collect();
            format!("bill {bill} for app {app}, {month}: {total} ({})", lines.join("; "))
        }
        EventBody::BillCharged { account, bill, amount, balance_after, .. } => {
            format!("{account} charged {amount} for bill {bill}; balance {balance_after}")
        }
        EventBody::ArrearsStarted { account, balance, suspend_at } => {
            format!("{account} in arrears ({balance}); its apps are held {} unless topped up", when(*suspend_at, zone))
        }
        EventBody::AccountSuspended { account } => format!("{account} still in arrears: every app of the account is held"),
        EventBody::ArrearsCleared { account, balance } => format!("{account} out of arrears (balance {balance})"),
        EventBody::AppCreated {
            app,
            account,
            name,
            edition,
        } => {
            format!("app {app} {name:?} created for {account} on {edition}")
        }
        EventBody::EditionPurchased {
            app,
            order,
            edition,
            months,
            amount,
            purpose,
            valid_from,
            valid_until,
            ..
        } => {
            let purpose = match purpose {
                PurchasePurpose::New => "bought",
                PurchasePurpose::Renewal => "renewed",
                PurchasePurpose::Reactivation => "bought to reactivate",
                PurchasePurpose::AutoRenewal => "auto-renewed",
            };
            format!(
                "{edition} {purpose} for app {app}: {months} month(s), {amount}, order {order}, valid {} → {}",
                when(*valid_from, zone),
                when(*valid_until, zone)
            )
        }
        EventBody::AutoRenewSwitched { app, on } => {
            format!("auto-renew {} for app {app}", if *on { "on" } else { "off" })
        }
        EventBody::PlanExpired {
            app,
            valid_until,
            grace_ends_at,
        } => format!(
            "plan of app {app} expired at {}; grace until {}",
            when(*valid_until, zone),
            when(*grace_ends_at, zone)
        ),
        EventBody::HoldPlaced {
            app,
            hold,
            reclamation_at,
        } => match reclamation_at {
            Some(reclaim) => format!(
                "app {app} suspended: {} hold; resources reclaimed at {} unless usable again",
                hold.as_str(),
                when(*reclaim, zone)
            ),
            None => format!("app {app}: {} hold added (already unusable)", hold.as_str()),
        },
        EventBody::HoldLifted { app, hold } => format!("app {app}: {} hold lifted", hold.as_str()),
        EventBody::AppReclaimed { app, unusable_since } => {
            format!(
                "app {app} reclaimed for good (unusable since {})",
                when(*unusable_since, zone)
            )
        }
    }
}

fn kinds(split: &KindAmounts) -> String {
    format!(
        "voucher {}, gift {}, income transfer {}, cash {}",
        split.voucher.amount(),
        split.gift.amount(),
        split.income_transfer.amount(),
        split.cash.amount()
    )
}

/// One line of `log`: position, time, stream and version, type, story, rule.
pub fn log_line(event: &Envelope, zone: FixedOffset) -> String {
    let rule = event
        .decision
        .as_ref()
        .map(|d| format!("  [{} {}]", d.rule, d.rulebook))
        .unwrap_or_default();
    format!(
        "{:>6}  {}  {:<18} v{:<4} {:<19} {}{rule}",
        event.seq,
        when(event.occurred_at, zone),
        event.stream.as_str(),
        event.version,
        event.event.type_name(),
        describe(&event.event, zone)
    )
}

pub fn status_word(status: AppStatus) -> &'static str {
    match status {
        AppStatus::Trial => "trial",
        AppStatus::Active => "active",
        AppStatus::Grace => "grace",
        AppStatus::Suspended => "suspended",
        AppStatus::Reclaimed => "reclaimed",
    }
}

/// The plain `state app` block.
pub fn app_block(app: &AppView, zone: FixedOffset) -> String {
    let mut out = format!("app {} {:?} (account {})\n", app.app, app.name, app.account);
    let mut row = |label: &str, value: String| out.push_str(&format!("  {label:<16}{value}\n"));
    row("status", status_word(app.status).to_owned());
    row("edition", app.edition.to_string());
    if let Some(plan) = &app.plan {
        row(
            "plan",
            format!("order(s) {} at {}/month", plan.orders.join(", "), plan.monthly_price),
        );
        row(
            "valid",
            format!("{} → {}", when(plan.valid_from, zone), when(plan.valid_until, zone)),
        );
    }
    if let Some(expired) = &app.expired {
        row("grace ends", when(expired.grace_ends_at, zone));
    }
    let holds: Vec<String> = app
        .holds
        .iter()
        .map(|(kind, hold)| format!("{} since {}", kind.as_str(), when(hold.since, zone)))
        .collect();
    row(
        "holds",
        if holds.is_empty() {
            "none".to_owned()
        } else {
            holds.join("; ")
        },
    );
    if let Some(since) = app.unusable_since {
        row("unusable since", when(since, zone));
    }
    if let Some(reclamation) = &app.reclamation {
        row(
            "reclamation",
            format!("{} unless usable again before", when(reclamation.at, zone)),
        );
    }
    if let Some(at) = app.reclaimed_at {
        row("reclaimed", when(at, zone));
    }
    row("auto-renew", if app.auto_renew { "on" } else { "off" }.to_owned());
    out
}
