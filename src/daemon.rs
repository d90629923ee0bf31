//! The long-running service: intake loop, outbox loop, shutdown, sd_notify.
