use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use chat_ledger_events::{
    AccountId, AppId, Contact, Currency, Envelope, EventBody, Hash, HoldKind, Instant, Money, MoneyKind, StreamId,
};

use crate::app::{AppView, ExpiredView, HoldView, PlanView, ReclamationView};
use crate::deadline::Deadline;

/// Version of the projection code. Raise it whenever `apply` or a view's shape changes:
/// stored projection snapshots of another version are ignored and rebuilt by replay.
pub const PROJECTION_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulebookView {
    /// `id@version`, e.g. `intl-2025@1`.
    pub rulebook: String,
    pub seed: String,
    /// The zone instants are shown in, e.g. `+08:00`.
    pub zone: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balances {
    pub cash: Money,
    pub income_transfer: Money,
    pub gift: Money,
}

impl Balances {
    pub fn zero(currency: Currency) -> Balances {
        Balances {
            cash: Money::zero(currency),
            income_transfer: Money::zero(currency),
            gift: Money::zero(currency),
        }
    }
    pub fn get(&self, kind: MoneyKind) -> Money {
        match kind {
            MoneyKind::Cash => self.cash,
            MoneyKind::IncomeTransfer => self.income_transfer,
            MoneyKind::Gift => self.gift,
        }
    }
    fn get_mut(&mut self, kind: MoneyKind) -> &mut Money {
        match kind {
            MoneyKind::Cash => &mut self.cash,
            MoneyKind::IncomeTransfer => &mut self.income_transfer,
            MoneyKind::Gift => &mut self.gift,
        }
    }
    /// Everything the account can spend.
    pub fn available(&self) -> Money {
        MoneyKind::ALL
            .iter()
            .fold(Money::zero(self.cash.currency()), |sum, &kind| {
                sum.checked_add(self.get(kind)).expect("one currency")
            })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    pub account: AccountId,
    pub creator: Contact,
    pub opened_at: Instant,
    pub balances: Balances,
    pub apps: BTreeSet<AppId>,
}

/// Every read model, folded from the log in order. Also the state the rules decide on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LedgerView {
    /// Position and hash of the last event folded in.
    pub seq: u64,
    pub head_hash: Hash,
    /// Business time reached: the latest `occurred_at` folded in. Never goes back.
    pub clock: Option<Instant>,
    pub rulebook: Option<RulebookView>,
    pub currency: Option<Currency>,
    /// Current version of every stream.
    pub streams: BTreeMap<StreamId, u64>,
    pub accounts: BTreeMap<AccountId, AccountView>,
    pub apps: BTreeMap<AppId, AppView>,
    /// Every pending expiry, grace end and reclamation, in firing order.
    pub deadlines: BTreeSet<Deadline>,
    pub inputs_recorded: u64,
    pub commands_rejected: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("event {seq} ({event_type}): {reason}")]
pub struct ProjectionError {
    pub seq: u64,
    pub event_type: &'static str,
    pub reason: String,
}

impl LedgerView {
    pub fn stream_version(&self, stream: &StreamId) -> u64 {
        self.streams.get(stream).copied().unwrap_or(0)
    }

    /// The earliest pending deadline, if any.
    pub fn next_deadline(&self) -> Option<&Deadline> {
        self.deadlines.first()
    }

    /// Folds one event in. `hash` is the hash of its stored bytes. An error means the
    /// log is inconsistent (an event that cannot follow what came before): `verify`
    /// reports it; the writer treats it as a bug.
    pub fn apply(&mut self, event: &Envelope, hash: Hash) -> Result<(), ProjectionError> {
        let fail = |reason: String| ProjectionError {
            seq: event.seq,
            event_type: event.event.type_name(),
            reason,
        };
        if event.seq != self.seq + 1 {
            return Err(fail(format!(
                "follows position {}, expected position {}",
                self.seq,
                self.seq + 1
            )));
        }
        let version = self.stream_version(&event.stream);
        if event.version != version + 1 {
            return Err(fail(format!(
                "stream {} is at version {version}; this event claims version {}",
                event.stream, event.version
            )));
        }
        if let Some(clock) = self.clock {
            if event.occurred_at < clock {
                return Err(fail(format!(
                    "occurred at {} before the ledger's clock {clock}",
                    event.occurred_at
                )));
            }
        }
        self.apply_body(event).map_err(fail)?;
        self.seq = event.seq;
        self.head_hash = hash;
        self.clock = Some(event.occurred_at);
        self.streams.insert(event.stream.clone(), event.version);
        Ok(())
    }

    fn currency(&self) -> Result<Currency, String> {
        self.currency.ok_or_else(|| "no rulebook adopted before it".to_owned())
    }

    fn account_mut(&mut self, account: &AccountId) -> Result<&mut AccountView, String> {
        self.accounts
            .get_mut(account)
            .ok_or_else(|| format!("unknown account {account}"))
    }

    fn apply_body(&mut self, event: &Envelope) -> Result<(), String> {
        let at = event.occurred_at;
        match &event.event {
            EventBody::RulebookAdopted {
                rulebook,
                seed,
                zone,
                currency,
            } => {
                if self.rulebook.is_some() {
                    return Err("a rulebook was already adopted".into());
                }
                self.rulebook = Some(RulebookView {
                    rulebook: rulebook.clone(),
                    seed: seed.clone(),
                    zone: zone.clone(),
                });
                self.currency = Some(*currency);
            }
            EventBody::InputRecorded { .. } => self.inputs_recorded += 1,
            EventBody::CommandRejected { .. } => self.commands_rejected += 1,
            EventBody::ClockAdvanced { to } => {
                if *to != at {
                    return Err(format!("advances to {to} but occurred at {at}"));
                }
            }
            EventBody::AccountOpened { account, creator } => {
                let currency = self.currency()?;
                if self.accounts.contains_key(account) {
                    return Err(format!("account {account} is already open"));
                }
                self.accounts.insert(
                    account.clone(),
                    AccountView {
                        account: account.clone(),
                        creator: creator.clone(),
                        opened_at: at,
                        balances: Balances::zero(currency),
                        apps: BTreeSet::new(),
                    },
                );
            }
            EventBody::FundsAdded { account, kind, amount } => {
                let balance = self.account_mut(account)?.balances.get_mut(*kind);
                *balance = balance
                    .checked_add(*amount)
                    .ok_or("currency differs from the balance's")?;
            }
            EventBody::AccountCharged {
                account, amount, split, ..
            } => {
                let balances = &mut self.account_mut(account)?.balances;
                let parts = [
                    (MoneyKind::Gift, split.gift),
                    (MoneyKind::IncomeTransfer, split.income_transfer),
                    (MoneyKind::Cash, split.cash),
                ];
                let total = parts
                    .iter()
                    .try_fold(Money::zero(amount.currency()), |sum, (_, part)| sum.checked_add(*part));
                if total != Some(*amount) {
                    return Err(format!("split does not add up to {amount}"));
                }
                for (kind, part) in parts {
                    let balance = balances.get_mut(kind);
                    *balance = balance.checked_sub(part).ok_or("currency differs from the balance's")?;
                }
            }
            EventBody::AppCreated {
                app,
                account,
                name,
                edition,
            } => {
                if self.apps.contains_key(app) {
                    return Err(format!("app {app} already exists"));
                }
                self.account_mut(account)?.apps.insert(*app);
                self.apps.insert(
                    *app,
                    AppView::new(*app, account.clone(), name.clone(), edition.clone(), at),
                );
            }
            EventBody::EditionPurchased {
                app,
                order,
                edition,
                monthly_price,
                valid_from,
                valid_until,
                ..
            } => {
                self.change_app(*app, |view| {
                    view.edition = edition.clone();
                    view.orders += 1;
                    view.plan = Some(PlanView {
                        order: order.clone(),
                        edition: edition.clone(),
                        monthly_price: *monthly_price,
                        valid_from: *valid_from,
                        valid_until: *valid_until,
                        cause: event.id,
                    });
                    view.expired = None;
                    Ok(())
                })?;
            }
            EventBody::AutoRenewSwitched { app, on } => self.change_app(*app, |view| {
                view.auto_renew = *on;
                Ok(())
            })?,
            EventBody::PlanExpired { app, grace_ends_at, .. } => self.change_app(*app, |view| {
                if view.plan.is_none() || view.expired.is_some() {
                    return Err("no valid plan to expire".into());
                }
                view.expired = Some(ExpiredView {
                    grace_ends_at: *grace_ends_at,
                    cause: event.id,
                });
                Ok(())
            })?,
            EventBody::HoldPlaced {
                app,
                hold,
                reclamation_at,
            } => self.change_app(*app, |view| {
                if view.holds.contains_key(hold) {
                    return Err(format!("hold {} is already placed", hold.as_str()));
                }
                match (view.is_usable(), reclamation_at) {
                    (true, Some(reclaim)) => {
                        view.unusable_since = Some(at);
                        view.reclamation = Some(ReclamationView {
                            at: *reclaim,
                            cause: event.id,
                        });
                    }
                    (false, None) => {}
                    (true, None) => return Err("makes the app unusable but sets no reclamation instant".into()),
                    (false, Some(_)) => return Err("sets a reclamation instant on an app already unusable".into()),
                }
                view.holds.insert(
                    *hold,
                    HoldView {
                        since: at,
                        cause: event.id,
                    },
                );
                Ok(())
            })?,
            EventBody::HoldLifted { app, hold } => self.change_app(*app, |view| {
                if view.holds.remove(hold).is_none() {
                    return Err(format!("hold {} is not placed", hold.as_str()));
                }
                if *hold == HoldKind::Expiry {
                    view.expired = None;
                }
                if view.holds.is_empty() {
                    view.unusable_since = None;
                    view.reclamation = None;
                }
                Ok(())
            })?,
            EventBody::AppReclaimed { app, .. } => self.change_app(*app, |view| {
                if view.is_usable() {
                    return Err("reclaims a usable app".into());
                }
                view.reclaimed_at = Some(at);
                view.reclamation = None;
                Ok(())
            })?,
        }
        Ok(())
    }

    /// Changes one app and keeps the deadline index equal to what the app implies.
    fn change_app(
        &mut self,
        app: AppId,
        change: impl FnOnce(&mut AppView) -> Result<(), String>,
    ) -> Result<(), String> {
        let view = self.apps.get_mut(&app).ok_or_else(|| format!("unknown app {app}"))?;
        if view.reclaimed_at.is_some() {
            return Err(format!("app {app} was reclaimed"));
        }
        let before = view.deadlines();
        change(view)?;
        view.status = view.derive_status();
        let after = view.deadlines();
        for deadline in &before {
            self.deadlines.remove(deadline);
        }
        self.deadlines.extend(after);
        Ok(())
    }
}
