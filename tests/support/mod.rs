#![allow(dead_code)]
pub mod blocks;
pub mod daemon;
pub mod fake_bitbucket;
pub mod fake_slack;
pub mod harness;
pub mod postgres;
