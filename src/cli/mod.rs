//! The commands of the `delistd` binary.

pub mod cases;
pub mod inspect;
