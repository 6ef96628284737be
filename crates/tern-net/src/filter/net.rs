//! Connecting to a scanner ([`Endpoint`], parsed by `tern-filter`) with a
//! deadline.

use std::fmt;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

pub use tern_filter::endpoint::{Endpoint, EndpointError};

/// A byte stream to a scanner (TCP or a Unix socket).
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

impl fmt::Debug for dyn Io {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<scanner connection>")
    }
}

/// Connects to `endpoint` within `timeout`.
pub(crate) async fn connect(endpoint: &Endpoint, timeout: Duration) -> io::Result<Box<dyn Io>> {
    let connect = async {
        Ok::<Box<dyn Io>, io::Error>(match endpoint {
            Endpoint::Tcp { host, port } => {
                let s = TcpStream::connect((host.as_str(), *port)).await?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
            Endpoint::Unix(path) => Box::new(UnixStream::connect(path).await?),
        })
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection to {endpoint} within {timeout:?}"),
        )),
    }
}
