//! Everything that speaks to Bitbucket Cloud. The only module that knows Bitbucket's JSON.

pub mod accounts;
