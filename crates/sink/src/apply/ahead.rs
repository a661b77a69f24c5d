//! Building the next frame's statements while this one runs on the target.
//!
//! Measured on the end-to-end bench (2 cores, 4 MiB frames): a frame took 27-35 ms, of
//! which the target executed 22-27 ms; building the statements took 2-3 ms and decoding the
//! frame about 1.3 ms, and during both the target's connections waited while a fifth of the
//! machine's CPU was idle. So the caller decodes frame N+1 and builds its statements with a
//! [`Stager`] on another task while the applier runs frame N; applying frame N+1 then starts
//! executing at once.
//!
//! Statements are a function of the table plans, the frame, and the lane split alone, so
//! building them early changes nothing the target sees. The staged statements are used only
//! for what they were built for: the frame's first target transaction from its first source
//! transaction, on the fast path, spread the same way, under the same plans (the `Arc` the
//! stager read: a plan added since makes a new one, and DDL drops them all). Anything else
//! (a resumed frame, careful mode, a retry on one connection, parts of a transaction, a DDL
//! frame, a table not planned yet) builds as before.

use std::collections::HashMap;
use std::sync::Arc;

use outflow_core::{ChangeBatch, SchemaVersion};

use super::{chunk_end, chunk_rows, parts, Applier};
use crate::plan::TablePlan;
use crate::stage::{Batcher, Cx, Stmt};

/// What building a frame's statements ahead needs, taken from an applier with
/// [`Applier::stager`]; it owns everything, so it can run on another task.
pub struct Stager {
    plans: Arc<Vec<TablePlan>>,
    by_version: Arc<HashMap<SchemaVersion, usize>>,
    batcher: Batcher,
    spread: bool,
    max_txn_changes: usize,
}

/// A frame's statements built by a [`Stager`]; hand them back with
/// [`Applier::stage_next`].
pub struct Staged {
    seq: u64,
    /// The source transactions they cover: `0..end`; `None` when the frame could not be
    /// built ahead (the applier builds it).
    end: Option<u32>,
    spread: bool,
    plans: Arc<Vec<TablePlan>>,
    stmts: Vec<Stmt>,
    batcher: Batcher,
}

impl Stager {
    /// Builds the statements of frame `seq`'s first target transaction, as the applier's
    /// fast path would.
    pub fn stage(mut self, seq: u64, batch: &ChangeBatch) -> Staged {
        let mut stmts = Vec::new();
        let end = self.build(batch, &mut stmts);
        if end.is_none() {
            self.batcher.reset();
            self.batcher.recycle_all(stmts.drain(..));
        }
        Staged {
            seq,
            end,
            spread: self.spread,
            plans: self.plans,
            stmts,
            batcher: self.batcher,
        }
    }

    fn build(&mut self, batch: &ChangeBatch, out: &mut Vec<Stmt>) -> Option<u32> {
        let n = u32::try_from(batch.transactions().len()).ok()?;
        if n == 0 || batch.ddl().is_some() || batch.continued() || batch.continues() {
            return None;
        }
        let end = if batch.is_compacted() {
            n
        } else {
            chunk_end(batch, 0, n, self.max_txn_changes)
        };
        let mut section_plans = Vec::with_capacity(batch.sections().len());
        for section in batch.sections() {
            section_plans.push(*self.by_version.get(&section.schema().version)?);
        }
        self.batcher.spread(self.spread);
        let cx = Cx {
            plans: &self.plans,
            sections: batch.sections(),
        };
        for (_, s, i) in chunk_rows(batch, 0, end) {
            let p = section_plans[s as usize];
            self.batcher.admit(cx, p, s, i, out).ok()?;
        }
        self.batcher.flush_all(cx, out).ok()?;
        // Held statements are what bounds the applier's memory (`max_pending_bytes`).
        let bytes: usize = out.iter().map(|s| s.sql.len()).sum();
        (bytes <= self.batcher.limits().max_pending_bytes).then_some(end)
    }
}

impl Applier {
    /// A [`Stager`] for the frame after the one about to be applied.
    pub fn stager(&mut self) -> Stager {
        let batcher = self
            .spare_batcher
            .take()
            .unwrap_or_else(|| Batcher::new(self.batcher.limits(), self.batcher.lanes()));
        Stager {
            plans: self.plans.clone(),
            by_version: self.by_version.clone(),
            spread: batcher.lanes() > 1,
            batcher,
            max_txn_changes: self.cfg.max_txn_changes.get(),
        }
    }

    /// Hands over the statements a [`Stager`] built, for the next [`Applier::apply`] of
    /// their frame (any other call drops them).
    pub fn stage_next(&mut self, staged: Staged) {
        self.drop_staged();
        self.staged = Some(staged);
    }

    /// The staged statements of target transaction `first..end` of frame `seq`, if they
    /// were built for exactly that, under the plans and lane split now in force; the
    /// batcher that built them becomes the applier's (it is clean, and the statements'
    /// buffers return to it).
    pub(super) fn take_staged(&mut self, seq: u64, first: u32, end: u32) -> Option<Vec<Stmt>> {
        let fits = self.staged.as_ref().is_some_and(|st| {
            st.seq == seq
                && first == 0
                && st.end == Some(end)
                && st.spread == self.spread
                && self.part == parts::Span::Whole
                && Arc::ptr_eq(&st.plans, &self.plans)
        });
        if !fits {
            self.drop_staged();
            return None;
        }
        let mut st = self.staged.take()?;
        std::mem::swap(&mut self.batcher, &mut st.batcher);
        self.spare_batcher = Some(st.batcher);
        Some(st.stmts)
    }

    /// Drops staged statements that will not run, keeping their batcher and buffers.
    fn drop_staged(&mut self) {
        if let Some(mut st) = self.staged.take() {
            st.batcher.recycle_all(st.stmts.drain(..));
            if Arc::ptr_eq(&st.plans, &self.plans) {
                self.spare_batcher = Some(st.batcher);
            }
        }
    }
}
