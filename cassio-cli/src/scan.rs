//! `cassio scan` (and the shell's `scan`): live keys in key order with
//! their values, read page by page until the limit or the range's end.

use std::ops::Bound;

use cassio_client::{ConsistencyLevel, KeyRange, ScanEntry, blocking::Client};

/// Keys asked for per page.
const PAGE_KEYS: u32 = 1000;

#[derive(clap::Args, Debug)]
pub(crate) struct ScanArgs {
    /// Only keys that start with this.
    #[arg(long)]
    prefix: Option<String>,
    /// Start at this key (included).
    #[arg(long, conflicts_with = "after")]
    from: Option<String>,
    /// Start after this key (where an earlier scan stopped).
    #[arg(long)]
    after: Option<String>,
    /// Print at most this many keys; 0 prints them all.
    #[arg(long, default_value_t = 100)]
    limit: u64,
}

impl ScanArgs {
    fn range(&self) -> KeyRange {
        let mut range = match &self.prefix {
            Some(prefix) => KeyRange::prefix(prefix.as_bytes()),
            None => KeyRange::all(),
        };
        if let Some(from) = &self.from {
            range.start = Bound::Included(from.as_bytes().to_vec());
        }
        if let Some(after) = &self.after {
            range.start = Bound::Excluded(after.as_bytes().to_vec());
        }
        range
    }
}

/// What a scan found: the keys, and the last one when more follow.
pub(crate) struct Found {
    pub(crate) entries: Vec<ScanEntry>,
    pub(crate) more_after: Option<Vec<u8>>,
}

/// Reads up to `limit` keys of `range` (0: all), a page at a time.
pub(crate) fn collect(
    client: &Client,
    mut range: KeyRange,
    limit: u64,
    level: ConsistencyLevel,
) -> anyhow::Result<Found> {
    let mut entries: Vec<ScanEntry> = Vec::new();
    loop {
        let wanted = match limit {
            0 => PAGE_KEYS,
            _ => (limit - entries.len() as u64).min(u64::from(PAGE_KEYS)) as u32,
        };
        let page = client.scan(&range, wanted, Some(level))?;
        entries.extend(page.entries);
        match page.next {
            None => {
                return Ok(Found {
                    entries,
                    more_after: None,
                });
            }
            Some(_) if limit != 0 && entries.len() as u64 >= limit => {
                let more_after = entries.last().map(|e| e.key.clone());
                return Ok(Found {
                    entries,
                    more_after,
                });
            }
            Some(next) => range = next,
        }
    }
}

/// One line per key: `key<TAB>value` (invalid UTF-8 shown lossily).
pub(crate) fn lines(found: &Found) -> String {
    let mut out = String::new();
    for entry in &found.entries {
        out.push_str(&String::from_utf8_lossy(&entry.key));
        out.push('\t');
        out.push_str(&String::from_utf8_lossy(&entry.value));
        out.push('\n');
    }
    out
}

pub(crate) fn run(
    client: &Client,
    args: &ScanArgs,
    level: ConsistencyLevel,
    json: bool,
) -> anyhow::Result<()> {
    let found = collect(client, args.range(), args.limit, level)?;
    if json {
        for entry in &found.entries {
            println!(
                r#"{{"key":{},"value":{},"timestamp":{}}}"#,
                crate::json_string(&entry.key),
                crate::json_string(&entry.value),
                entry.timestamp
            );
        }
        if let Some(key) = &found.more_after {
            println!(r#"{{"more_after":{}}}"#, crate::json_string(key));
        }
        return Ok(());
    }
    print!("{}", lines(&found));
    if let Some(key) = &found.more_after {
        eprintln!(
            "(limit of {} reached; more keys follow: add --after {:?})",
            args.limit,
            String::from_utf8_lossy(key)
        );
    }
    Ok(())
}
