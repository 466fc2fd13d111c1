//! Scenario tests live beside this file, one per area; support code is in crates/ferry-testkit.
