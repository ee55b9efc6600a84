//! The chaos suite: real partitions and kills against real processes (not yet built).

pub mod check;
pub mod history;
