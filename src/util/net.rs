//! Sockets: resolving `HOST:PORT` (an empty host means every address) and
//! listening with a chosen backlog, which std does not offer.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

/// Resolve `HOST:PORT`; `:PORT` means every address.
pub fn resolve(addr: &str) -> io::Result<SocketAddr> {
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    };
    full.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no such address")))
}

/// A non-blocking listener on `addr` with listen backlog `backlog`, and the
/// address it got (port 0 picks one).
pub fn listener(addr: &str, backlog: i32) -> io::Result<(mio::net::TcpListener, SocketAddr)> {
    let std_listener = listen(resolve(addr)?, backlog)?;
    std_listener.set_nonblocking(true)?;
    let l = mio::net::TcpListener::from_std(std_listener);
    let bound = l.local_addr()?;
    Ok((l, bound))
}

/// A blocking listener on `addr` with `SO_REUSEADDR` and listen backlog
/// `backlog`.
pub fn listen(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Make the connection close with RST instead of FIN (SO_LINGER 0), so that
/// even a close-delimited body reads as cut off.
pub fn set_linger_zero(stream: &mio::net::TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO));
}
