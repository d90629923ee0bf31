//! The TOML configuration file, loaded and validated once, with line-precise errors.
