//! The commands of the `delistd` binary.

pub mod inspect;
