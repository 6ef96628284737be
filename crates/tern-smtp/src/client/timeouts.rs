//! Which RFC 5321 4.5.3.2 timer applies ([`TimeoutClass`], [`ClientTimeouts`]).

use std::fmt;
use std::time::Duration;

/// Which RFC 5321 4.5.3.2 timer applies while the session waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutClass {
    /// Waiting for the greeting (4.5.3.2.1, 5 minutes).
    Greeting,
    /// Waiting for the reply to EHLO, HELO, STARTTLS, AUTH, RSET or QUIT
    /// (5 minutes, as for MAIL).
    Command,
    /// The driver runs the TLS handshake (not in RFC 5321; 5 minutes, as
    /// Postfix's `smtp_starttls_timeout`).
    TlsHandshake,
    /// Waiting for the reply to MAIL (4.5.3.2.2, 5 minutes).
    Mail,
    /// Waiting for the reply to RCPT (4.5.3.2.3, 5 minutes).
    Rcpt,
    /// Waiting for the 354 to DATA (4.5.3.2.4, 2 minutes).
    DataInit,
    /// Writing message content: each write (4.5.3.2.5, 3 minutes).
    DataBlock,
    /// Waiting for the reply to the end of data (4.5.3.2.6, 10 minutes).
    DataTermination,
}

impl fmt::Display for TimeoutClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutClass::Greeting => "the greeting",
            TimeoutClass::Command => "a command reply",
            TimeoutClass::TlsHandshake => "the TLS handshake",
            TimeoutClass::Mail => "the MAIL reply",
            TimeoutClass::Rcpt => "the RCPT reply",
            TimeoutClass::DataInit => "the DATA reply",
            TimeoutClass::DataBlock => "a data block write",
            TimeoutClass::DataTermination => "the end-of-data reply",
        })
    }
}

/// The durations of the client timers; the defaults are RFC 5321
/// 4.5.3.2's minimums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// [`TimeoutClass::Greeting`].
    pub greeting: Duration,
    /// [`TimeoutClass::Command`].
    pub command: Duration,
    /// [`TimeoutClass::TlsHandshake`].
    pub tls_handshake: Duration,
    /// [`TimeoutClass::Mail`].
    pub mail: Duration,
    /// [`TimeoutClass::Rcpt`].
    pub rcpt: Duration,
    /// [`TimeoutClass::DataInit`].
    pub data_init: Duration,
    /// [`TimeoutClass::DataBlock`].
    pub data_block: Duration,
    /// [`TimeoutClass::DataTermination`].
    pub data_termination: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        const MIN: u64 = 60;
        ClientTimeouts {
            greeting: Duration::from_secs(5 * MIN),
            command: Duration::from_secs(5 * MIN),
            tls_handshake: Duration::from_secs(5 * MIN),
            mail: Duration::from_secs(5 * MIN),
            rcpt: Duration::from_secs(5 * MIN),
            data_init: Duration::from_secs(2 * MIN),
            data_block: Duration::from_secs(3 * MIN),
            data_termination: Duration::from_secs(10 * MIN),
        }
    }
}

impl ClientTimeouts {
    /// The duration of one timer.
    pub fn get(&self, class: TimeoutClass) -> Duration {
        match class {
            TimeoutClass::Greeting => self.greeting,
            TimeoutClass::Command => self.command,
            TimeoutClass::TlsHandshake => self.tls_handshake,
            TimeoutClass::Mail => self.mail,
            TimeoutClass::Rcpt => self.rcpt,
            TimeoutClass::DataInit => self.data_init,
            TimeoutClass::DataBlock => self.data_block,
            TimeoutClass::DataTermination => self.data_termination,
        }
    }
}
