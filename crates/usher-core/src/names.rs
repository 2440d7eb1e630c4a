//! The ledger's interned names: one copy of each distinct text its sessions and leases use.
//!
//! A license server's names repeat: a million sessions come from far fewer users, hosts
//! and programs, and a million leases name a handful of features, vendors and versions.
//! Interning makes every [`Name`] with the same text share one block, so a session or a
//! lease costs a pointer per name instead of a copy.
//!
//! Names nobody else uses any more are swept from the table whenever it has doubled since
//! the last sweep, so the table stays within twice the names in use (plus a small floor),
//! however many distinct names have come and gone.

use std::collections::HashSet;

use crate::{ClientInfo, Lease, Name, Session};

/// Fewest names the table holds before it is swept.
const SWEEP_FLOOR: usize = 1024;

/// The set of interned names.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    set: HashSet<Name>,
    /// The table is swept when it reaches this many names.
    sweep_at: usize,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            set: HashSet::new(),
            sweep_at: SWEEP_FLOOR,
        }
    }
}

impl Names {
    /// Makes `name` share the interned copy of its text, interning it if it is new.
    pub(crate) fn intern(&mut self, name: &mut Name) {
        if let Some(shared) = self.set.get(name.as_str()) {
            if !shared.shares_with(name) {
                *name = shared.clone();
            }
            return;
        }
        if self.set.len() >= self.sweep_at {
            self.sweep();
        }
        self.set.insert(name.clone());
    }

    /// Interns every name of a client.
    pub(crate) fn client(&mut self, client: &mut ClientInfo) {
        let ClientInfo {
            user,
            host,
            display,
            pid: _,
            program,
            program_version,
            address,
        } = client;
        for name in [user, host, display, program, program_version, address] {
            self.intern(name);
        }
    }

    /// Interns every name of a session.
    pub(crate) fn session(&mut self, session: &mut Session) {
        self.client(&mut session.client);
    }

    /// Interns every name of a lease.
    pub(crate) fn lease(&mut self, lease: &mut Lease) {
        for name in [
            &mut lease.feature,
            &mut lease.vendor,
            &mut lease.requested_version,
            &mut lease.pool_version,
        ] {
            self.intern(name);
        }
        if let Some(name) = &mut lease.token_for {
            self.intern(name);
        }
    }

    /// Drops the names only the table still holds.
    fn sweep(&mut self) {
        self.set.retain(|name| name.sharers() > 1);
        self.sweep_at = (2 * self.set.len()).max(SWEEP_FLOOR);
    }

    /// How many names the table holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_share_one_copy() {
        let mut names = Names::default();
        let mut a = Name::from("alice");
        let mut b = Name::from(String::from("alice"));
        let mut c = Name::from("bob");
        assert!(!a.shares_with(&b));
        names.intern(&mut a);
        names.intern(&mut b);
        names.intern(&mut c);
        assert!(a.shares_with(&b));
        assert!(!a.shares_with(&c));
        assert_eq!(a, "alice");
        assert_eq!(c, "bob");
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn unused_names_are_swept_and_the_table_stays_bounded() {
        let mut names = Names::default();
        // Names still in use survive every sweep.
        let mut kept: Vec<Name> = (0..10).map(|i| Name::from(format!("kept-{i}"))).collect();
        for name in &mut kept {
            names.intern(name);
        }
        // A stream of distinct names, each dropped at once (clients that came and went).
        for i in 0..100 * SWEEP_FLOOR {
            let mut passing = Name::from(format!("passing-{i}"));
            names.intern(&mut passing);
            assert!(names.len() <= SWEEP_FLOOR + 1, "{} names held", names.len());
        }
        for name in &kept {
            let mut again = Name::from(name.as_str());
            names.intern(&mut again);
            assert!(again.shares_with(name), "{name} was swept while in use");
        }
    }

    #[test]
    fn a_session_and_a_lease_share_their_texts() {
        let mut names = Names::default();
        let client = || ClientInfo {
            user: "alice".into(),
            host: "ws1".into(),
            display: "ws1:0".into(),
            pid: 1,
            program: "cad".into(),
            program_version: "1".into(),
            address: "127.0.0.1".into(),
        };
        let (mut one, mut two) = (client(), client());
        names.client(&mut one);
        names.client(&mut two);
        assert!(one.user.shares_with(&two.user));
        assert!(one.address.shares_with(&two.address));
        assert_eq!(one, two);
    }
}
