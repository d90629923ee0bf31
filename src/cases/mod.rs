//! The SQLite case store: schema and migrations, messages, cases, history, outbox, SLA.
