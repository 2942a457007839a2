//! The `chat-ledger` command line. Thin: parses arguments, opens the store, calls the
//! library, prints. Exit codes: 0 ok; 1 failure (verify found damage, storage); 2 usage;
//! 65 bad input, a key reused for another payload included (nothing was appended).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chat_ledger::describe::{app_block, log_line, status_word, zone_of};
use chat_ledger::explain;
use chat_ledger::import::{self, LedgerCheckError, CHUNK_INPUTS_DEFAULT};
use chat_ledger::ledger::{KeySource, Ledger, LedgerError, OsKeys, Outcome, SeededKeys};
use chat_ledger::replay;
use chat_ledger::rulebook::Rulebook;
use chat_ledger::store::{EventStore, SledStore, READ_PAGE_EVENTS};
use chat_ledger::verify::{self, head_label, ExpectedHead};
use chat_ledger_events::input::RESERVED_KEY_PREFIXES;
use chat_ledger_events::{decode, AccountId, Actor, AppId, Command, Input, Instant, Key, StreamId};
use chat_ledger_projections::LedgerView;
use clap::{Parser, Subcommand};

const EXIT_FAILURE: u8 = 1;
const EXIT_BAD_INPUT: u8 = 65;

#[derive(Parser)]
#[command(
    name = "chat-ledger",
    version,
    about = "Event-sourced subscription ledger for a cloud Chat service"
)]
struct Cli {
    /// Folder of the embedded store (sled); created on first use.
    #[arg(long, global = true, env = "CHAT_LEDGER_DATA", default_value = "./ledger-data")]
    data: PathBuf,
    /// Rulebook for new decisions: a bundled id (intl-2025) or a rulebook JSON file.
    #[arg(long, global = true, env = "CHAT_LEDGER_RULEBOOK", default_value = "intl-2025")]
    rulebook: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Ingest a bulk login file (CSV `sdkappid,user,logged_in_at`, or JSON Lines) into the MAU.
    Logins {
        file: PathBuf,
        /// Rows per acknowledged (flushed) batch.
        #[arg(long, default_value_t = chat_ledger::logins::CHUNK_ROWS_DEFAULT)]
        chunk: usize,
    },
    /// An app's MAU for a month; with --user, whether and by which login that user was counted.
    Mau {
        sdk_app_id: u64,
        /// The local natural month, YYYY-MM.
        #[arg(long)]
        month: String,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Append a timeline of inputs (JSON Lines), or with --events an exported log.
    Import {
        file: PathBuf,
        /// The file is an export (`chat-ledger export`): restore its events verbatim.
        #[arg(long)]
        events: bool,
        /// Inputs per acknowledged (flushed) batch.
        #[arg(long, default_value_t = CHUNK_INPUTS_DEFAULT)]
        chunk: usize,
    },
    /// Let business time pass: every deadline up to --to fires.
    Advance {
        /// RFC 3339 with an offset, e.g. 2025-07-02T00:00:00+08:00.
        #[arg(long)]
        to: String,
        /// Idempotency key; default `advance/<to>`.
        #[arg(long)]
        key: Option<String>,
        /// customer, support:<name> or system.
        #[arg(long, default_value = "system")]
        actor: String,
    },
    /// Current (or past, with --as-of) state of an app, an account or the deadlines.
    State {
        #[command(subcommand)]
        what: StateCmd,
    },
    /// Why an app or an account is in its state: the causation chain behind each hold,
    /// with dates, rules and amounts, and what the customer can do now.
    Explain {
        #[command(subcommand)]
        what: ExplainCmd,
    },
    /// The events, in order.
    Log {
        /// Only this stream: account:<id>, app:<SDKAppID>, inputs, clock or ledger.
        #[arg(long)]
        stream: Option<String>,
        /// The stored canonical bytes, one event per line.
        #[arg(long)]
        json: bool,
    },
    /// Check that the log is intact (hash chain, positions) and consistent (replayable).
    Verify {
        /// The head an auditor kept, as printed by verify: SEQ:HASH (or HASH).
        #[arg(long)]
        expect_head: Option<String>,
        /// Verify an exported file instead of the store.
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Write every event's stored bytes, one per line, to stdout.
    Export,
}

#[derive(Subcommand)]
enum StateCmd {
    App {
        sdk_app_id: u64,
        #[arg(long)]
        as_of: Option<String>,
        #[arg(long)]
        json: bool,
    },
    Account {
        id: String,
        #[arg(long)]
        as_of: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Postpaid bills: lines, totals, status (pushed, paid, overdue).
    Bills {
        /// Only this account's bills.
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        as_of: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Every projection at once (apps, accounts, deadlines, stream versions).
    All {
        #[arg(long)]
        as_of: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Every pending expiry, grace end and reclamation, in firing order.
    Deadlines {
        #[arg(long)]
        as_of: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ExplainCmd {
    App {
        sdk_app_id: u64,
        /// As of this business time (RFC 3339 with an offset): the log is replayed up to it.
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        json: bool,
    },
    Account {
        id: String,
        /// As of this business time (RFC 3339 with an offset): the log is replayed up to it.
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// An error for the user: what went wrong and the exit code it deserves.
struct Failure {
    code: u8,
    message: String,
}

fn failure(message: impl ToString) -> Failure {
    Failure {
        code: EXIT_FAILURE,
        message: message.to_string(),
    }
}

fn bad_input(message: impl ToString) -> Failure {
    Failure {
        code: EXIT_BAD_INPUT,
        message: message.to_string(),
    }
}

impl From<LedgerError> for Failure {
    fn from(e: LedgerError) -> Failure {
        failure(e)
    }
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Rust ignores SIGPIPE, so `chat-ledger state bills | head` would panic in `println!`
/// once `head` exits. Like other command-line tools, stop quietly instead: the reader
/// has what it wanted. Every write is acknowledged before it is reported, so a stop at a
/// print loses nothing (at worst a projection snapshot, rebuilt by the next replay).
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn open_store(data: &Path) -> Result<SledStore, Failure> {
    SledStore::open(data).map_err(|e| {
        failure(format!(
            "cannot open the ledger in {}: {e} (is another chat-ledger using it?)",
            data.display()
        ))
    })
}

fn load_rulebook(name: &str) -> Result<Rulebook, Failure> {
    if name == "intl-2025" {
        return Ok(Rulebook::intl_2025());
    }
    let path = Path::new(name);
    if !path.exists() {
        return Err(failure(format!(
            "rulebook {name:?} is neither a bundled rulebook (intl-2025) nor a file"
        )));
    }
    Rulebook::load(path).map_err(|e| failure(format!("rulebook: {e}")))
}

fn open_ledger(cli: &Cli) -> Result<Ledger, Failure> {
    let store = open_store(&cli.data)?;
    let book = load_rulebook(&cli.rulebook)?;
    // Reproducible digests for tests and demos only: a known seed lets anyone recompute
    // every user digest, which defeats crypto-shredding.
    let keys: Box<dyn KeySource> = match std::env::var("CHAT_LEDGER_KEY_SEED") {
        Ok(seed) => Box::new(SeededKeys(seed)),
        Err(_) => Box::new(OsKeys),
    };
    Ledger::open_with_keys(Box::new(store), book, keys).map_err(|e| match e {
        LedgerError::RulebookMismatch { .. } => failure(format!("{e}: pass the ledger's rulebook with --rulebook")),
        other => failure(other),
    })
}

fn ingest_logins(cli: &Cli, file: &Path, chunk: usize) -> Result<(), Failure> {
    if chunk == 0 {
        return Err(bad_input("--chunk must be at least 1"));
    }
    let logins = chat_ledger::logins::read(file).map_err(bad_input)?;
    let mut ledger = open_ledger(cli)?;
    for row in &logins.rows {
        if !ledger.state().apps.contains_key(&row.app) {
            return Err(bad_input(format!(
                "{}:{}: unknown app {}",
                file.display(),
                row.line,
                row.app
            )));
        }
    }
    // A progress bar on a terminal; indicatif draws nothing when stderr is not one.
    let bar = indicatif::ProgressBar::new(logins.rows.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} logins {per_sec} eta {eta}")
            .expect("valid template"),
    );
    let mut done_rows = 0;
    let rows_by_line: std::collections::BTreeMap<u64, usize> =
        logins.rows.iter().enumerate().map(|(i, r)| (r.line, i + 1)).collect();
    let summary = ledger
        .ingest_logins(&logins.source, &logins.digest, &logins.rows, chunk, |seq, line| {
            let now = rows_by_line[&line];
            bar.inc((now - done_rows) as u64);
            done_rows = now;
            bar.println(format!("acknowledged: events through {seq} (row line {line})"));
        })
        .map_err(failure)?;
    bar.finish_and_clear();
    ledger.save_snapshot()?;
    println!(
        "ingested {}: {} row(s) ({} already recorded), {} user(s) counted, {} refused over the edition's MAU limit, {} refused (app suspended); {} event(s) appended; head {}",
        file.display(),
        summary.rows,
        summary.rows_already_recorded,
        summary.users_counted,
        summary.refused_over_limit,
        summary.refused_suspended,
        summary.events_appended,
        head_label(ledger.head())
    );
    Ok(())
}

fn mau(data: &Path, app: AppId, month: &str, user: Option<&str>, json: bool) -> Result<(), Failure> {
    let store = open_store(data)?;
    // The app alone, and the month back from the settled history if it is there.
    let mut view = replay::load_for_app(&store, app, None).map_err(failure)?;
    replay::restore_month(&store, &mut view, app, month).map_err(failure)?;
    let app_view = view.apps.get(&app).ok_or_else(|| failure(format!("no app {app}")))?;
    let usage = app_view.usage.get(month);
    let (count, refused, repeats) = usage.map_or((0, 0, 0), |u| (u.users.len(), u.refused, u.repeats));
    let mut found: Option<serde_json::Value> = None;
    let mut answer = String::new();
    if let Some(user) = user {
        match store.app_key(app).map_err(failure)? {
            None => {
                answer = format!(
                    "user {user:?}: cannot tell — app {app} has no digest key (reclaimed: its user data was destroyed)"
                )
            }
            Some(key) => {
                let digest = chat_ledger::rules::digest_hex(chat_ledger::ledger::user_digest(&key, user));
                for stored in store.read_stream(&StreamId::app(app), 1, usize::MAX).map_err(failure)? {
                    let event = decode(&stored.bytes).map_err(failure)?;
                    if let chat_ledger_events::EventBody::MauCounted { month: m, refused, .. } = &event.event {
                        if let Some(hit) = refused.iter().filter(|_| m == month).find(|u| u.user == digest) {
                            answer = format!(
                                "user {user:?} logged in during {month} (login {}, event {}) but was refused: over the edition's MAU limit",
                                hit.login, stored.seq
                            );
                        }
                    }
                    if let chat_ledger_events::EventBody::MauCounted { month: m, users, .. } = &event.event {
                        if let Some(hit) = users.iter().filter(|_| m == month).find(|u| u.user == digest) {
                            found = Some(serde_json::json!({
                                "event": stored.seq, "login": hit.login, "logged_in_at": hit.logged_in_at.to_string(), "digest": digest,
                            }));
                            answer = format!(
                                "user {user:?} was counted in {month} by login {} at {} (event {})",
                                hit.login, hit.logged_in_at, stored.seq
                            );
                        }
                    }
                }
                if found.is_none() && answer.is_empty() {
                    answer = format!("user {user:?} was not counted in {month} for app {app}");
                }
            }
        }
    }
    if json {
        let out = serde_json::json!({
            "app": app.0, "month": month, "mau": count, "refused": refused, "repeats": repeats,
            "billed_mau": usage.and_then(|u| u.billed_mau), "user": found,
        });
        println!("{out}");
    } else {
        println!("app {app}, {month}: {count} MAU, {refused} login(s) refused over the edition's limit, {repeats} repeat login(s)");
        if let Some(billed) = usage.and_then(|u| u.billed_mau) {
            println!("  billed with {billed} MAU");
        }
        if !answer.is_empty() {
            println!("  {answer}");
        }
    }
    Ok(())
}

fn parse_instant(text: &str, flag: &str) -> Result<Instant, Failure> {
    Instant::parse(text).map_err(|e| bad_input(format!("{flag}: {e}")))
}

fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.command {
        Cmd::Import { file, events: true, .. } => restore(&cli.data, file),
        Cmd::Import {
            file,
            events: false,
            chunk,
        } => import_inputs(&cli, file, *chunk),
        Cmd::Advance { to, key, actor } => advance(&cli, to, key.as_deref(), actor),
        Cmd::Logins { file, chunk } => ingest_logins(&cli, file, *chunk),
        Cmd::Mau {
            sdk_app_id,
            month,
            user,
            json,
        } => mau(&cli.data, AppId(*sdk_app_id), month, user.as_deref(), *json),
        Cmd::State { what } => state(&cli.data, what),
        Cmd::Explain { what } => explain_cmd(&cli.data, what),
        Cmd::Log { stream, json } => log(&cli.data, stream.as_deref(), *json),
        Cmd::Verify {
            expect_head,
            file,
            json,
        } => verify_cmd(&cli.data, expect_head.as_deref(), file.as_deref(), *json),
        Cmd::Export => {
            let store = open_store(&cli.data)?;
            let mut out = BufWriter::new(std::io::stdout().lock());
            verify::export(&store, &mut out).map_err(failure)?;
            out.flush().map_err(failure)
        }
    }
}

fn import_inputs(cli: &Cli, file: &Path, chunk: usize) -> Result<(), Failure> {
    if chunk == 0 {
        return Err(bad_input("--chunk must be at least 1"));
    }
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| bad_input(format!("{name}: cannot read: {e}")))?;
    let mut ledger = open_ledger(cli)?;
    let mut stdout = std::io::stdout().lock();
    let summary = import::import(&mut ledger, &name, &text, chunk, |ack| {
        // Printed only after the batch is flushed: a line here is a promise.
        let _ = writeln!(
            stdout,
            "acknowledged: events through {} (input line {})",
            ack.seq, ack.line
        );
        let _ = stdout.flush();
    })
    .map_err(|e| match e {
        LedgerCheckError::Bad(bad) => bad_input(bad),
        LedgerCheckError::Ledger(e) => failure(e),
    })?;
    ledger.save_snapshot()?;
    println!(
        "imported {name}: {} input(s) recorded ({} refused by the rules), {} already recorded; {} event(s) appended; head {}",
        summary.lines_recorded,
        summary.rejected.len(),
        summary.lines_already_recorded,
        summary.events_appended,
        head_label(ledger.head())
    );
    if summary.logins.rows > 0 {
        println!(
            "  logins: {} row(s) ({} already recorded), {} user(s) counted, {} refused over the MAU limit, {} refused (app suspended)",
            summary.logins.rows,
            summary.logins.rows_already_recorded,
            summary.logins.users_counted,
            summary.logins.refused_over_limit,
            summary.logins.refused_suspended
        );
    }
    for (line, key, rule, reason) in &summary.rejected {
        println!("  refused: line {line} (key {}) by rule {rule}: {reason}", key.as_str());
    }
    print_apps(ledger.state());
    Ok(())
}

fn print_apps(view: &LedgerView) {
    const APPS_LISTED_MAX: usize = 20;
    let zone = zone_of(view.rulebook.as_ref().map(|r| r.zone.as_str()));
    if view.apps.len() > APPS_LISTED_MAX {
        println!("{} apps; see `chat-ledger state app <SDKAppID>`", view.apps.len());
        return;
    }
    if let Some(clock) = view.clock {
        println!("ledger clock: {}", clock.display_in(zone));
    }
    for app in view.apps.values() {
        let until = app
            .plan
            .as_ref()
            .map(|p| p.valid_until.display_in(zone))
            .unwrap_or_else(|| "-".into());
        let reclaim = app
            .reclamation
            .as_ref()
            .map(|r| format!(", reclaimed at {} unless reactivated", r.at.display_in(zone)));
        println!(
            "  app {} ({}): {} on {}, valid until {}{}",
            app.app,
            app.account,
            status_word(app.status),
            app.edition,
            until,
            reclaim.unwrap_or_default()
        );
    }
}

fn advance(cli: &Cli, to: &str, key: Option<&str>, actor: &str) -> Result<(), Failure> {
    let at = parse_instant(to, "--to")?;
    let key = Key::new(key.map_or_else(|| format!("advance/{at}"), str::to_owned)).map_err(bad_input)?;
    if let Some(prefix) = RESERVED_KEY_PREFIXES.iter().find(|p| key.as_str().starts_with(*p)) {
        return Err(bad_input(format!(
            "--key: keys starting with {prefix:?} are the ledger's own"
        )));
    }
    let actor: Actor = actor.parse().map_err(bad_input)?;
    let mut ledger = open_ledger(cli)?;
    let before = ledger.head().seq;
    let outcome = ledger
        .submit(&[Input {
            key,
            at,
            actor,
            command: Command::AdvanceClock {},
        }])
        .map_err(|e| match e {
            LedgerError::BeforeClock { .. } | LedgerError::KeyConflict { .. } => bad_input(e),
            other => failure(other),
        })?;
    ledger.save_snapshot()?;
    let zone = zone_of(ledger.state().rulebook.as_ref().map(|r| r.zone.as_str()));
    match &outcome[0] {
        Outcome::Repeated(record) => println!(
            "already advanced with this key (events {}..{})",
            record.first_seq, record.last_seq
        ),
        Outcome::Recorded { .. } => {
            let events = ledger.store().read(before + 1, usize::MAX).map_err(failure)?;
            for stored in events {
                let event = decode(&stored.bytes).map_err(failure)?;
                println!("{}", log_line(&event, zone));
            }
        }
    }
    println!("clock at {}; head {}", at.display_in(zone), head_label(ledger.head()));
    Ok(())
}

fn state(data: &Path, what: &StateCmd) -> Result<(), Failure> {
    let (as_of, json) = match what {
        StateCmd::App { as_of, json, .. }
        | StateCmd::Account { as_of, json, .. }
        | StateCmd::All { as_of, json }
        | StateCmd::Bills { as_of, json, .. }
        | StateCmd::Deadlines { as_of, json } => (as_of, *json),
    };
    let until = as_of.as_deref().map(|t| parse_instant(t, "--as-of")).transpose()?;
    let store = open_store(data)?;
    // One app or account reads only its own part of the stored snapshot when it can.
    let mut view = match what {
        StateCmd::App { sdk_app_id, .. } => replay::load_app(&store, AppId(*sdk_app_id), until),
        StateCmd::Account { id, .. } => {
            let account = AccountId::new(id.clone()).map_err(bad_input)?;
            replay::load_for_account(&store, &account, until)
        }
        _ => replay::load(&store, until),
    }
    .map_err(failure)?;
    // The text tells no settled history; the JSON is the whole view of the app or account.
    if json {
        replay::make_whole(&store, &mut view).map_err(failure)?;
    }
    let zone = zone_of(view.rulebook.as_ref().map(|r| r.zone.as_str()));
    let as_of_line = match (until, view.clock) {
        (Some(t), Some(clock)) => {
            format!(
                "as of {}: events 1..{} (the last at {})",
                t.display_in(zone),
                view.seq,
                clock.display_in(zone)
            )
        }
        (None, Some(clock)) => format!("as of event {} ({})", view.seq, clock.display_in(zone)),
        (_, None) => "the ledger is empty".to_owned(),
    };
    match what {
        StateCmd::App { sdk_app_id, .. } => {
            let app = view
                .apps
                .get(&AppId(*sdk_app_id))
                .ok_or_else(|| failure(format!("no app {sdk_app_id} ({as_of_line})")))?;
            if json {
                println!("{}", serde_json::to_string_pretty(app).expect("views serialize"));
            } else {
                print!("{}", app_block(app, zone));
                println!("  {as_of_line}");
            }
        }
        StateCmd::Account { id, .. } => {
            let account_id = AccountId::new(id.clone()).map_err(bad_input)?;
            let account = view
                .accounts
                .get(&account_id)
                .ok_or_else(|| failure(format!("no account {id} ({as_of_line})")))?;
            if json {
                println!("{}", serde_json::to_string_pretty(account).expect("views serialize"));
            } else {
                let b = &account.balances;
                println!(
                    "account {} (opened {})",
                    account.account,
                    account.opened_at.display_in(zone)
                );
                println!("  balance       {} available", account.available());
                println!("    cash             {}", b.cash);
                println!("    income transfer  {}", b.income_transfer);
                println!("    gift             {}", b.gift);
                println!("    voucher          {}", b.voucher);
                if let Some(arrears) = &account.arrears {
                    println!(
                        "  in arrears    since {}; apps {} {}",
                        arrears.since.display_in(zone),
                        if arrears.suspended { "held since" } else { "held at" },
                        arrears.suspend_at.display_in(zone)
                    );
                }
                let apps: Vec<String> = account.apps.iter().map(ToString::to_string).collect();
                println!(
                    "  apps          {}",
                    if apps.is_empty() {
                        "none".to_owned()
                    } else {
                        apps.join(", ")
                    }
                );
                println!("  reminders to  {} / {}", account.creator.email, account.creator.sms);
                println!("  {as_of_line}");
            }
        }
        StateCmd::Bills { account, .. } => {
            let bills: Vec<(&String, &chat_ledger_projections::BillView)> = view
                .bills
                .iter()
                .filter(|(_, b)| account.as_ref().is_none_or(|a| b.account.as_str() == a))
                .collect();
            if json {
                let map: std::collections::BTreeMap<_, _> = bills.into_iter().collect();
                println!("{}", serde_json::to_string_pretty(&map).expect("views serialize"));
            } else {
                for (id, bill) in &bills {
                    println!(
                        "bill {id}  account {}  app {}  {}  pushed {}  {}  {:?}",
                        bill.account,
                        bill.app,
                        bill.month,
                        bill.pushed_at.display_in(zone),
                        bill.total,
                        bill.status
                    );
                    for line in &bill.lines {
                        println!(
                            "    {}  {} × {} = {}  [{}]",
                            line.item, line.quantity, line.unit_price, line.amount, line.rule
                        );
                    }
                }
                println!("{} bill(s), {as_of_line}", bills.len());
            }
        }
        StateCmd::All { .. } => {
            if json {
                println!("{}", serde_json::to_string_pretty(&view).expect("views serialize"));
            } else {
                println!("{as_of_line}");
                print_apps(&view);
                for account in view.accounts.values() {
                    println!("  account {}: {} available", account.account, account.available());
                }
                println!("  {} pending deadline(s)", view.deadlines.len());
            }
        }
        StateCmd::Deadlines { .. } => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&view.deadlines).expect("views serialize")
                );
            } else {
                for d in &view.deadlines {
                    println!("{}  {:<12} {}", d.at.display_in(zone), d.kind.as_str(), d.stream);
                }
                println!("{} pending deadline(s), {as_of_line}", view.deadlines.len());
            }
        }
    }
    Ok(())
}

fn explain_cmd(data: &Path, what: &ExplainCmd) -> Result<(), Failure> {
    let (at, json) = match what {
        ExplainCmd::App { at, json, .. } | ExplainCmd::Account { at, json, .. } => (at, *json),
    };
    let until = at.as_deref().map(|t| parse_instant(t, "--at")).transpose()?;
    let store = open_store(data)?;
    let view = match what {
        ExplainCmd::App { sdk_app_id, .. } => replay::load_for_app(&store, AppId(*sdk_app_id), until),
        ExplainCmd::Account { id, .. } => {
            let account = AccountId::new(id.clone()).map_err(bad_input)?;
            replay::load_for_account(&store, &account, until)
        }
    }
    .map_err(failure)?;
    let explanation = match what {
        ExplainCmd::App { sdk_app_id, .. } => explain::explain_app(&store, &view, AppId(*sdk_app_id), until),
        ExplainCmd::Account { id, .. } => {
            let account = AccountId::new(id.clone()).map_err(bad_input)?;
            explain::explain_account(&store, &view, &account, until)
        }
    }
    .map_err(failure)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&explanation).expect("explanations serialize")
        );
    } else {
        print!("{}", explain::render(&explanation));
    }
    Ok(())
}

fn log(data: &Path, stream: Option<&str>, json: bool) -> Result<(), Failure> {
    let store = open_store(data)?;
    let stream = stream.map(StreamId::parse).transpose().map_err(bad_input)?;
    let zone = zone_of(
        replay::load(&store, None)
            .map_err(failure)?
            .rulebook
            .as_ref()
            .map(|r| r.zone.as_str()),
    );
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut next = 1;
    loop {
        let page = match &stream {
            Some(s) => store.read_stream(s, next, READ_PAGE_EVENTS),
            None => store.read(next, READ_PAGE_EVENTS),
        }
        .map_err(failure)?;
        if page.is_empty() {
            break;
        }
        for stored in &page {
            let event = decode(&stored.bytes).map_err(|e| failure(format!("event {}: {e}", stored.seq)))?;
            next = if stream.is_some() {
                event.version + 1
            } else {
                event.seq + 1
            };
            if json {
                out.write_all(&stored.bytes).map_err(failure)?;
                out.write_all(b"\n").map_err(failure)?;
            } else {
                writeln!(out, "{}", log_line(&event, zone)).map_err(failure)?;
            }
        }
    }
    out.flush().map_err(failure)
}

fn verify_cmd(data: &Path, expect_head: Option<&str>, file: Option<&Path>, json: bool) -> Result<(), Failure> {
    let expected = expect_head
        .map(str::parse::<ExpectedHead>)
        .transpose()
        .map_err(|e| bad_input(format!("--expect-head: {e}")))?;
    let (what, result) = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| bad_input(format!("{}: cannot read: {e}", path.display())))?;
            (path.display().to_string(), verify::verify_export(&text, expected))
        }
        None => {
            let store = open_store(data)?;
            (
                data.display().to_string(),
                verify::verify_store(&store, expected).map_err(failure)?,
            )
        }
    };
    match result {
        Ok(report) => {
            if json {
                let out = serde_json::json!({
                    "ok": true, "head": head_label(report.head), "events": report.head.seq,
                    "streams": report.streams, "inputs": report.inputs_recorded,
                });
                println!("{out}");
            } else {
                println!(
                    "ok: {what}: {} event(s) in {} stream(s), {} input(s); chain intact and replayable",
                    report.head.seq, report.streams, report.inputs_recorded
                );
                println!(
                    "head {}  (keep it; later: verify --expect-head {})",
                    head_label(report.head),
                    head_label(report.head)
                );
            }
            Ok(())
        }
        Err(bad) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": false, "position": bad.position, "reason": bad.reason })
                );
            }
            Err(failure(format!("verify failed for {what}: {bad}")))
        }
    }
}

fn restore(data: &Path, file: &Path) -> Result<(), Failure> {
    const RESTORE_COMMITS_PER_BATCH: usize = 1000;
    let text = std::fs::read_to_string(file).map_err(|e| bad_input(format!("{}: cannot read: {e}", file.display())))?;
    let store = open_store(data)?;
    let appended = verify::restore(&store, &text, RESTORE_COMMITS_PER_BATCH).map_err(|e| match e {
        verify::ExportError::Invalid(_) | verify::ExportError::Diverged { .. } => {
            bad_input(format!("{}: {e}", file.display()))
        }
        other => failure(other),
    })?;
    let head = store.head().map_err(failure)?;
    println!(
        "restored {appended} event(s) from {}; head {}",
        file.display(),
        head_label(head)
    );
    Ok(())
}
