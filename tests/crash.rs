//! Crash safety of `import`: a process killed at any moment (SIGKILL, no chance to clean
//! up) leaves a store that verifies, holds every event it acknowledged on stdout, and
//! holds nothing but a prefix of what an uninterrupted import writes; re-running the
//! import completes it to exactly the uninterrupted log, byte for byte.
//!
//! SIGKILL kills the process, not the machine: whatever it handed to the kernel survives.
//! What this exercises is that an acknowledgement is printed only after its batch is in
//! the store, that a batch is all or nothing, and that a store left behind mid-batch is
//! one a re-run can continue from.
//!
//! The inputs are generated here, deterministically; event ids and timestamps are derived
//! from them, so every run writes the same bytes at the same positions.

#![cfg(unix)]

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chat_ledger::store::{EventStore, SledStore};
use chat_ledger::verify::{export, verify_store};

const BIN: &str = env!("CARGO_BIN_EXE_chat-ledger");
const CHUNK: usize = 50;
const RUNS: usize = 22;
/// Kill delays spread over this share of the uninterrupted import's time: a few land
/// after it finished.
const DELAY_SPAN: f64 = 1.15;

// ---------------------------------------------------------------------------------------
// Inputs

const ACCOUNTS: usize = 3;
/// Within the rulebook's 300 apps per account.
const APPS_PER_ACCOUNT: usize = 250;
const FIRST_APP: u64 = 1_400_000_001;

/// A timeline of ~1,650 inputs (~4,400 events, expiry reminders and auto-renewals included,
/// in 33 chunks of 50; 0.45 s to import in a debug build on an idle 2-core machine, 1-1.5 s
/// on a busy one): accounts opened and funded, then apps created and bought (Standard, Pro,
/// Pro-plus and Enterprise, 1 to 3 months, some with auto-renew), a clock tick every 40
/// apps. Half an hour between inputs spans 34 days, so the first plans expire and renew or
/// lapse, and the ticks fire those deadlines. Times only increase; every app is created
/// before use.
fn generate_inputs() -> String {
    let start = chrono::DateTime::parse_from_rfc3339("2025-03-01T09:00:00+08:00").expect("a valid start");
    let mut step = 0i64;
    let mut at = || {
        step += 1;
        (start + chrono::Duration::minutes(30 * step)).to_rfc3339()
    };
    let mut lines = Vec::new();
    for a in 0..ACCOUNTS {
        let at_open = at();
        lines.push(format!(
            r#"{{"key":"acc{a}-open","at":"{at_open}","actor":"customer","type":"open_account","account":"acc{a}","creator":{{"email":"ops@acc{a}.example","sms":"+65-8000-000{a}"}}}}"#
        ));
        let at_cash = at();
        lines.push(format!(
            r#"{{"key":"acc{a}-cash","at":"{at_cash}","actor":"customer","type":"add_funds","account":"acc{a}","kind":"cash","amount":"2000000.00"}}"#
        ));
        let at_gift = at();
        lines.push(format!(
            r#"{{"key":"acc{a}-gift","at":"{at_gift}","actor":"support:alice","type":"add_funds","account":"acc{a}","kind":"gift","amount":"1500.00"}}"#
        ));
    }
    for i in 0..ACCOUNTS * APPS_PER_ACCOUNT {
        let account = i % ACCOUNTS;
        let app = FIRST_APP + i as u64;
        let at_create = at();
        lines.push(format!(
            r#"{{"key":"app-{i}","at":"{at_create}","actor":"customer","type":"create_app","account":"acc{account}","app":{app},"name":"App {i}"}}"#
        ));
        if i % 7 == 3 {
            let at_renew = at();
            lines.push(format!(
                r#"{{"key":"renew-{i}","at":"{at_renew}","actor":"customer","type":"set_auto_renew","app":{app},"on":true}}"#
            ));
        }
        let months = 1 + i % 3;
        let edition = match i % 4 {
            0 => r#""edition":"standard""#.to_owned(),
            1 => r#""edition":"pro""#.to_owned(),
            2 => r#""edition":"pro_plus""#.to_owned(),
            _ => r#""edition":"enterprise","contract_monthly_price":"2999.00""#.to_owned(),
        };
        let at_buy = at();
        lines.push(format!(
            r#"{{"key":"buy-{i}","at":"{at_buy}","actor":"customer","type":"buy_edition","app":{app},{edition},"months":{months}}}"#
        ));
        if i % 40 == 39 {
            let at_tick = at();
            lines.push(format!(
                r#"{{"key":"tick-{i}","at":"{at_tick}","actor":"system","type":"advance_clock"}}"#
            ));
        }
    }
    let at_last = at();
    lines.push(format!(
        r#"{{"key":"tick-last","at":"{at_last}","actor":"system","type":"advance_clock"}}"#
    ));
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

// ---------------------------------------------------------------------------------------
// Helpers

/// A 64-bit LCG (Knuth's MMIX constants): reproducible "randomness" without a crate.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }

    /// Uniform in [0, 1).
    fn fraction(&mut self) -> f64 {
        self.next() as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn import_command(data: &Path, inputs: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("--data")
        .arg(data)
        .arg("import")
        .arg("--chunk")
        .arg(CHUNK.to_string())
        .arg(inputs)
        .env_remove("CHAT_LEDGER_DATA")
        .env_remove("CHAT_LEDGER_RULEBOOK");
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The `N` of every `acknowledged: events through N (input line L)` line, in order.
fn acks(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("acknowledged: events through "))
        .map(|rest| {
            let n = rest.split_whitespace().next().expect("a position");
            n.parse().unwrap_or_else(|_| panic!("an ack names a position: {rest}"))
        })
        .collect()
}

/// The store's head and its export; the store is closed again on return. With `verify`,
/// asserts first that it verifies (no torn or damaged event, the head record agrees).
fn head_and_export(data: &Path, verify: bool) -> (u64, Vec<u8>) {
    let store = SledStore::open(data).expect("the store opens after the crash");
    let head = store.head().expect("a head");
    if verify {
        let report = verify_store(&store, None)
            .expect("the store reads")
            .unwrap_or_else(|failure| panic!("the store in {} does not verify: {failure}", data.display()));
        assert_eq!(report.head, head, "verify walked to the recorded head");
    }
    let mut out = Vec::new();
    let written = export(&store, &mut out).expect("export");
    assert_eq!(written, head.seq);
    (head.seq, out)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("read the store dir") {
        let entry = entry.expect("a dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a store file");
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    Empty,
    /// A copy of the state the previous run's kill left behind.
    PreviousCrash,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Landed {
    /// Killed with no ack printed: while parsing, checking, replaying or in the first chunk.
    BeforeFirstAck,
    /// Killed between acks, with events still to import.
    MidImport,
    /// Killed after the last batch was durable, before the process exited.
    AfterLastBatch,
    /// The import had exited by itself.
    AfterCompletion,
}

// ---------------------------------------------------------------------------------------
// The test

#[test]
fn a_killed_import_keeps_every_acknowledged_event_and_resumes_to_the_same_log() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let inputs = tmp.path().join("inputs.jsonl");
    std::fs::write(&inputs, generate_inputs()).expect("write the inputs");

    // The uninterrupted reference, timed once.
    let reference_dir = tmp.path().join("reference");
    let t0 = Instant::now();
    let out = import_command(&reference_dir, &inputs)
        .output()
        .expect("run the import");
    let full_time = t0.elapsed();
    assert_success(&out, "the uninterrupted import");
    let reference_acks = acks(&text(&out.stdout));
    let (total, reference) = head_and_export(&reference_dir, true);
    let reference_lines: Vec<&[u8]> = reference.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    assert_eq!(reference_lines.len() as u64, total);
    assert!(reference_acks.windows(2).all(|w| w[0] < w[1]), "acks grow");
    assert_eq!(reference_acks.last(), Some(&total), "the last ack is the head");
    assert!(
        reference_acks.len() >= 20,
        "{} chunks: too few to land in",
        reference_acks.len()
    );
    // Batch boundaries of an import from empty: a store holds one of these, nothing between.
    let boundaries: BTreeSet<u64> = std::iter::once(0).chain(reference_acks.iter().copied()).collect();
    // Commit boundaries: the idempotency key of every event.
    let keys: Vec<String> = reference_lines
        .iter()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_slice(line).expect("JSON events");
            event["key"].as_str().expect("a key").to_owned()
        })
        .collect();
    let on_commit_boundary = |head: u64| head == 0 || head == total || keys[head as usize - 1] != keys[head as usize];
    eprintln!(
        "reference: {total} events in {} acknowledged chunks, uninterrupted import {full_time:?}",
        reference_acks.len()
    );

    // Delays: one per stratum of [0, DELAY_SPAN × full time), strata in shuffled order,
    // a random point inside each.
    let mut lcg = Lcg(0x5eed_c4a5_0000_0001);
    let mut strata: Vec<usize> = (0..RUNS).collect();
    for i in (1..RUNS).rev() {
        strata.swap(i, lcg.below(i + 1));
    }

    // The state the previous run's kill left behind, and its head.
    let mut previous_crash: Option<(PathBuf, u64)> = None;
    let mut landed = Vec::new();
    let mut starts = Vec::new();
    let mut heads = BTreeSet::new();
    let (mut ahead_of_ack, mut lost_chunk_in_progress) = (0, 0);
    for (run, stratum) in strata.into_iter().enumerate() {
        // Two runs in three continue the previous run's crash, unless that run finished.
        let start = match &previous_crash {
            Some(_) if run % 3 != 0 => Start::PreviousCrash,
            _ => Start::Empty,
        };
        let data = tmp.path().join(format!("run-{run}"));
        let start_head = match (start, &previous_crash) {
            (Start::PreviousCrash, Some((crash, head))) => {
                copy_dir(crash, &data);
                *head
            }
            _ => 0,
        };
        // A continued import has less to do: spread its delays over roughly its own time
        // (start-up and replay of what is there included).
        let remaining = (total - start_head) as f64 / total as f64;
        let expected_time = full_time.mul_f64(0.2 + 0.8 * remaining);
        let delay = expected_time.mul_f64(DELAY_SPAN * (stratum as f64 + lcg.fraction()) / RUNS as f64);

        let mut child = import_command(&data, &inputs)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the import");
        // Sleep out the delay, unless the import finishes first.
        let spawned = Instant::now();
        while child.try_wait().expect("poll the import").is_none() {
            let Some(left) = delay.checked_sub(spawned.elapsed()).filter(|d| !d.is_zero()) else {
                break;
            };
            std::thread::sleep(left.min(Duration::from_millis(2)));
        }
        // SIGKILL (a no-op if the import already exited; then the status says so).
        let _ = child.kill();
        let status = child.wait().expect("reap the import");
        let mut stdout = String::new();
        let mut stderr = String::new();
        child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        let completed = status.success();
        assert!(
            completed || status.signal() == Some(9),
            "run {run}: the import failed by itself ({status:?})\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        let acked = acks(&stdout);
        let max_ack = acked.last().copied();

        let (head, exported) = head_and_export(&data, true);
        let lines: Vec<&[u8]> = exported.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
        let context =
            format!("run {run} ({start:?} at {start_head}, killed after {delay:?}, acked {max_ack:?}, head {head})");
        assert!(
            head >= start_head,
            "{context}: the log lost events it held before the run"
        );
        if let Some(max_ack) = max_ack {
            assert!(max_ack <= head, "{context}: acknowledged events are missing");
        }
        // Every stored event, acknowledged or not, is the reference's event at its position.
        assert!(head <= total, "{context}: more events than the reference");
        assert_eq!(lines.len() as u64, head, "{context}");
        for (position, (line, want)) in lines.iter().zip(&reference_lines).enumerate() {
            assert!(
                line == want,
                "{context}: event {} differs from the reference",
                position + 1
            );
        }
        assert!(on_commit_boundary(head), "{context}: the head splits a commit");
        if start == Start::Empty {
            assert!(
                boundaries.contains(&head),
                "{context}: the head is not a batch boundary"
            );
        }
        if completed {
            assert_eq!(head, total, "{context}: a finished import holds the whole log");
        }
        heads.insert(head);
        starts.push(start);
        landed.push(match (completed, max_ack) {
            (true, _) => Landed::AfterCompletion,
            (false, _) if head == total => Landed::AfterLastBatch,
            (false, None) => Landed::BeforeFirstAck,
            (false, Some(_)) => Landed::MidImport,
        });
        eprintln!("{context}: {:?}", landed.last().expect("just pushed"));
        if !completed && head < total {
            if head > max_ack.unwrap_or(start_head) {
                ahead_of_ack += 1; // flushed, killed before its ack was printed
            } else {
                lost_chunk_in_progress += 1; // killed while a chunk was being decided or written
            }
        }

        // The next run may continue from this crash; this one runs to completion.
        if let Some((old, _)) = previous_crash.take() {
            std::fs::remove_dir_all(old).expect("remove an old crash copy");
        }
        if !completed {
            let crash = tmp.path().join(format!("crash-{run}"));
            copy_dir(&data, &crash);
            previous_crash = Some((crash, head));
        }
        let out = import_command(&data, &inputs).output().expect("re-run the import");
        assert_success(&out, &format!("{context}: the re-run"));
        if let Some(first) = acks(&text(&out.stdout)).first() {
            assert!(*first > head, "{context}: the re-run starts after the head");
        }
        // Equal to the verified reference, so verified too.
        let (final_head, final_export) = head_and_export(&data, false);
        assert_eq!(final_head, total, "{context}: the re-run completes the log");
        assert!(
            final_export == reference,
            "{context}: the completed export differs from the reference"
        );
        std::fs::remove_dir_all(&data).expect("remove the run's store");
    }

    let count = |which: Landed| landed.iter().filter(|l| **l == which).count();
    let (before, mid, last, after) = (
        count(Landed::BeforeFirstAck),
        count(Landed::MidImport),
        count(Landed::AfterLastBatch),
        count(Landed::AfterCompletion),
    );
    let continued = starts.iter().filter(|s| **s == Start::PreviousCrash).count();
    eprintln!(
        "{RUNS} kills ({} from empty, {continued} continuing a crash): {before} before the first ack, \
         {mid} mid-import, {last} after the last batch but before exit, {after} after completion; \
         of those leaving work undone, {lost_chunk_in_progress} lost a chunk in progress and \
         {ahead_of_ack} had flushed a chunk whose ack was never printed; {} distinct heads: {heads:?}; {:?} in all",
        RUNS - continued,
        heads.len(),
        started.elapsed()
    );
    assert!(
        mid >= 3,
        "only {mid} of {RUNS} kills landed mid-import: the delays do not cover the import"
    );
    assert!(
        heads.len() >= 4,
        "only {} distinct heads after the kills: {heads:?}",
        heads.len()
    );
}
