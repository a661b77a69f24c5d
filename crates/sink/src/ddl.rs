//! DDL on the target: what the user wants done with each kind of statement (apply, skip or
//! stop), and how a re-delivered statement is recognised.
//!
//! DDL reaches the sink in stream order, as the last transaction of a batch
//! ([`outflow_core::ChangeBatch::ddl`]): [`crate::Applier::apply`] applies the batch's rows
//! first, then runs, skips or stops on the statement by the policy for its [`DdlKind`],
//! then advances the checkpoint past it. The statement runs verbatim, in the source
//! session's default database, character set and `sql_mode`.
//!
//! Exactly once: MariaDB and MySQL commit DDL implicitly, so the statement cannot share a
//! transaction with the checkpoint. Before it runs, the checkpoint records "this DDL is
//! next" (the rows before it, or a checkpoint of its own); after it, a second target
//! transaction moves the checkpoint past it. A crash in between re-delivers the DDL with
//! the checkpoint pointing at it, so it may have run: the errors a second run of the same
//! statement gives ("table exists", "duplicate column", "can't drop", "no such table" after
//! a rename, ...) are then taken as "already applied" ([`DdlOutcome::AlreadyApplied`]).
//! Statements that succeed twice (`TRUNCATE`, `MODIFY ... AFTER`) are harmless to repeat,
//! since no later row was applied yet. Outside that case, only the errors that mean the
//! target already has what the statement makes (a table that exists, a column or key that
//! exists or is gone) count as applied: a target prepared with the schema beforehand then
//! accepts the stream's `CREATE TABLE`.
//!
//! The initial snapshot ships statements of its own, in frames marked as snapshot, which
//! make the target forget rows of an interrupted earlier read ([`outflow_core::SnapshotStatement`]):
//! ``TRUNCATE TABLE `db`.`t` `` before a table is read again from its start, and
//! ``DELETE FROM `db`.`t` WHERE (key columns) > (last key)`` before a table with an integer
//! key continues after its last recorded key. They are not the user's DDL (the second is
//! no DDL at all), so they bypass this module: no policy applies, they always run
//! (skipping them would leave rows the source no longer has), and a snapshot frame
//! carrying any other text is refused. The sink parses the statement and runs its own
//! rendering of it (the `DELETE`'s row comparison expanded, so that the target reads a
//! range of the key). They are harmless to run twice, as a re-delivery after a crash does.

pub use outflow_core::DdlKind;

/// What to do with a DDL statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdlPolicy {
    /// Run it on the target, in stream order.
    Apply,
    /// Leave the target's schema alone (the statement is logged and counted).
    Skip,
    /// Stop, naming the statement's kind and position.
    Stop,
}

/// A policy per DDL kind, with a default for the kinds not named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdlPolicies {
    /// For kinds without an override (default [`DdlPolicy::Apply`]).
    pub default: DdlPolicy,
    /// Per-kind choices.
    pub overrides: Vec<(DdlKind, DdlPolicy)>,
}

impl Default for DdlPolicies {
    fn default() -> Self {
        DdlPolicies {
            default: DdlPolicy::Apply,
            overrides: Vec::new(),
        }
    }
}

impl DdlPolicies {
    /// The same policy for every kind.
    pub fn all(policy: DdlPolicy) -> Self {
        DdlPolicies {
            default: policy,
            overrides: Vec::new(),
        }
    }

    /// The policy for `kind`.
    pub fn policy(&self, kind: DdlKind) -> DdlPolicy {
        self.overrides
            .iter()
            .rev()
            .find(|(k, _)| *k == kind)
            .map_or(self.default, |(_, p)| *p)
    }
}

impl DdlPolicy {
    /// `apply`, `skip` or `stop`.
    pub fn name(self) -> &'static str {
        match self {
            DdlPolicy::Apply => "apply",
            DdlPolicy::Skip => "skip",
            DdlPolicy::Stop => "stop",
        }
    }
}

impl std::str::FromStr for DdlPolicies {
    type Err = String;

    /// `kind=policy,...`, where kind is a [`DdlKind::name`] or `default` (the kinds not
    /// named) and policy is `apply`, `skip` or `stop`; later entries win. Empty: apply all.
    fn from_str(s: &str) -> Result<DdlPolicies, String> {
        let mut out = DdlPolicies::default();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (kind, policy) = entry
                .split_once('=')
                .ok_or_else(|| format!("DDL policy {entry:?}: expected kind=policy"))?;
            let policy = match policy.trim() {
                "apply" => DdlPolicy::Apply,
                "skip" => DdlPolicy::Skip,
                "stop" => DdlPolicy::Stop,
                p => return Err(format!("DDL policy {p:?}: expected apply, skip or stop")),
            };
            match kind.trim() {
                "default" => out.default = policy,
                k => {
                    let kind = DdlKind::from_name(k).ok_or_else(|| {
                        let names: Vec<&str> = DdlKind::ALL.iter().map(|k| k.name()).collect();
                        format!(
                            "DDL kind {k:?}: expected default or one of {}",
                            names.join(", ")
                        )
                    })?;
                    out.overrides.push((kind, policy));
                }
            }
        }
        Ok(out)
    }
}

/// What the applier did with a DDL statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdlOutcome {
    /// It ran on the target.
    Applied,
    /// The policy said skip.
    Skipped,
    /// It had already run (a re-delivery after a crash): see the module documentation.
    AlreadyApplied,
}

/// Server errors that a second run of an already-applied DDL statement gives, and that
/// mean the target already has what the statement makes.
pub(crate) const ALREADY_APPLIED: &[u16] = &[
    1007, // database exists
    1008, // database does not exist (DROP DATABASE)
    1050, // table exists
    1051, // unknown table (DROP TABLE)
    1060, // duplicate column name
    1061, // duplicate key name
    1091, // can't DROP column or key: check that it exists
];

/// Further errors a second run gives when the first one may have run (the checkpoint
/// points at the statement): the old name is gone after a rename.
pub(crate) const ALREADY_APPLIED_IF_REDELIVERED: &[u16] = &[
    1054, // unknown column (CHANGE/RENAME COLUMN)
    1146, // no such table (RENAME TABLE, ALTER TABLE ... RENAME)
    1176, // key does not exist (RENAME INDEX)
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_fall_back_to_the_default() {
        let p = DdlPolicies {
            default: DdlPolicy::Apply,
            overrides: vec![
                (DdlKind::DropTable, DdlPolicy::Stop),
                (DdlKind::TruncateTable, DdlPolicy::Skip),
            ],
        };
        assert_eq!(p.policy(DdlKind::DropTable), DdlPolicy::Stop);
        assert_eq!(p.policy(DdlKind::TruncateTable), DdlPolicy::Skip);
        assert_eq!(p.policy(DdlKind::AlterTable), DdlPolicy::Apply);
        let parsed: DdlPolicies = "drop_table=stop, truncate_table=skip".parse().unwrap();
        assert_eq!(parsed, p);
        let all: DdlPolicies = "default=skip,create_table=apply".parse().unwrap();
        assert_eq!(all.policy(DdlKind::DropTable), DdlPolicy::Skip);
        assert_eq!(all.policy(DdlKind::CreateTable), DdlPolicy::Apply);
        assert_eq!("".parse::<DdlPolicies>().unwrap(), DdlPolicies::default());
        for bad in ["drop_table", "drop_table=maybe", "drop_tables=stop"] {
            assert!(bad.parse::<DdlPolicies>().is_err(), "{bad}");
        }
    }
}
