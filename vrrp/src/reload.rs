//! What a reload changes, decided without IO: `(running Config, new Config) -> Plan`.
//!
//! An instance is identified by its **name**: the name is what notify scripts, logs,
//! metrics and sync groups already use, and it is unique in a valid file. Renaming an
//! instance is therefore a removal and an addition. Within one name, the settings that
//! give the instance its sockets and its place on the wire (interface, VRID, address
//! family, version, unicast source, multicast or unicast, sync group) cannot change under
//! a running instance: such an instance is restarted on its own. Every other setting is
//! applied to the running instance in place (see [`Change`]), and an instance whose
//! settings are equal is not touched at all.

use std::collections::HashMap;
use std::fmt;

use crate::config::{Config, InstanceConfig, Vip};

/// One setting of a running instance that a reload changes in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The configured priority: the state machine takes it, and the next advert carries it.
    Priority {
        /// Before.
        from: u8,
        /// After.
        to: u8,
    },
    /// VIPs added: a master adds them and announces them (gratuitous ARP / unsolicited NA
    /// for these only).
    VipsAdded(Vec<Vip>),
    /// VIPs removed: a master removes them from the interface.
    VipsRemoved(Vec<Vip>),
    /// Advert interval, preempt, preempt delay or the delay of the second ARP burst: the
    /// state machine takes them from its next timer on.
    Timers,
    /// The tracked objects: unchanged ones keep their health, new ones start unknown.
    Tracks,
    /// The notify command or its timeout: later transitions use the new one.
    Notify,
    /// Unicast peers, v2 password, v3 checksum convention or ARP repeat count: the next
    /// advert or received packet uses them.
    Wire,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vips = |v: &[Vip]| {
            v.iter()
                .map(|v| format!("{}/{}", v.addr, v.prefix))
                .collect::<Vec<_>>()
                .join(" ")
        };
        match self {
            Change::Priority { from, to } => write!(f, "priority {from} -> {to}"),
            Change::VipsAdded(v) => write!(f, "VIPs added: {}", vips(v)),
            Change::VipsRemoved(v) => write!(f, "VIPs removed: {}", vips(v)),
            Change::Timers => f.write_str("timers"),
            Change::Tracks => f.write_str("tracks"),
            Change::Notify => f.write_str("notify"),
            Change::Wire => f.write_str("peers/auth/checksum/garp"),
        }
    }
}

/// Why an instance must be restarted rather than changed in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Another interface: other sockets.
    Interface,
    /// Another VRID: another virtual router on the wire.
    Vrid,
    /// IPv4 to IPv6 or back: other sockets.
    Family,
    /// VRRPv2 to v3 or back: another protocol on the wire.
    Version,
    /// Another `unicast_src`: the send socket is bound to it.
    UnicastSource,
    /// Multicast to unicast or back: the receive socket's group membership.
    CastMode,
    /// Its sync group, or the group's members, changed: the members share one channel.
    SyncGroup,
}

impl fmt::Display for Restart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Restart::Interface => "interface changed",
            Restart::Vrid => "vrid changed",
            Restart::Family => "address family changed",
            Restart::Version => "version changed",
            Restart::UnicastSource => "unicast_src changed",
            Restart::CastMode => "multicast/unicast changed",
            Restart::SyncGroup => "sync group changed",
        })
    }
}

/// What a reload does, instance by instance (names in the new file's order, removed ones
/// in the old file's order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Equal settings: left running untouched.
    pub unchanged: Vec<String>,
    /// Changed in place, with what changed.
    pub changed: Vec<(String, Vec<Change>)>,
    /// Stopped (priority 0 if master) and started again with the new settings.
    pub restarted: Vec<(String, Restart)>,
    /// New in the file: started.
    pub added: Vec<String>,
    /// Gone from the file: priority 0 if master, VIPs removed, stopped.
    pub removed: Vec<String>,
    /// The `[admin]` address differs; it is not rebound (a restart applies it).
    pub admin_changed: bool,
}

impl Plan {
    /// Whether the reload changes nothing at all.
    pub fn is_noop(&self) -> bool {
        self.changed.is_empty()
            && self.restarted.is_empty()
            && self.added.is_empty()
            && self.removed.is_empty()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} unchanged", self.unchanged.len())?;
        for (n, c) in &self.changed {
            let c: Vec<String> = c.iter().map(ToString::to_string).collect();
            write!(f, "; {n} changed ({})", c.join(", "))?;
        }
        for (n, r) in &self.restarted {
            write!(f, "; {n} restarted ({r})")?;
        }
        for n in &self.added {
            write!(f, "; {n} added")?;
        }
        for n in &self.removed {
            write!(f, "; {n} removed")?;
        }
        Ok(())
    }
}

/// Decides the reload from the running configuration to `new`.
pub fn plan(old: &Config, new: &Config) -> Plan {
    let old_by_name: HashMap<&str, usize> = old
        .instances
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let mut out = Plan {
        admin_changed: old.admin != new.admin,
        ..Plan::default()
    };
    for (j, n) in new.instances.iter().enumerate() {
        let Some(&i) = old_by_name.get(n.name.as_str()) else {
            out.added.push(n.name.clone());
            continue;
        };
        let Some(o) = old.instances.get(i) else {
            continue;
        };
        if group_of(old, i) != group_of(new, j) {
            out.restarted.push((n.name.clone(), Restart::SyncGroup));
            continue;
        }
        match instance_changes(o, n) {
            Err(r) => out.restarted.push((n.name.clone(), r)),
            Ok(c) if c.is_empty() => out.unchanged.push(n.name.clone()),
            Ok(c) => out.changed.push((n.name.clone(), c)),
        }
    }
    for o in &old.instances {
        if !new.instances.iter().any(|n| n.name == o.name) {
            out.removed.push(o.name.clone());
        }
    }
    out
}

/// The sync group of instance `idx` as its members see it: the group's name and its
/// members' names in order (positions in the group's shared state follow that order).
fn group_of(cfg: &Config, idx: usize) -> Option<(String, Vec<String>)> {
    let g = cfg.sync_groups.iter().find(|g| g.members.contains(&idx))?;
    let names = g
        .members
        .iter()
        .filter_map(|&m| cfg.instances.get(m).map(|i| i.name.clone()))
        .collect();
    Some((g.name.clone(), names))
}

/// What changes between two settings of one instance, or why it must restart. Empty
/// when they are equal.
pub fn instance_changes(
    old: &InstanceConfig,
    new: &InstanceConfig,
) -> Result<Vec<Change>, Restart> {
    if old.interface != new.interface {
        return Err(Restart::Interface);
    }
    if old.vrid != new.vrid {
        return Err(Restart::Vrid);
    }
    if old.is_v6() != new.is_v6() {
        return Err(Restart::Family);
    }
    if old.version != new.version {
        return Err(Restart::Version);
    }
    if old.unicast_src != new.unicast_src {
        return Err(Restart::UnicastSource);
    }
    if old.unicast_peers.is_empty() != new.unicast_peers.is_empty() {
        return Err(Restart::CastMode);
    }
    let mut out = Vec::new();
    if old.priority != new.priority {
        out.push(Change::Priority {
            from: old.priority,
            to: new.priority,
        });
    }
    let added: Vec<Vip> = new
        .vips
        .iter()
        .filter(|v| !old.vips.iter().any(|o| o.addr == v.addr))
        .copied()
        .collect();
    let removed: Vec<Vip> = old
        .vips
        .iter()
        .filter(|v| !new.vips.iter().any(|n| n.addr == v.addr))
        .copied()
        .collect();
    if !added.is_empty() {
        out.push(Change::VipsAdded(added));
    }
    if !removed.is_empty() {
        out.push(Change::VipsRemoved(removed));
    }
    // A VIP whose prefix length changed is both: removed and added again with the new one.
    let reprefixed: Vec<Vip> = new
        .vips
        .iter()
        .filter(|v| {
            old.vips
                .iter()
                .any(|o| o.addr == v.addr && o.prefix != v.prefix)
        })
        .copied()
        .collect();
    if !reprefixed.is_empty() {
        let old_forms = old
            .vips
            .iter()
            .filter(|o| reprefixed.iter().any(|v| v.addr == o.addr))
            .copied()
            .collect();
        push_vips(&mut out, Change::VipsRemoved(old_forms));
        push_vips(&mut out, Change::VipsAdded(reprefixed));
    }
    if old.advert_interval != new.advert_interval
        || old.preempt != new.preempt
        || old.preempt_delay != new.preempt_delay
        || old.garp_delay != new.garp_delay
    {
        out.push(Change::Timers);
    }
    if old.tracks != new.tracks {
        out.push(Change::Tracks);
    }
    if old.notify != new.notify || old.notify_timeout != new.notify_timeout {
        out.push(Change::Notify);
    }
    if old.unicast_peers != new.unicast_peers
        || old.auth != new.auth
        || old.checksum != new.checksum
        || old.garp_repeat != new.garp_repeat
    {
        out.push(Change::Wire);
    }
    // The VIP order alone (same set) changes what the adverts list: a wire change.
    if out.is_empty() && old != new {
        out.push(Change::Wire);
    }
    Ok(out)
}

/// Merges VIPs into an existing `VipsAdded`/`VipsRemoved` entry of the same kind.
fn push_vips(out: &mut Vec<Change>, c: Change) {
    for e in out.iter_mut() {
        match (e, &c) {
            (Change::VipsAdded(a), Change::VipsAdded(b))
            | (Change::VipsRemoved(a), Change::VipsRemoved(b)) => {
                a.extend(b.iter().copied());
                return;
            }
            _ => {}
        }
    }
    out.push(c);
}

#[cfg(test)]
mod tests;
