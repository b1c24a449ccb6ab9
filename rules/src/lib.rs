//! Rule kinds: typed parameters turned into actions.
//!
//! A rule knows what its step needs (command, environment, outputs, network)
//! and how that enters a key; it knows nothing of YAML, files on disk or how a
//! step is executed. The engine loads parameters from BUILD.yaml, builds the
//! input root, and executes what a rule describes.

pub mod builtin;
pub mod data_root;
pub mod image_pull;
pub mod layout;
pub mod platform;
pub mod run;
pub mod stage;
pub mod table;
mod text;
mod work;

pub use text::Text;
pub use work::Work;
