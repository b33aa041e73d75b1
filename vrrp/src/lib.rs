//! tether-vrrp: being written; see its issue.
