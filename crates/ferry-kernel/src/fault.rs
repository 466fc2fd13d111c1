//! Fault injection at one step of an attach, for the scenario tests that prove a failure
//! at any step names the step and leaves nothing behind (tests/faults.rs).
//!
//! Off unless ferryd starts with `FERRY_FAULT=attach:STEP` in its environment. ferryd
//! reads the variable once, at start ([`from_env`]): a value that is not one of the
//! steps stops ferryd from starting (so a typo cannot pass for a test that held), and an
//! armed step is logged as a warning. Nothing else arms it, and nothing changes it while
//! ferryd runs. The armed step then fails at every attach, with [`KernelError::Injected`]
//! in place of the kernel's answer, at the point the real step would have failed: the
//! steps before it done, none after it.
//!
//! The kernel steps are checked in [`crate::Netlink`]'s attach; `nft` and `dns` in
//! ferryd's connect and start, where it applies the firewall and writes the sandbox's
//! names.

use std::fmt;
use std::str::FromStr;

/// The environment variable ferryd reads at start.
pub const ENV: &str = "FERRY_FAULT";

/// One step of an attach, in the order a start or a connect runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttachStep {
    /// The firewall's elements for the endpoint (its published ports), one nftables
    /// transaction.
    Nft,
    /// The sandbox's names: its hosts and resolv.conf written, its records in the
    /// responder's table (put there by the commit before).
    Dns,
    /// The veth pair made, its host end on the bridge.
    Veth,
    /// The pair's peer in the sandbox's namespace. ferry makes it there in the create
    /// request (no separate move), so a failed move shows here: the pair exists, the
    /// sandbox's end cannot be used.
    Move,
    /// The endpoint's address on its interface in the sandbox.
    Address,
    /// The interface in the sandbox brought up.
    Up,
    /// The sandbox's default route via the network's gateway (only on the endpoint that
    /// carries it).
    Route,
}

impl AttachStep {
    pub const ALL: [AttachStep; 7] = [
        AttachStep::Nft,
        AttachStep::Dns,
        AttachStep::Veth,
        AttachStep::Move,
        AttachStep::Address,
        AttachStep::Up,
        AttachStep::Route,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttachStep::Nft => "nft",
            AttachStep::Dns => "dns",
            AttachStep::Veth => "veth",
            AttachStep::Move => "move",
            AttachStep::Address => "address",
            AttachStep::Up => "up",
            AttachStep::Route => "route",
        }
    }
}

impl fmt::Display for AttachStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttachStep {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        AttachStep::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a step of an attach"))
    }
}

/// `attach:STEP`, the one form [`ENV`] takes.
pub fn parse(value: &str) -> Result<AttachStep, String> {
    let steps: Vec<&str> = AttachStep::ALL.iter().map(|s| s.as_str()).collect();
    value
        .strip_prefix("attach:")
        .ok_or_else(|| format!("{value:?} does not start with \"attach:\""))?
        .parse()
        .map_err(|e| format!("{ENV}: {e}; the steps are {}", steps.join(", ")))
}

/// The step [`ENV`] arms, if it is set; an error for a value that names no step.
pub fn from_env() -> Result<Option<AttachStep>, String> {
    match std::env::var(ENV) {
        Ok(v) => parse(&v).map(Some),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(format!("{ENV}: {e}")),
    }
}

/// The armed step, checked at each step: `Err` at the armed one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults(Option<AttachStep>);

impl Faults {
    pub fn armed(step: Option<AttachStep>) -> Faults {
        Faults(step)
    }

    pub fn step(&self) -> Option<AttachStep> {
        self.0
    }

    pub fn check(&self, step: AttachStep) -> Result<(), crate::KernelError> {
        match self.0 {
            Some(armed) if armed == step => Err(crate::KernelError::Injected { step }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_attach_and_a_known_step_arm_a_fault() {
        for s in AttachStep::ALL {
            assert_eq!(parse(&format!("attach:{s}")), Ok(s));
        }
        for bad in [
            "",
            "attach:",
            "move",
            "attach:mov",
            "attach:Move",
            "detach:move",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} armed a fault");
        }
    }

    #[test]
    fn the_armed_step_fails_naming_itself_and_no_other_does() {
        let f = Faults::armed(Some(AttachStep::Route));
        let e = f.check(AttachStep::Route).unwrap_err();
        assert!(e.to_string().contains("route"), "{e}");
        assert!(f.check(AttachStep::Address).is_ok());
        assert!(Faults::default().check(AttachStep::Route).is_ok());
    }
}
