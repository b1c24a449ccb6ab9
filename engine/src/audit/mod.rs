//! `strata audit`: is this build reproducible? Evidence, in the spirit of
//! reprotest.

pub mod archive;
pub mod compare;
pub mod perturb;
pub mod reorder;
