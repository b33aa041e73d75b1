//! Sync groups as keepalived does them, decided without IO: the members of a group move
//! between MASTER, BACKUP and FAULT together, so an outside VIP and an inside gateway VIP
//! never end up on two different hosts.
//!
//! Each member publishes a [`Member`] into the group's shared state; on every change each
//! member asks its [`Follower`] what to do:
//!
//! - **FAULT**: a member in fault puts every other member in fault (fed as a fault through
//!   the tracking input, see [`peer_fault`]).
//! - **MASTER**: a member whose Master_Down timer runs out only *wants* to be master; the
//!   members become master together once every one of them wants to or already is
//!   (keepalived's `vrrp_sync_can_goto_master`: prefer BACKUP to a split). A member not
//!   yet started (its interface missing) keeps the group from going master.
//! - **BACKUP**: when a master steps down because a higher priority advertised, the
//!   other masters of the group step down too (keepalived's `vrrp_sync_backup`).

use crate::fsm::{Order, State};

/// What one member publishes to its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Its own fault (link down, a weight-0 track failing), not one inherited from the
    /// group.
    pub fault: bool,
    /// Its state.
    pub state: State,
    /// In BACKUP with its Master_Down timer run out: ready to be master.
    pub wants_master: bool,
    /// How many times it stepped down from MASTER on a higher-priority advert (a count
    /// restarts at 0 when the member restarts).
    pub step_downs: u64,
}

impl Default for Member {
    fn default() -> Self {
        Member {
            fault: false,
            state: State::Initialize,
            wants_master: false,
            step_downs: 0,
        }
    }
}

/// Whether another member than `me` is in fault of its own.
pub fn peer_fault(members: &[Member], me: usize) -> bool {
    members.iter().enumerate().any(|(i, m)| i != me && m.fault)
}

/// One member's view of its group: the step-downs of the others it has already followed.
#[derive(Debug, Clone, Default)]
pub struct Follower {
    seen: Vec<u64>,
}

impl Follower {
    /// What member `me` must do now that the group's state is `members`, if anything.
    pub fn decide(&mut self, members: &[Member], me: usize) -> Option<Order> {
        self.seen.resize(members.len(), 0);
        // A step-down not yet followed: a count that grew (one that fell is a restart).
        let mut stepped_down = false;
        for (i, (m, seen)) in members.iter().zip(self.seen.iter_mut()).enumerate() {
            if i != me && m.step_downs > *seen {
                stepped_down = true;
            }
            *seen = m.step_downs;
        }
        let mine = members.get(me)?;
        let others = || members.iter().enumerate().filter(move |(i, _)| *i != me);
        match mine.state {
            State::Master if stepped_down => Some(Order::Backup),
            State::Backup
                if mine.wants_master
                    && others().all(|(_, m)| {
                        m.state == State::Master || (m.state == State::Backup && m.wants_master)
                    }) =>
            {
                Some(Order::Master)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(state: State, wants_master: bool) -> Member {
        Member {
            state,
            wants_master,
            ..Member::default()
        }
    }

    #[test]
    fn the_group_goes_master_only_when_every_member_wants_to() {
        let mut f = Follower::default();
        let ready = m(State::Backup, true);
        let waiting = m(State::Backup, false);
        assert_eq!(
            f.decide(&[ready, waiting], 0),
            None,
            "prefer BACKUP to a split"
        );
        assert_eq!(f.decide(&[ready, ready], 0), Some(Order::Master));
        // The others already master (they went first): follow.
        assert_eq!(
            f.decide(&[ready, m(State::Master, false)], 0),
            Some(Order::Master)
        );
        // A member not started yet, or in fault, holds the group back.
        assert_eq!(f.decide(&[ready, m(State::Initialize, false)], 0), None);
        assert_eq!(f.decide(&[ready, m(State::Fault, false)], 0), None);
        // Only a member that wants it is ordered.
        assert_eq!(f.decide(&[waiting, ready], 0), None);
    }

    #[test]
    fn a_master_follows_a_step_down_once() {
        let mut f = Follower::default();
        let master = m(State::Master, false);
        let mut other = m(State::Master, false);
        assert_eq!(f.decide(&[master, other], 0), None);
        other.state = State::Backup;
        other.step_downs = 1;
        assert_eq!(f.decide(&[master, other], 0), Some(Order::Backup));
        // Seen: not again for the same step-down (the group may go master again later).
        assert_eq!(f.decide(&[master, other], 0), None);
        // A restarted member counts from 0 again: not a step-down.
        other.step_downs = 0;
        assert_eq!(f.decide(&[master, other], 0), None);
        other.step_downs = 1;
        assert_eq!(f.decide(&[master, other], 0), Some(Order::Backup));
    }

    #[test]
    fn a_member_that_joins_as_backup_does_not_pull_the_masters_down() {
        let mut f = Follower::default();
        let master = m(State::Master, false);
        assert_eq!(f.decide(&[master, m(State::Initialize, false)], 0), None);
        assert_eq!(f.decide(&[master, m(State::Backup, false)], 0), None);
        // It becomes master with them once its own timer ran out.
        let mut g = Follower::default();
        assert_eq!(
            g.decide(&[master, m(State::Backup, true)], 1),
            Some(Order::Master)
        );
    }

    #[test]
    fn a_fault_of_another_member_is_a_fault_of_ours() {
        let mut faulty = m(State::Fault, false);
        faulty.fault = true;
        let fine = m(State::Master, false);
        assert!(peer_fault(&[fine, faulty], 0));
        assert!(
            !peer_fault(&[fine, faulty], 1),
            "its own fault is not a peer's"
        );
        // Following the group into fault is not a fault of one's own.
        assert!(!peer_fault(&[fine, m(State::Fault, false)], 0));
    }
}
