//! The exit-status policy shared by every tool (DESIGN.md section 2).

use std::process::ExitCode;

/// How a run ended. Statuses merge: the most serious one wins, so a tool
/// can keep going after a bad record and still report it at the end.
///
/// Severity order: `Ok` < `No` < `TempFail` < `Error`. An error outranks a
/// busy lock because retrying will not fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Status {
    /// 0: every record fine.
    #[default]
    Ok,
    /// 1: a check answered "no" (like grep finding nothing, diff finding a
    /// difference): an image not acceptable, a mismatch.
    No,
    /// 75 (`EX_TEMPFAIL`): a lock was busy; try again later.
    TempFail,
    /// 2: an error happened on some record, or bad usage.
    Error,
}

impl Status {
    /// The numeric exit code.
    pub fn code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::No => 1,
            Status::Error => 2,
            Status::TempFail => 75,
        }
    }

    /// Keep the more serious of two statuses.
    pub fn merge(&mut self, other: Status) {
        if other > *self {
            *self = other;
        }
    }
}

impl From<Status> for ExitCode {
    fn from(s: Status) -> ExitCode {
        ExitCode::from(s.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones() {
        assert_eq!(Status::Ok.code(), 0);
        assert_eq!(Status::No.code(), 1);
        assert_eq!(Status::Error.code(), 2);
        assert_eq!(Status::TempFail.code(), 75);
    }

    #[test]
    fn merge_keeps_the_most_serious() {
        let mut s = Status::Ok;
        s.merge(Status::No);
        assert_eq!(s, Status::No);
        s.merge(Status::Ok);
        assert_eq!(s, Status::No);
        s.merge(Status::Error);
        s.merge(Status::TempFail);
        assert_eq!(s, Status::Error);
        let mut t = Status::No;
        t.merge(Status::TempFail);
        assert_eq!(t, Status::TempFail);
    }
}
