#![allow(dead_code)]
pub mod daemon;
pub mod fake_slack;
