//! Sans-IO VRRP state machine (RFC 3768/5798/9568 §6.4, with keepalived 2.2.7's choices
//! where the RFCs leave room; the timers and the state table are in docs/architecture.md).
//!
//! [`Instance::handle`] takes `(now, input)` and returns the [`Action`]s the driver must
//! carry out; [`Instance::next_deadline`] says when to call it with [`Input::Timer`].
//! No sockets, no clock: every row of the state table is a unit test with a fake clock.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::packet::Version;

/// The four states of a virtual router instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not started, or shut down.
    Initialize,
    /// Listening to a master; takes over when it falls silent.
    Backup,
    /// Holds the VIPs and advertises.
    Master,
    /// Interface down or a weight-0 track failing: never master.
    Fault,
}

impl State {
    /// All states, for gauges with one label per state.
    pub const ALL: [State; 4] = [
        State::Initialize,
        State::Backup,
        State::Master,
        State::Fault,
    ];

    /// Upper-case name as keepalived passes it to notify scripts.
    pub fn keepalived_name(self) -> &'static str {
        match self {
            State::Initialize => "STOP",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }

    /// Lower-case label for metrics and the state API.
    pub fn label(self) -> &'static str {
        match self {
            State::Initialize => "initialize",
            State::Backup => "backup",
            State::Master => "master",
            State::Fault => "fault",
        }
    }
}

/// Static parameters of one instance (a reload may replace them: [`Input::Configure`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Protocol version (decides the skew formula).
    pub version: Version,
    /// Configured priority, 1..=255 (255 = address owner).
    pub priority: u8,
    /// Our advertisement interval.
    pub advert_interval: Duration,
    /// Preempt a lower-priority master.
    pub preempt: bool,
    /// How long a lower-priority master is tolerated before we preempt it.
    pub preempt_delay: Duration,
    /// Our primary address on the interface (tie-break between equal priorities).
    pub primary: IpAddr,
    /// Delay of the second gratuitous ARP / NA burst after becoming master (0 = none).
    pub garp_delay: Duration,
    /// A member of a sync group: when its Master_Down timer runs out it only *wants* to
    /// be master ([`Instance::wants_master`]) and waits for [`Input::Sync`], as
    /// keepalived's sync groups do, so the group's VIPs never split between two hosts.
    pub sync: bool,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The daemon starts the instance.
    Startup,
    /// The daemon stops (SIGTERM): a master sends priority 0 and drops its VIPs.
    Shutdown,
    /// A validated advert from another router.
    Advert {
        /// Sender's IP source address.
        src: IpAddr,
        /// Sender's priority.
        priority: u8,
        /// Interval the sender announced (v3 backups adopt it).
        interval: Duration,
    },
    /// [`Instance::next_deadline`] has passed.
    Timer,
    /// New tracking outcome: `None` = fault (interface down or a weight-0 track failing),
    /// `Some(p)` = effective priority `p`.
    Tracking(Option<u8>),
    /// A reload changed the parameters of the running instance. Nothing is sent and the
    /// state is kept: a master's next advert carries the new priority (fed through
    /// [`Input::Tracking`], which the driver recomputes from it) and runs on the new
    /// interval from then on; a backup uses the new values from its next advert.
    Configure(Params),
    /// What the sync group decided for this member ([`crate::sync`]).
    Sync(Order),
}

/// A sync group's order to one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Every member wants to be master or is: a member that wants it becomes master.
    Master,
    /// Another member stepped down from master: a master steps down too, sending
    /// priority 0 first.
    Backup,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send an advert with this priority (0 = we are stopping).
    SendAdvert {
        /// Priority to put in the advert.
        priority: u8,
    },
    /// Add the VIPs to the interface.
    AddVips,
    /// Remove the VIPs from the interface.
    RemoveVips,
    /// Send one burst of gratuitous ARPs / unsolicited NAs for every VIP.
    Garp,
    /// The state changed (notify scripts, metrics, logs).
    Transition {
        /// Old state.
        from: State,
        /// New state.
        to: State,
    },
}

/// One VRRP instance's protocol state.
#[derive(Debug, Clone)]
pub struct Instance {
    params: Params,
    state: State,
    /// Effective priority from tracking; `None` while a fault holds.
    effective: Option<u8>,
    /// Interval learned from the master (v3); our own otherwise.
    master_adver_interval: Duration,
    adver_timer: Option<Instant>,
    master_down_timer: Option<Instant>,
    garp_timer: Option<Instant>,
    /// keepalived's `preempt_time`: until then a lower-priority master is tolerated.
    preempt_time: Option<Instant>,
    /// A sync group member whose Master_Down timer ran out, waiting for its group.
    wants_master: bool,
    /// How many times a higher-priority advert made this master step down (what the
    /// other members of a sync group follow).
    step_downs: u64,
}

impl Instance {
    /// A new instance in Initialize.
    pub fn new(params: Params) -> Instance {
        Instance {
            effective: Some(params.priority),
            master_adver_interval: params.advert_interval,
            params,
            state: State::Initialize,
            adver_timer: None,
            master_down_timer: None,
            garp_timer: None,
            preempt_time: None,
            wants_master: false,
            step_downs: 0,
        }
    }

    /// A sync group member in Backup whose Master_Down timer ran out: it becomes master
    /// when the whole group wants to ([`Input::Sync`]).
    pub fn wants_master(&self) -> bool {
        self.wants_master
    }

    /// How many times a higher-priority advert made this instance leave MASTER.
    pub fn step_downs(&self) -> u64 {
        self.step_downs
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Effective priority (0 while in fault).
    pub fn effective_priority(&self) -> u8 {
        self.effective.unwrap_or(0)
    }

    /// The interval the current master advertises (v3 learning), for display.
    pub fn master_adver_interval(&self) -> Duration {
        self.master_adver_interval
    }

    /// The earliest time [`Input::Timer`] must be delivered, if any timer runs.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.adver_timer, self.master_down_timer, self.garp_timer]
            .into_iter()
            .flatten()
            .min()
    }

    /// Skew_Time in µs precision, as keepalived computes it: v2 uses whole seconds of 1/256 s,
    /// v3 scales with the master's interval.
    pub fn skew_time(&self) -> Duration {
        skew_time(
            self.params.version,
            self.priority(),
            self.master_adver_interval,
        )
    }

    /// Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_interval * 3 + self.skew_time()
    }

    fn priority(&self) -> u8 {
        self.effective.unwrap_or(self.params.priority)
    }

    /// Feeds one input; returns the actions to perform, in order.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Startup => {
                if self.state == State::Initialize {
                    self.start(now, &mut out);
                }
            }
            Input::Shutdown => self.shutdown(&mut out),
            Input::Timer => self.timer(now, &mut out),
            Input::Advert {
                src,
                priority,
                interval,
            } => self.advert(now, src, priority, interval, &mut out),
            Input::Tracking(t) => self.tracking(now, t, &mut out),
            Input::Configure(p) => self.configure(now, p),
            Input::Sync(o) => self.sync(now, o, &mut out),
        }
        out
    }

    fn sync(&mut self, now: Instant, order: Order, out: &mut Vec<Action>) {
        match (order, self.state) {
            (Order::Master, State::Backup) if self.wants_master => self.become_master(now, out),
            (Order::Backup, State::Master) => {
                // As on shutdown: priority 0 lets whoever takes over do so in Skew_Time
                // rather than Master_Down_Interval.
                self.adver_timer = None;
                self.garp_timer = None;
                out.push(Action::SendAdvert { priority: 0 });
                out.push(Action::RemoveVips);
                self.go(State::Backup, out);
                self.master_down_timer = Some(now + self.master_down_interval());
            }
            _ => {}
        }
    }

    fn configure(&mut self, now: Instant, p: Params) {
        let shorter = p.advert_interval < self.params.advert_interval;
        self.params = p;
        if self.effective.is_none() && self.state == State::Initialize {
            // Not started: the configured priority is the starting point.
            self.effective = Some(self.params.priority);
        }
        match self.state {
            State::Master => {
                self.master_adver_interval = self.params.advert_interval;
                // The advert already scheduled keeps its time (no gap, no extra advert),
                // unless the new interval would send the next one sooner.
                if shorter {
                    let sooner = now + self.params.advert_interval;
                    self.adver_timer = self.adver_timer.map(|t| t.min(sooner));
                }
            }
            State::Backup => {
                // v3 keeps the interval learned from the master; v2 uses its own.
                if self.params.version == Version::V2 {
                    self.master_adver_interval = self.params.advert_interval;
                }
            }
            State::Initialize | State::Fault => {
                self.master_adver_interval = self.params.advert_interval;
            }
        }
        if self.params.preempt_delay.is_zero() {
            self.preempt_time = None;
        }
    }

    fn start(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.effective.is_none() {
            self.go(State::Fault, out);
        } else if self.priority() == 255 {
            self.become_master(now, out);
        } else {
            self.become_backup(now, out);
        }
    }

    fn shutdown(&mut self, out: &mut Vec<Action>) {
        if self.state == State::Master {
            out.push(Action::SendAdvert { priority: 0 });
            out.push(Action::RemoveVips);
        }
        self.clear_timers();
        self.preempt_time = None;
        if self.state != State::Initialize {
            self.go(State::Initialize, out);
        }
    }

    fn timer(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.garp_timer.is_some_and(|t| t <= now) {
            self.garp_timer = None;
            if self.state == State::Master {
                out.push(Action::Garp);
            }
        }
        match self.state {
            State::Master => {
                if self.adver_timer.is_some_and(|t| t <= now) {
                    out.push(Action::SendAdvert {
                        priority: self.priority(),
                    });
                    self.adver_timer = Some(now + self.params.advert_interval);
                }
            }
            State::Backup => {
                if self.master_down_timer.is_some_and(|t| t <= now) {
                    if self.params.sync {
                        // The group decides (Input::Sync); until then stay backup.
                        self.master_down_timer = None;
                        self.wants_master = true;
                    } else {
                        self.become_master(now, out);
                    }
                }
            }
            State::Initialize | State::Fault => {}
        }
    }

    fn advert(
        &mut self,
        now: Instant,
        src: IpAddr,
        priority: u8,
        interval: Duration,
        out: &mut Vec<Action>,
    ) {
        let local = self.priority();
        match self.state {
            State::Backup => {
                if priority == 0 {
                    // The master is stopping: take over after Skew_Time only.
                    self.master_down_timer = Some(now + self.skew_time());
                    self.wants_master = false;
                    return;
                }
                let delay_active = self.params.preempt_delay > Duration::ZERO
                    && self.preempt_time.is_none_or(|t| t > now);
                if !self.params.preempt || priority >= local || delay_active {
                    if self.params.preempt_delay > Duration::ZERO {
                        if priority >= local {
                            self.preempt_time = None;
                        } else if self.preempt_time.is_none() {
                            self.preempt_time = Some(now + self.params.preempt_delay);
                        }
                    }
                    if self.params.version == Version::V3 {
                        self.master_adver_interval = interval;
                    }
                    self.master_down_timer = Some(now + self.master_down_interval());
                    self.wants_master = false;
                }
                // Lower priority with preempt on: discard and let the timer run out.
            }
            State::Master => {
                if priority == 0 {
                    out.push(Action::SendAdvert { priority: local });
                    self.adver_timer = Some(now + self.params.advert_interval);
                } else if priority > local
                    || (priority == local && ip_greater(src, self.params.primary))
                {
                    if self.params.version == Version::V3 {
                        self.master_adver_interval = interval;
                    }
                    self.adver_timer = None;
                    self.garp_timer = None;
                    out.push(Action::RemoveVips);
                    self.step_downs += 1;
                    self.go(State::Backup, out);
                    self.master_down_timer = Some(now + self.master_down_interval());
                } else {
                    // RFC 9568 and keepalived: re-assert at once against a lower priority.
                    out.push(Action::SendAdvert { priority: local });
                    self.adver_timer = Some(now + self.params.advert_interval);
                }
            }
            State::Initialize | State::Fault => {}
        }
    }

    fn tracking(&mut self, now: Instant, t: Option<u8>, out: &mut Vec<Action>) {
        let was_fault = self.effective.is_none();
        self.effective = t;
        match (self.state, t) {
            (State::Initialize, _) => {}
            (State::Fault, Some(_)) => {
                if was_fault {
                    self.start(now, out);
                }
            }
            (State::Fault, None) => {}
            (State::Master, None) => {
                // Tell the backup at once rather than letting Master_Down run out.
                out.push(Action::SendAdvert { priority: 0 });
                out.push(Action::RemoveVips);
                self.clear_timers();
                self.go(State::Fault, out);
            }
            (State::Backup, None) => {
                self.clear_timers();
                self.go(State::Fault, out);
            }
            (State::Master | State::Backup, Some(_)) => {
                // New priority is carried by the next advert / used by the next timer.
            }
        }
    }

    fn become_master(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.master_down_timer = None;
        self.preempt_time = None;
        self.master_adver_interval = self.params.advert_interval;
        // Advert first, so an old master drops the VIP before our GARPs land (keepalived does the same).
        out.push(Action::SendAdvert {
            priority: self.priority(),
        });
        out.push(Action::AddVips);
        out.push(Action::Garp);
        self.adver_timer = Some(now + self.params.advert_interval);
        self.garp_timer = if self.params.garp_delay > Duration::ZERO {
            Some(now + self.params.garp_delay)
        } else {
            None
        };
        self.go(State::Master, out);
    }

    fn become_backup(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.master_adver_interval = self.params.advert_interval;
        self.adver_timer = None;
        self.garp_timer = None;
        if self.params.preempt_delay > Duration::ZERO {
            // keepalived: preempt_delay also counts from startup / leaving fault.
            self.preempt_time = Some(now + self.params.preempt_delay);
        }
        self.go(State::Backup, out);
        self.master_down_timer = Some(now + self.master_down_interval());
    }

    fn clear_timers(&mut self) {
        self.adver_timer = None;
        self.master_down_timer = None;
        self.garp_timer = None;
        self.master_adver_interval = self.params.advert_interval;
    }

    fn go(&mut self, to: State, out: &mut Vec<Action>) {
        let from = self.state;
        self.state = to;
        // Wanting to be master is a backup's waiting state only.
        if from != to {
            self.wants_master = false;
        }
        if from != to {
            out.push(Action::Transition { from, to });
        }
    }
}

/// Skew_Time for a priority and master interval, computed in µs (keepalived's
/// `VRRP_TIMER_SKEW`): v2 `(256 - prio) / 256` s, v3 `(256 - prio) * interval / 256`.
pub fn skew_time(version: Version, priority: u8, master_interval: Duration) -> Duration {
    let k = 256 - u64::from(priority);
    let us = match version {
        Version::V2 => k * 1_000_000 / 256,
        Version::V3 => k * duration_us(master_interval) / 256,
    };
    Duration::from_micros(us)
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Unsigned network-byte-order comparison of primary addresses for the equal-priority
/// tie-break (RFC 5798 §6.4.3).
pub fn ip_greater(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets() > b.octets(),
        (IpAddr::V6(a), IpAddr::V6(b)) => a.octets() > b.octets(),
        // Mixed families cannot meet in one instance; never step down on nonsense.
        _ => false,
    }
}

#[cfg(test)]
mod tests;
