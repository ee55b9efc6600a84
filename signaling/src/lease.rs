//! The authorization-lease schedule (S7) on an explicit clock: when each turn falls due,
//! which robots' leases a turn renews, and how a late turn catches up.
//!
//! A node renews the lease of every robot it holds each quarter lease, each renewal right
//! after a quorum check. Renewing a thousand robots at once held every relay on the node
//! behind a burst of lease frames (for up to 30 ms), so the robots are spread over up to 64
//! *groups*, one turn each per quarter lease, each turn with its own quorum check. Turns keep
//! to a fixed schedule: when a check outlasts a turn, the next check covers every group
//! that fell due meanwhile, so each robot still gets a lease about every quarter lease.

use crate::rooms::ConnId;
use std::time::Duration;

/// The lease schedule for one lease lifetime. Pure: the caller keeps the clock (the time
/// elapsed since its loop started) and the count of turns served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSchedule {
    ttl_ms: u64,
    groups: u64,
    quarter: Duration,
    turn: Duration,
}

/// The groups a turn renews, and the schedule's new count of turns served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueGroups {
    /// `due[g]`: whether group `g` is renewed now.
    pub due: Vec<bool>,
    /// Turns served once these are: pass it to the next [`LeaseSchedule::due`].
    pub served: u64,
}

impl DueGroups {
    /// Whether any group is due.
    pub fn any(&self) -> bool {
        self.due.iter().any(|d| *d)
    }
}

impl LeaseSchedule {
    /// The schedule for leases of `ttl_ms`. The node's configuration requires at least
    /// 40 ms; below 4 ms a turn would last no time at all.
    pub fn new(ttl_ms: u64) -> Self {
        let groups = lease_groups(ttl_ms);
        let quarter = Duration::from_millis(ttl_ms / 4);
        // `groups` is at most 64, so the cast is exact.
        let turn = quarter / groups as u32;
        Self {
            ttl_ms,
            groups,
            quarter,
            turn,
        }
    }

    /// The lease lifetime, for `lease` frames.
    pub fn ttl_ms(&self) -> u64 {
        self.ttl_ms
    }

    /// A quarter lease: how often each robot is renewed. A quorum check may take half of it.
    pub fn quarter(&self) -> Duration {
        self.quarter
    }

    /// How many groups (turns per quarter lease) the robots are spread over.
    pub fn groups(&self) -> u64 {
        self.groups
    }

    /// The length of one turn.
    pub fn turn(&self) -> Duration {
        self.turn
    }

    /// When turn `n` falls due, counted from the loop's start.
    pub fn turn_time(&self, n: u64) -> Duration {
        turn_time(self.turn, n)
    }

    /// The groups due `elapsed` after the loop's start when `served` turns have been
    /// served: every turn whose time has come and that was not served yet, each group at
    /// most once.
    pub fn due(&self, elapsed: Duration, served: u64) -> DueGroups {
        let (due, served) = due_groups(elapsed, self.turn, served, self.groups);
        DueGroups { due, served }
    }

    /// The group that renews connection `conn`'s lease.
    pub fn group_of(&self, conn: ConnId) -> u64 {
        lease_group(conn, self.groups)
    }
}

/// When turn `n` falls due, for turns of `turn`. Saturates rather than wrapping for
/// absurdly long turns (a lease of decades).
fn turn_time(turn: Duration, n: u64) -> Duration {
    let nanos = u64::try_from(turn.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(nanos.saturating_mul(n))
}

/// See [`LeaseSchedule::due`]: returns which groups are due and the new count of turns
/// served.
fn due_groups(elapsed: Duration, turn: Duration, served: u64, groups: u64) -> (Vec<bool>, u64) {
    let come =
        u64::try_from(elapsed.as_nanos() / turn.as_nanos().max(1)).unwrap_or(u64::MAX - 1) + 1;
    let mut due = vec![false; groups as usize];
    for t in served..come.min(served.saturating_add(groups)) {
        due[(t % groups) as usize] = true;
    }
    (due, come.max(served))
}

/// Which turn renews connection `conn`'s lease. Fibonacci hashing: connection ids come in
/// patterns (a robot, then its operator), which a plain modulo would crowd into a few turns.
fn lease_group(conn: ConnId, groups: u64) -> u64 {
    (conn.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % groups
}

/// Turns per quarter lease: up to 64, each turn at least 4 ms apart (a quorum check per
/// turn, skipped when the turn has no robot). With 1,000 robots a turn writes about 16
/// leases.
fn lease_groups(ttl_ms: u64) -> u64 {
    (ttl_ms / 4 / 4).clamp(1, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn groups_of(due: &DueGroups) -> Vec<usize> {
        (0..due.due.len()).filter(|g| due.due[*g]).collect()
    }

    #[test]
    fn lease_turns_are_at_least_4_ms_apart_and_at_most_64_per_quarter() {
        assert_eq!(lease_groups(1_000), 62);
        assert_eq!(lease_groups(10_000), 64);
        assert_eq!(lease_groups(200), 12);
        assert_eq!(lease_groups(40), 2);
        for ttl in [
            40, 41, 63, 64, 200, 1_000, 1_023, 1_024, 1_025, 10_000, 86_400_000,
        ] {
            let s = LeaseSchedule::new(ttl);
            assert!(s.turn() >= ms(4), "ttl {ttl}: turn {:?}", s.turn());
            assert!((1..=64).contains(&s.groups()));
            // The turns of one cycle fit in a quarter lease, with less than a turn to spare.
            let cycle = s.turn_time(s.groups());
            assert!(
                cycle <= s.quarter() && s.quarter() - cycle < s.turn(),
                "ttl {ttl}"
            );
        }
    }

    #[test]
    fn ttl_edge_cases() {
        // The smallest lease the configuration allows: 2 turns of 5 ms.
        let s = LeaseSchedule::new(40);
        assert_eq!((s.groups(), s.turn(), s.quarter()), (2, ms(5), ms(10)));
        // Where a group is added: ttl/16 groups, clamped.
        assert_eq!(LeaseSchedule::new(47).groups(), 2);
        assert_eq!(LeaseSchedule::new(48).groups(), 3);
        assert_eq!(LeaseSchedule::new(1_039).groups(), 64);
        assert_eq!(LeaseSchedule::new(1_024).groups(), 64);
        assert_eq!(LeaseSchedule::new(1_023).groups(), 63);
        // A quarter that does not divide evenly: 1,000 ms is 62 turns of 4.032… ms.
        let s = LeaseSchedule::new(1_000);
        assert_eq!(s.turn(), Duration::from_nanos(250_000_000 / 62));
        assert_eq!(s.ttl_ms(), 1_000);
        // Below the configured minimum: one group; a zero turn still makes progress.
        for ttl in [0, 1, 3, 15] {
            let s = LeaseSchedule::new(ttl);
            assert_eq!(s.groups(), 1);
            let d = s.due(Duration::ZERO, 0);
            assert_eq!((d.due, d.served), (vec![true], 1));
            assert_eq!(s.group_of(12_345), 0);
        }
        assert_eq!(LeaseSchedule::new(0).turn(), Duration::ZERO);
        // Absurdly long leases saturate instead of wrapping.
        let s = LeaseSchedule::new(u64::MAX);
        assert_eq!(s.groups(), 64);
        assert!(s.turn_time(u64::MAX) >= s.turn_time(1));
    }

    #[test]
    fn a_late_lease_turn_covers_every_group_that_fell_due_meanwhile() {
        let turn = ms(4);
        // On time: turn 0 at 0 ms serves group 0 alone.
        let (due, served) = due_groups(Duration::ZERO, turn, 0, 8);
        assert_eq!(
            (due, served),
            (
                vec![true, false, false, false, false, false, false, false],
                1
            )
        );
        // A quorum check took 10 ms: at 14 ms turns 1..=3 are due, one check for all three.
        let (due, served) = due_groups(ms(14), turn, 1, 8);
        assert_eq!(served, 4);
        assert_eq!(
            due,
            vec![false, true, true, true, false, false, false, false]
        );
        // More than a whole cycle late: every group once, and the schedule moves on.
        let (due, served) = due_groups(ms(100), turn, 4, 8);
        assert!(due.iter().all(|d| *d));
        assert_eq!(served, 26);
        assert_eq!(turn_time(turn, served), ms(104));
    }

    #[test]
    fn on_time_turns_serve_each_group_once_per_quarter_in_order() {
        // ttl 128 ms: 8 groups of 4 ms, a quarter of 32 ms.
        let s = LeaseSchedule::new(128);
        assert_eq!((s.groups(), s.turn()), (8, ms(4)));
        let mut served = 0;
        let mut order = Vec::new();
        for _ in 0..24 {
            // Woken exactly when the next turn falls due.
            let d = s.due(s.turn_time(served), served);
            assert_eq!(d.served, served + 1, "one turn per wake-up");
            let g = groups_of(&d);
            assert_eq!(g.len(), 1);
            order.push(g[0]);
            served = d.served;
        }
        let expected: Vec<usize> = (0..24).map(|t| t % 8).collect();
        assert_eq!(order, expected);
        assert_eq!(s.turn_time(served), ms(96), "three quarters in 24 turns");
    }

    #[test]
    fn a_wake_up_between_turns_serves_the_turn_that_came_and_waits_for_the_next() {
        let s = LeaseSchedule::new(128);
        // Woken a little late for turn 0, before turn 1.
        let d = s.due(ms(3), 0);
        assert_eq!((groups_of(&d), d.served), (vec![0], 1));
        // Woken early (a spurious wake-up): nothing new is due.
        let d = s.due(ms(3), 1);
        assert_eq!((groups_of(&d), d.served), (vec![], 1));
        assert!(!d.any());
        // Exactly on turn 1's boundary.
        let d = s.due(ms(4), 1);
        assert_eq!((groups_of(&d), d.served), (vec![1], 2));
        // Just before turn 3's: turn 2 only.
        let d = s.due(Duration::from_nanos(11_999_999), 2);
        assert_eq!((groups_of(&d), d.served), (vec![2], 3));
    }

    #[test]
    fn late_turns_wrap_around_the_groups() {
        let s = LeaseSchedule::new(128);
        // Served 6 turns, woken at 36 ms: turns 6..=9 are due, i.e. groups 6, 7, 0, 1.
        let d = s.due(ms(36), 6);
        assert_eq!((groups_of(&d), d.served), (vec![0, 1, 6, 7], 10));
        // Exactly one cycle late: 8 turns due, every group once.
        let d = s.due(ms(4 * 17), 10);
        assert!(d.due.iter().all(|x| *x));
        assert_eq!(d.served, 18);
    }

    #[test]
    fn a_very_late_turn_serves_each_group_once_and_the_schedule_skips_ahead() {
        let s = LeaseSchedule::new(128);
        // A 10 s stall (no quorum for a long time, or a paused process).
        let d = s.due(ms(10_000), 3);
        assert!(d.due.iter().all(|x| *x));
        assert_eq!(d.served, 2_501);
        // The next wake-up is the next turn on the original grid, not a burst of catch-up.
        assert_eq!(s.turn_time(d.served), ms(10_004));
        let d = s.due(ms(10_004), d.served);
        assert_eq!(
            (groups_of(&d), d.served),
            (vec![(2_501 % 8) as usize], 2_502)
        );
    }

    #[test]
    fn exhaustively_every_group_is_served_once_per_cycle_whatever_the_delays() {
        // An explicit clock: each wake-up comes at the scheduled time plus a delay that
        // varies from none to several turns (a slow quorum check). However late, no group
        // waits more than a cycle plus the delay, and none is served twice in a turn.
        let s = LeaseSchedule::new(128);
        let turn = s.turn();
        for pattern in 0..64u64 {
            let mut served = 0u64;
            let mut last = [None::<Duration>; 8];
            let mut clock = Duration::ZERO;
            for step in 0..200u64 {
                let delay = turn * ((pattern * 7 + step * 3) % (1 + pattern % 12)) as u32;
                clock = clock.max(s.turn_time(served)) + delay;
                let d = s.due(clock, served);
                assert!(
                    d.served > served,
                    "a wake-up at or after the due time serves"
                );
                for g in groups_of(&d) {
                    if let Some(prev) = last[g] {
                        let gap = clock - prev;
                        assert!(gap >= turn, "group {g} served twice within a turn");
                        assert!(
                            gap <= s.quarter() + delay + turn,
                            "pattern {pattern}: group {g} waited {gap:?}"
                        );
                    }
                    last[g] = Some(clock);
                }
                served = d.served;
            }
            assert!(last.iter().all(Option::is_some), "every group was served");
        }
    }

    #[test]
    fn robots_spread_evenly_over_the_lease_turns_whatever_the_pattern_of_their_ids() {
        // Robots alone, every other id (robot then operator), every fourth.
        for step in [1u64, 2, 4] {
            let mut turns = [0usize; 64];
            for conn in (1..).step_by(step as usize).take(6_400) {
                turns[lease_group(conn, 64) as usize] += 1;
            }
            assert!(
                turns.iter().all(|&n| (70..=130).contains(&n)),
                "step {step}: {turns:?}"
            );
        }
        let s = LeaseSchedule::new(10_000);
        assert_eq!(s.group_of(77), lease_group(77, 64));
    }
}
