//! The chaos suite's pure half: the history of a run, the checkers over it and the report
//! page drawn from it. No I/O beyond reading and writing a history file; the laboratory
//! that produces histories (namespaces, processes, faults) is `tether-chaos-lab`.

pub mod check;
pub mod history;
pub mod report;
