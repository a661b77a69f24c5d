//! The per-event glue between the decoder, the schema tracker and the filters, for the
//! streaming loop's [`outflow_binlog::walk::Visitor`]: one call per event, one per row
//! event's table, no I/O.

use std::sync::{Arc, Mutex};

use outflow_binlog::decoder::TableHook;
use outflow_binlog::{Decoded, Event, Query, TableInfo};

use crate::filter::{Filter, TableDecision, TableFilterCache};
use crate::schema::{
    table_hook, EventPosition, QueryOutcome, SchemaError, SchemaTracker, SharedTracker,
};

/// Schema tracker and table filters, driven by decoded events.
///
/// Wiring: install [`SourceTables::hook`] on the decoder
/// ([`outflow_binlog::Decoder::set_table_hook`]); in the visitor, call
/// [`SourceTables::on_event`] for every event and [`SourceTables::wants`] from
/// `Visitor::wants`. A table the filters ignore has its rows skipped undecoded.
pub struct SourceTables {
    tracker: SharedTracker,
    filters: TableFilterCache,
}

impl SourceTables {
    /// Tables tracked by `tracker`, filtered by `filter`.
    pub fn new(tracker: SchemaTracker, filter: Filter) -> Self {
        SourceTables {
            tracker: Arc::new(Mutex::new(tracker)),
            filters: TableFilterCache::new(filter),
        }
    }

    /// The decoder hook that completes TABLE_MAPs from the tracker.
    pub fn hook(&self) -> TableHook {
        table_hook(self.tracker.clone())
    }

    /// The tracker (to save its history, or to resync a table after an error).
    pub fn tracker(&self) -> &SharedTracker {
        &self.tracker
    }

    /// Follows one event at `at`: DDL in QUERY events changes the tracked schema (the
    /// outcome says which tables changed or were truncated); a TABLE_MAP whose table did
    /// not match its tracked schema is an error here, with its position.
    pub fn on_event(
        &mut self,
        at: &EventPosition,
        d: &Decoded<'_>,
    ) -> Result<Option<QueryOutcome>, SchemaError> {
        // A poisoned lock means a panic elsewhere already failed the stream.
        let Ok(mut t) = self.tracker.lock() else {
            return Ok(None);
        };
        match &d.event {
            Event::Query(q) if !q.is_begin() && !q.is_commit() && !q.is_rollback() => {
                let mut buf = Vec::new();
                let text = q.inflate(&mut buf).map_err(|e| SchemaError::Unparsed {
                    at: at.to_string(),
                    table: None,
                    statement: "(compressed statement)".into(),
                    reason: e.to_string(),
                })?;
                let sql = String::from_utf8_lossy(text);
                let db = String::from_utf8_lossy(q.schema);
                let out = t.apply_query(at, &db, &sql)?;
                if out.seq.is_some() {
                    // Column plans are by name: recompute them after any definition change.
                    self.filters.clear();
                }
                Ok(Some(out))
            }
            Event::TableMap { table_id } => {
                t.take_table_map_error(*table_id, at)?;
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Whether the statement of a standalone QUERY event is to be shipped as DDL (see
    /// [`SchemaTracker::ships_ddl`]); `true` when it cannot tell (the builder reports a
    /// statement it cannot read).
    pub fn ships_statement(&self, q: &Query<'_>) -> bool {
        let mut buf = Vec::new();
        let Ok(text) = q.inflate(&mut buf) else {
            return true;
        };
        let Ok(t) = self.tracker.lock() else {
            return true;
        };
        t.ships_ddl(
            &String::from_utf8_lossy(q.schema),
            &String::from_utf8_lossy(text),
        )
    }

    /// Whether the rows of `table` are wanted (cached per table id).
    #[inline]
    pub fn wants(&mut self, table: &TableInfo) -> bool {
        self.filters.wants(table)
    }

    /// The filter decision, including column actions, for `table`.
    pub fn decision(&mut self, table: &TableInfo) -> &TableDecision {
        self.filters.on_table_map(table)
    }
}
