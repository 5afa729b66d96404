//! `cassio shell`: a REPL with history for the same commands as the CLI.
//! Words are split as a POSIX shell splits them, so `set k "two words"`
//! works. Lines can also be piped in; the shell then exits non-zero if any
//! command failed.

use std::io::IsTerminal;
use std::time::Duration;

use cassio_client::{ConsistencyLevel, KeyRange, blocking::Client};
use rustyline::error::ReadlineError;

const HELP: &str = "commands (quote words with spaces: set k \"two words\"):
  get KEY                 print the value, or (nil)
  set KEY VALUE [TTL_MS]  write; the value expires after TTL_MS ms if given
  del KEY                 delete
  scan [PREFIX [LIMIT]]   keys starting with PREFIX, in order, with values; at most LIMIT (20)
  status                  the cluster as this node sees it
  consistency [LEVEL]     show or set the level (ANY ONE TWO THREE QUORUM ALL)
  history                 the commands entered so far (also up and down arrows)
  help, quit (or Ctrl-D); Ctrl-C clears the line";

/// Keys a `scan` prints unless told.
const SHELL_SCAN_KEYS: u64 = 20;

/// A scan's lines, then `(empty)` or a note that more keys follow.
fn scan(
    client: &Client,
    range: KeyRange,
    limit: u64,
    level: ConsistencyLevel,
) -> anyhow::Result<String> {
    let found = crate::scan::collect(client, range, limit, level)?;
    let mut text = crate::scan::lines(&found);
    if found.entries.is_empty() {
        text.push_str("(empty)");
    }
    if found.more_after.is_some() {
        text.push_str(&format!("(the first {limit}; more keys follow)"));
    }
    Ok(text)
}

/// What a line asks for.
enum Step {
    Print(String),
    Quit,
}

pub(crate) fn run(client: &Client, host: &str, mut level: ConsistencyLevel) -> anyhow::Result<()> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let history =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cassio_history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        println!("connected to {host} at consistency {level}; `help` lists commands");
    }
    let mut failed = 0usize;
    'lines: loop {
        let input = match editor.readline(&format!("cassio {host}> ")) {
            Ok(input) => input,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        // A paste of several lines arrives as one input: run each.
        for line in input.lines() {
            if line.trim().is_empty() {
                continue;
            }
            let _ = editor.add_history_entry(line);
            let step = match shlex::split(line) {
                Some(words) => step(client, &mut level, &words, editor.history()),
                None => Err(anyhow::anyhow!("unbalanced quotes in: {line}")),
            };
            match step {
                Ok(Step::Quit) => break 'lines,
                Ok(Step::Print(text)) => println!("{}", text.trim_end()),
                Err(e) => {
                    failed += 1;
                    println!("(error) {e:#}");
                }
            }
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    anyhow::ensure!(interactive || failed == 0, "{failed} command(s) failed");
    Ok(())
}

/// Runs one command line, split into words.
fn step(
    client: &Client,
    level: &mut ConsistencyLevel,
    words: &[String],
    history: &dyn rustyline::history::History,
) -> anyhow::Result<Step> {
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let Some((command, args)) = words.split_first() else {
        return Ok(Step::Print(String::new()));
    };
    let command = command.to_ascii_lowercase();
    let printed = match (command.as_str(), args) {
        ("quit" | "exit", []) => return Ok(Step::Quit),
        ("help", []) => HELP.to_string(),
        ("history", []) => (0..history.len())
            .filter_map(|i| {
                let entry = history.get(i, rustyline::history::SearchDirection::Forward);
                entry
                    .ok()
                    .flatten()
                    .map(|e| format!("{:>4}  {}", i + 1, e.entry))
            })
            .collect::<Vec<_>>()
            .join("\n"),
        ("get", [key]) => client
            .get_versioned(key.as_bytes(), Some(*level))?
            .map_or("(nil)".into(), |v| {
                String::from_utf8_lossy(&v.value).into_owned()
            }),
        ("set", [key, value]) => {
            client.set_with(key.as_bytes(), value.as_bytes(), Some(*level), None)?;
            "OK".into()
        }
        ("set", [key, value, ttl_ms]) => {
            let ttl = match ttl_ms.parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => anyhow::bail!(
                    "TTL_MS must be a whole number of milliseconds above 0, got {ttl_ms:?}"
                ),
            };
            client.set_with(key.as_bytes(), value.as_bytes(), Some(*level), Some(ttl))?;
            "OK".into()
        }
        ("del", [key]) => {
            client.delete(key.as_bytes(), Some(*level))?;
            "OK".into()
        }
        ("scan", []) => scan(client, KeyRange::all(), SHELL_SCAN_KEYS, *level)?,
        ("scan", [prefix]) => scan(
            client,
            KeyRange::prefix(prefix.as_bytes()),
            SHELL_SCAN_KEYS,
            *level,
        )?,
        ("scan", [prefix, limit]) => {
            let limit = match limit.parse::<u64>() {
                Ok(n) if n > 0 => n,
                _ => anyhow::bail!("LIMIT must be a whole number above 0, got {limit:?}"),
            };
            scan(client, KeyRange::prefix(prefix.as_bytes()), limit, *level)?
        }
        ("status", []) => crate::status::table(&client.status()?),
        ("consistency", []) => level.to_string(),
        ("consistency", [new]) => {
            *level = new
                .parse::<ConsistencyLevel>()
                .map_err(|e| anyhow::anyhow!(e))?;
            format!("consistency is now {level}")
        }
        ("get" | "del", _) => anyhow::bail!("usage: {command} KEY"),
        ("set", _) => anyhow::bail!("usage: set KEY VALUE [TTL_MS]"),
        ("scan", _) => anyhow::bail!("usage: scan [PREFIX [LIMIT]]"),
        ("consistency", _) => anyhow::bail!("usage: consistency [LEVEL]"),
        ("quit" | "exit" | "help" | "history" | "status", _) => {
            anyhow::bail!("{command} takes no arguments")
        }
        _ => anyhow::bail!("unknown command {command:?}; `help` lists commands"),
    };
    Ok(Step::Print(printed))
}
