//! Everything that speaks to Slack: the Socket Mode sockets, the Web API and the
//! conversion between slack-morphism's types and ours.
//!
//! The only module that imports `slack_morphism` or `tokio_tungstenite`. The rest of the
//! daemon sees [`envelope`] types, [`crate::message::Message`] and [`web::SlackError`].

pub mod convert;
pub mod delivery;
pub mod envelope;
pub mod home;
pub mod socket;
pub mod views;
pub mod web;
