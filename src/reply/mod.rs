//! Replies: rendering from `templates/`, composing the RFC 5322 message, and sending it.
//!
//! * [`render`]  template + values → subject and body (header-safe).
//! * [`compose`] subject and body → the whole RFC 5322 reply (RFC 3834 headers, threading).
//! * [`send`]    one reply → SMTP (or a folder of `.eml` files).
//! * [`outbox`]  the loop that sends what the pipeline queued, with retries.

pub mod compose;
pub mod outbox;
pub mod render;
pub mod send;

pub use compose::{compose, new_message_id, ComposeError, ReplyEnvelope};
pub use render::{render, RenderError, RenderedReply, ReplyVars, Templates};
