//! Replies: rendering from `templates/`, composing the RFC 5322 message, and sending it.
//!
//! * [`render`]  template + values → subject and body (header-safe).
//! * [`compose`] subject and body → the whole RFC 5322 reply (RFC 3834 headers, threading).
//! * [`builder`] the one reply builder, made from the config: kind, language, values and
//!   thread → the exact message and its outbox row. Every reply goes through it.
//! * [`send`]    one reply → SMTP (or a folder of `.eml` files).
//! * [`outbox`]  the loop that sends what the pipeline queued, with retries.

pub mod builder;
pub mod compose;
pub mod outbox;
pub mod render;
pub mod send;

pub use builder::{BuildError, Builder, Built, Thread};
pub use compose::{compose, new_message_id, ComposeError, ReplyEnvelope};
pub use render::{render, RenderError, RenderedReply, ReplyVars, Templates};
