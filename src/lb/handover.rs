//! Hand-over of the HTTP listener to a new LB process started with the
//! same address, so that a restart refuses no connection.
//!
//! A running LB offers its listener on an abstract Unix socket named after
//! the listener's address (`resumelb-handover:127.0.0.1:8080`; abstract:
//! no file, gone with the process). A new LB whose bind fails with "address
//! in use" connects there and says `take PID`; the old one checks that the
//! new one runs as the same user (or root), gives up its offer and status
//! socket, passes the listening socket's descriptor (SCM_RIGHTS) with
//! `listener PID`, stops accepting and finishes its requests (see
//! `Clients::stop`). The socket itself never closes, so connections waiting
//! in its accept queue are accepted by the new process: none is refused or
//! reset, unlike with two listeners on SO_REUSEPORT, where closing one
//! resets the connections in its queue.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::time::Duration;

/// How long the new LB waits for the running one's answer.
const PATIENCE: Duration = Duration::from_secs(5);

/// How long the running LB, on its I/O thread, waits for the line a new
/// one sends as soon as it connects.
const ASKED: Duration = Duration::from_millis(500);

fn name(addr: SocketAddr) -> io::Result<UnixAddr> {
    UnixAddr::from_abstract_name(format!("resumelb-handover:{addr}").as_bytes())
}

/// Offer the listener on `addr` to a successor.
pub fn offer(addr: SocketAddr) -> io::Result<mio::net::UnixListener> {
    let l = UnixListener::bind_addr(&name(addr)?)?;
    l.set_nonblocking(true)?;
    Ok(mio::net::UnixListener::from_std(l))
}

/// The user a connected peer runs as.
fn peer_uid(s: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for getsockopt to write.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// A successor that asked for the listener, checked.
pub struct Successor {
    stream: UnixStream,
    pub pid: u32,
}

/// Read a successor's request off an accepted connection: its line, and
/// that it runs as this process's user or as root.
pub fn successor(stream: mio::net::UnixStream) -> io::Result<Successor> {
    use std::os::fd::IntoRawFd;
    // SAFETY: the descriptor is moved out of the mio stream.
    let stream = unsafe { UnixStream::from_raw_fd(stream.into_raw_fd()) };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(ASKED))?;
    stream.set_write_timeout(Some(ASKED))?;
    let uid = peer_uid(&stream)?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if uid != me && uid != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("a process of user {uid} asked for the listener; only user {me} or root may"),
        ));
    }
    let mut line = String::new();
    BufReader::new((&stream).take(100)).read_line(&mut line)?;
    let pid = line
        .strip_prefix("take ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a hand-over request: {:?}", line.trim()),
            )
        })?;
    Ok(Successor { stream, pid })
}

impl Successor {
    /// Pass the listener (`fd`) on.
    pub fn hand(self, fd: RawFd) -> io::Result<()> {
        let text = format!("listener {}\n", std::process::id());
        send_fd(&self.stream, fd, text.as_bytes())
    }
}

/// Ask the LB that listens on `addr` for its listener: none when no LB
/// offers one there. Returns the listener and the old LB's pid.
pub fn take(addr: SocketAddr) -> io::Result<Option<(std::net::TcpListener, u32)>> {
    let mut stream = match UnixStream::connect_addr(&name(addr)?) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.set_write_timeout(Some(PATIENCE))?;
    stream.write_all(format!("take {}\n", std::process::id()).as_bytes())?;
    let (fd, text) = recv_fd(&stream)?;
    // SAFETY: the descriptor came with the message and is ours alone.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    let pid = std::str::from_utf8(&text)
        .ok()
        .and_then(|t| t.strip_prefix("listener "))
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a bad hand-over answer"))?;
    // A listener it is, on the address asked for.
    if listener.local_addr()?.port() != addr.port() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the handed-over socket listens on another port",
        ));
    }
    listener.set_nonblocking(true)?;
    Ok(Some((listener, pid)))
}

/// Room for one descriptor's control message.
const CMSG_SPACE: usize = 64;

/// A message header over one data buffer and a control area of which
/// `control_len` bytes count; the caller keeps both alive while it is used.
fn header(iov: &mut libc::iovec, control: &mut [u8], control_len: usize) -> libc::msghdr {
    // SAFETY: msghdr is plain data, for which all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control_len.min(control.len());
    msg
}

fn send_fd(s: &UnixStream, fd: RawFd, data: &[u8]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut control = [0u8; CMSG_SPACE];
    // SAFETY: CMSG_SPACE is a size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let msg = header(&mut iov, &mut control, space);
    // SAFETY: every pointer in `msg` points at a live buffer of the stated
    // length, and the control message written through CMSG_FIRSTHDR fits
    // `control` (CMSG_SPACE of one int is 24 bytes).
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        if libc::sendmsg(s.as_raw_fd(), &msg, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn recv_fd(s: &UnixStream) -> io::Result<(RawFd, Vec<u8>)> {
    let mut data = vec![0u8; 128];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut control = [0u8; CMSG_SPACE];
    let mut msg = header(&mut iov, &mut control, CMSG_SPACE);
    // SAFETY: as in send_fd; the kernel writes at most msg_controllen
    // bytes of control data and iov_len bytes of data.
    unsafe {
        let n = libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the running LB closed the hand-over connection",
            ));
        }
        data.truncate(n as usize);
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the hand-over answer came without a descriptor",
            ));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
        Ok((fd, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_moves_between_processes_sockets() {
        // Both ends in one process: the descriptor still travels through
        // the kernel, and the received one accepts the original's queue.
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let waiting = std::net::TcpStream::connect(addr).expect("queued connection");
        let offer = offer(addr).expect("offer");
        let t = std::thread::spawn(move || take(addr));
        let conn = loop {
            match offer.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        let s = successor(conn).expect("a successor");
        assert_eq!(s.pid, std::process::id());
        s.hand(tcp.as_raw_fd()).expect("handed");
        drop(tcp);
        let (got, pid) = t.join().expect("thread").expect("taken").expect("offered");
        assert_eq!(pid, std::process::id());
        got.set_nonblocking(false).expect("blocking");
        let (mut c, _) = got.accept().expect("the queued connection");
        drop(waiting);
        let mut b = [0u8; 1];
        assert_eq!(c.read(&mut b).expect("eof"), 0);
        // Nobody offers on a port without an LB.
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        assert!(take(free.local_addr().expect("addr"))
            .expect("no error")
            .is_none());
    }
}
