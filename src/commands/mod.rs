//! One module per subcommand: thin orchestration over the library.

pub mod config;
