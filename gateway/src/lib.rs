//! tether-gateway: being written; see its issue.
