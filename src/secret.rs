//! [`Secret`]: a value that must never be printed, such as a token or a client secret.
//!
//! A neutral leaf that imports nothing from the crate, so that every layer (config, the
//! clients, the store's cipher) can hold secrets without importing one another. Its
//! `Debug` and `Display` show `[redacted]`; [`Secret::expose`] is the one way to the value
//! and must only be called where the value is sent or stored encrypted, never in a log.

use std::fmt;

/// A value that must never be printed. `Debug` and `Display` show `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself, for the one place that sends it where it belongs.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
