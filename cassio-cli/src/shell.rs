//! `cassio shell`: a REPL with history for the same commands as the CLI.

use std::time::Duration;

use cassio_client::{ConsistencyLevel, blocking::Client};
use rustyline::error::ReadlineError;

const HELP: &str = "commands:
  get KEY                 print the value, or (nil)
  set KEY VALUE [TTL_MS]  write (VALUE is one word; quote nothing)
  del KEY                 delete
  status                  the cluster as this node sees it
  consistency [LEVEL]     show or set the level (ANY ONE TWO THREE QUORUM ALL)
  help, quit";

pub(crate) fn run(client: &Client, host: &str, mut level: ConsistencyLevel) -> anyhow::Result<()> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let history =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cassio_history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    println!("connected to {host} at consistency {level}; `help` lists commands");
    loop {
        let line = match editor.readline(&format!("cassio {host}> ")) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line.as_str());
        let outcome: anyhow::Result<String> =
            match (words[0].to_ascii_lowercase().as_str(), &words[1..]) {
                ("quit" | "exit", _) => break,
                ("help", _) => Ok(HELP.to_string()),
                ("get", [key]) => client
                    .get_versioned(key.as_bytes(), Some(level))
                    .map(|v| {
                        v.map_or("(nil)".into(), |v| {
                            String::from_utf8_lossy(&v.value).into_owned()
                        })
                    })
                    .map_err(Into::into),
                ("set", [key, value]) => client
                    .set_with(key.as_bytes(), value.as_bytes(), Some(level), None)
                    .map(|_| "OK".into())
                    .map_err(Into::into),
                ("set", [key, value, ttl]) => match ttl.parse::<u64>() {
                    Ok(ms) => client
                        .set_with(
                            key.as_bytes(),
                            value.as_bytes(),
                            Some(level),
                            Some(Duration::from_millis(ms)),
                        )
                        .map(|_| "OK".into())
                        .map_err(Into::into),
                    Err(_) => Err(anyhow::anyhow!(
                        "TTL_MS must be a number of milliseconds, got {ttl:?}"
                    )),
                },
                ("del", [key]) => client
                    .delete(key.as_bytes(), Some(level))
                    .map(|_| "OK".into())
                    .map_err(Into::into),
                ("status", []) => client
                    .status()
                    .map(|s| crate::status::table(&s))
                    .map_err(Into::into),
                ("consistency", []) => Ok(level.to_string()),
                ("consistency", [new]) => new
                    .parse::<ConsistencyLevel>()
                    .map(|l| {
                        level = l;
                        format!("consistency is now {l}")
                    })
                    .map_err(|e| anyhow::anyhow!(e)),
                (command, _) => Err(anyhow::anyhow!(
                    "cannot run {command:?} with {} argument(s); `help` lists commands",
                    words.len() - 1
                )),
            };
        match outcome {
            Ok(text) => println!("{}", text.trim_end()),
            Err(e) => println!("(error) {e:#}"),
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}
