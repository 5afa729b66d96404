//! Consistency levels: how many replicas must answer before the coordinator
//! does. With R + W > RF, a read sees every write acknowledged before it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Named in config files as everywhere else (`read_consistency = "ONE"`);
/// the first releases' spelling (`"One"`) is still read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ConsistencyLevel {
    /// Writes only: a stored hint counts as an acknowledgement.
    #[serde(alias = "Any")]
    Any,
    #[serde(alias = "One")]
    One,
    #[serde(alias = "Two")]
    Two,
    #[serde(alias = "Three")]
    Three,
    /// floor(RF / 2) + 1.
    #[serde(alias = "Quorum")]
    Quorum,
    #[serde(alias = "All")]
    All,
}

impl ConsistencyLevel {
    /// Replies needed among `replicas` (RF capped at the cluster size).
    pub fn required(self, replicas: usize) -> usize {
        match self {
            ConsistencyLevel::Any | ConsistencyLevel::One => 1,
            ConsistencyLevel::Two => 2,
            ConsistencyLevel::Three => 3,
            ConsistencyLevel::Quorum => replicas / 2 + 1,
            ConsistencyLevel::All => replicas,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConsistencyLevel::Any => "ANY",
            ConsistencyLevel::One => "ONE",
            ConsistencyLevel::Two => "TWO",
            ConsistencyLevel::Three => "THREE",
            ConsistencyLevel::Quorum => "QUORUM",
            ConsistencyLevel::All => "ALL",
        }
    }
}

impl fmt::Display for ConsistencyLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConsistencyLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "ANY" => Ok(ConsistencyLevel::Any),
            "ONE" => Ok(ConsistencyLevel::One),
            "TWO" => Ok(ConsistencyLevel::Two),
            "THREE" => Ok(ConsistencyLevel::Three),
            "QUORUM" => Ok(ConsistencyLevel::Quorum),
            "ALL" => Ok(ConsistencyLevel::All),
            _ => Err(format!(
                "unknown consistency level {s:?}; use ANY, ONE, TWO, THREE, QUORUM or ALL"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_replies_per_level() {
        let table = [
            (ConsistencyLevel::One, [1, 1, 1, 1]),
            (ConsistencyLevel::Two, [2, 2, 2, 2]),
            (ConsistencyLevel::Quorum, [1, 2, 2, 3]),
            (ConsistencyLevel::All, [1, 2, 3, 5]),
        ];
        for (level, expected) in table {
            for (replicas, want) in [1, 2, 3, 5].into_iter().zip(expected) {
                assert_eq!(
                    level.required(replicas),
                    want,
                    "{level} with {replicas} replicas"
                );
            }
        }
        // R + W > RF for QUORUM both ways, at every RF.
        for rf in 1..10 {
            let q = ConsistencyLevel::Quorum.required(rf);
            assert!(q + q > rf);
        }
    }

    #[test]
    fn parses_any_case_and_names_the_choices() {
        assert_eq!("quorum".parse(), Ok(ConsistencyLevel::Quorum));
        assert!(
            "most"
                .parse::<ConsistencyLevel>()
                .unwrap_err()
                .contains("QUORUM")
        );
    }
}
