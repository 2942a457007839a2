//! Bulk login files: CSV (`sdkappid,user,logged_in_at` with that header) or JSON Lines
//! (`{"app":…,"user":…,"logged_in_at":…}`), read whole and checked before anything is
//! ingested. User ids never reach the log: the ledger replaces them by per-app digests.

use std::path::Path;

use chat_ledger_events::{AppId, Instant};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::import::BadInput;
use crate::ledger::RawLogin;

/// Rows per acknowledged chunk of a bulk login ingestion, by default.
pub const CHUNK_ROWS_DEFAULT: usize = 50_000;

/// Longest user id accepted, in bytes.
pub const USER_ID_MAX_BYTES: usize = 256;

/// A parsed login file.
#[derive(Debug, Clone)]
pub struct LoginFile {
    /// The name the file is known by in the log (`login_batch.source`, `<source>:<line>`).
    pub source: String,
    /// First 16 hex digits of the SHA-256 of the file's bytes: keys its chunks.
    pub digest: String,
    pub rows: Vec<RawLogin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    app: AppId,
    user: String,
    logged_in_at: String,
}

fn check_user(user: &str) -> Result<(), String> {
    if user.is_empty() || user.len() > USER_ID_MAX_BYTES {
        return Err(format!(
            "user id must be 1 to {USER_ID_MAX_BYTES} bytes, got {}",
            user.len()
        ));
    }
    Ok(())
}

/// Reads and checks a whole login file. Errors name the file and line.
pub fn read(path: &Path) -> Result<LoginFile, BadInput> {
    let name = path.display().to_string();
    let bad = |line: usize, reason: String| BadInput {
        file: name.clone(),
        line,
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(0, format!("cannot read: {e}")))?;
    let digest = hex::encode(&Sha256::digest(&bytes)[..8]);
    let source = path
        .file_name()
        .map_or_else(|| name.clone(), |n| n.to_string_lossy().into_owned());
    let mut rows = Vec::new();
    let is_csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if is_csv {
        let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(&bytes[..]);
        let headers = reader.headers().map_err(|e| bad(1, format!("not CSV: {e}")))?.clone();
        if headers.iter().collect::<Vec<_>>() != ["sdkappid", "user", "logged_in_at"] {
            return Err(bad(
                1,
                format!(
                    "the header must be sdkappid,user,logged_in_at, not {}",
                    headers.iter().collect::<Vec<_>>().join(",")
                ),
            ));
        }
        for record in reader.records() {
            let record =
                record.map_err(|e| bad(e.position().map_or(0, |p| p.line() as usize), format!("not CSV: {e}")))?;
            let line = record.position().map_or(0, |p| p.line());
            let field = |i: usize| record.get(i).unwrap_or_default();
            let app = field(0)
                .parse::<u64>()
                .map_err(|_| bad(line as usize, format!("SDKAppID {:?} is not a number", field(0))))?;
            check_user(field(1)).map_err(|e| bad(line as usize, e))?;
            let at = Instant::parse(field(2)).map_err(|e| bad(line as usize, e))?;
            rows.push(RawLogin {
                line,
                app: AppId(app),
                user: field(1).to_owned(),
                logged_in_at: at,
            });
        }
    } else {
        let text = std::str::from_utf8(&bytes).map_err(|e| bad(0, format!("not UTF-8: {e}")))?;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let row: JsonRow = serde_json::from_str(raw).map_err(|e| bad(line, format!("not a login row: {e}")))?;
            check_user(&row.user).map_err(|e| bad(line, e))?;
            let at = Instant::parse(&row.logged_in_at).map_err(|e| bad(line, e))?;
            rows.push(RawLogin {
                line: line as u64,
                app: row.app,
                user: row.user,
                logged_in_at: at,
            });
        }
    }
    Ok(LoginFile { source, digest, rows })
}
