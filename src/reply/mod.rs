//! Replies: rendering from `templates/`, composing the RFC 5322 message, and the outbox
//! sender.

pub mod compose;
pub mod render;

pub use compose::{compose, new_message_id, ComposeError, ReplyEnvelope};
pub use render::{render, RenderError, RenderedReply, ReplyVars, Templates};
