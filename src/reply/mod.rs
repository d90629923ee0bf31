//! Replies: rendering from `templates/` and the outbox sender.

pub mod render;

pub use render::{render, RenderError, RenderedReply, ReplyVars};
pub mod send;
pub mod outbox;
