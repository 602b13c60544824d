//! The C ABI target: the exported functions called as a C program would, with in-bounds
//! buffers of fuzzed lengths and contents, on real descriptors of every kind.
//!
//! Every buffer handed over is exactly as long as the length that goes with it, followed by a
//! guard region; the call must return `0` or `SOCKET_ERROR`, never write past what it was
//! given, report an output length within the buffer it was given on success, and never let a
//! panic cross the boundary (a panic here aborts the fuzzer, as it would abort a C caller).
//! This is the one module of the crate with `unsafe`: the calls into the ABI.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;

use socksec_winsock::types::{
    GUID, SOCKET, SOCKET_PEER_TARGET_NAME, SOCKET_SECURITY_QUERY_INFO,
    SOCKET_SECURITY_QUERY_TEMPLATE, SOCKET_SECURITY_SETTINGS, SOCKSEC_PEER_IDENTITY,
};
use socksec_winsock::{ffi, translate};

/// Bytes after every buffer that no call may touch.
const GUARD: usize = 64;
const GUARD_BYTE: u8 = 0xe7;
/// Largest buffer handed over (bigger lengths are reduced modulo this).
const MAX_BUF: usize = 4096;

/// Descriptors of every kind the ABI may be given, made once.
struct Fds {
    _listener: TcpListener,
    tcp: TcpStream,
    _tcp_peer: TcpStream,
    tcp_unconnected: OwnedFd,
    udp: UdpSocket,
    unix: UnixStream,
    _unix_peer: UnixStream,
    file: OwnedFd,
}

fn fds() -> &'static Fds {
    static FDS: OnceLock<Fds> = OnceLock::new();
    FDS.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
        let tcp = TcpStream::connect(listener.local_addr().expect("its address"))
            .expect("a loopback connection");
        let (tcp_peer, _) = listener.accept().expect("the accepted end");
        let tcp_unconnected =
            OwnedFd::from(TcpListener::bind("127.0.0.1:0").expect("another socket"));
        let udp = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
        let (unix, unix_peer) = UnixStream::pair().expect("an AF_UNIX pair");
        let file = std::fs::File::open("/dev/null").expect("/dev/null");
        Fds {
            _listener: listener,
            tcp,
            _tcp_peer: tcp_peer,
            tcp_unconnected,
            udp,
            unix,
            _unix_peer: unix_peer,
            file: OwnedFd::from(file),
        }
    })
}

/// A buffer of `len` bytes from `content` (zero-padded), `shift` bytes into an allocation (so
/// that pointers are not always aligned), followed by the guard.
struct Buf {
    bytes: Vec<u8>,
    shift: usize,
    len: usize,
}

impl Buf {
    fn new(len: usize, content: &[u8], shift: usize) -> Self {
        let mut bytes = vec![0u8; shift + len + GUARD];
        let n = len.min(content.len());
        bytes[shift..shift + n].copy_from_slice(&content[..n]);
        bytes[shift + len..].fill(GUARD_BYTE);
        Self { bytes, shift, len }
    }

    fn ptr<T>(&mut self) -> *mut T {
        self.bytes[self.shift..].as_mut_ptr().cast()
    }

    fn check_guard(&self, call: &str) {
        assert!(
            self.bytes[self.shift + self.len..]
                .iter()
                .all(|&b| b == GUARD_BYTE),
            "{call} wrote past the {} bytes it was given",
            self.len
        );
    }
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    for (i, x) in b.iter_mut().enumerate() {
        *x = data.get(at + i).copied().unwrap_or(0);
    }
    u32::from_le_bytes(b)
}

/// Byte 0 picks the descriptor, byte 1 the call and the pointers' alignment, bytes 2..10 two
/// lengths, the rest is the content of the input buffer.
pub fn c_abi(data: &[u8]) {
    let f = fds();
    let socket: SOCKET = match data.first().copied().unwrap_or(0) % 8 {
        0 => f.tcp.as_raw_fd() as SOCKET,
        1 => f.tcp_unconnected.as_raw_fd() as SOCKET,
        2 => f.udp.as_raw_fd() as SOCKET,
        3 => f.unix.as_raw_fd() as SOCKET,
        4 => f.file.as_raw_fd() as SOCKET,
        5 => 1_000_000,
        6 => u64::MAX,
        _ => f.tcp.as_raw_fd() as SOCKET,
    };
    let call = data.get(1).copied().unwrap_or(0);
    let shift = usize::from(call >> 7);
    let len_a = u32_at(data, 2);
    let len_b = u32_at(data, 6);
    let content = data.get(10..).unwrap_or_default();
    // The buffer behind the input, and the length the call is told: the same.
    let buf_a = len_a as usize % MAX_BUF;
    let told_a = buf_a as u32;
    let buf_b = len_b as usize % MAX_BUF;
    let mut input = Buf::new(buf_a, content, shift);
    let null_input = call & 0x40 != 0;

    let ret = match call % 8 {
        0 => {
            let mut info = Buf::new(buf_b, &[], shift);
            let mut info_len = buf_b as u32;
            let template = if null_input {
                std::ptr::null()
            } else {
                input.ptr::<SOCKET_SECURITY_QUERY_TEMPLATE>().cast_const()
            };
            // SAFETY: the template is readable for `told_a` bytes (or NULL), the info buffer
            // writable for `info_len` bytes, the length pointer valid; no overlapped call.
            let ret = unsafe {
                ffi::WSAQuerySocketSecurity(
                    socket,
                    template,
                    told_a,
                    info.ptr::<SOCKET_SECURITY_QUERY_INFO>(),
                    &mut info_len,
                    std::ptr::null_mut(),
                    None,
                )
            };
            info.check_guard("WSAQuerySocketSecurity");
            if ret == 0 {
                assert!(
                    info_len as usize <= buf_b,
                    "success with a length {info_len} over the buffer's {buf_b}"
                );
            }
            ret
        }
        1 => {
            let settings = if null_input {
                std::ptr::null()
            } else {
                input.ptr::<SOCKET_SECURITY_SETTINGS>().cast_const()
            };
            // SAFETY: the settings are readable for `told_a` bytes (or NULL).
            unsafe {
                ffi::WSASetSocketSecurity(socket, settings, told_a, std::ptr::null_mut(), None)
            }
        }
        2 => {
            // SAFETY: the name is readable for `told_a` bytes.
            unsafe {
                ffi::WSASetSocketPeerTargetName(
                    socket,
                    input.ptr::<SOCKET_PEER_TARGET_NAME>().cast_const(),
                    told_a,
                    std::ptr::null_mut(),
                    None,
                )
            }
        }
        3 => {
            // SAFETY: the address is readable for `told_a` bytes.
            unsafe {
                ffi::WSADeleteSocketPeerTargetName(
                    socket,
                    input.ptr::<libc::sockaddr>().cast_const(),
                    told_a,
                    std::ptr::null_mut(),
                    None,
                )
            }
        }
        4 => {
            let mut guid = Buf::new(16, content, shift);
            let mut json = Buf::new(buf_b, &[], shift);
            let mut json_len = buf_b as u32;
            // SAFETY: 16 readable bytes for the GUID, `json_len` writable bytes for the JSON.
            let ret = unsafe {
                ffi::SocksecQuerySaDetails(
                    guid.ptr::<GUID>().cast_const(),
                    json.ptr::<libc::c_char>(),
                    &mut json_len,
                )
            };
            json.check_guard("SocksecQuerySaDetails");
            ret
        }
        5 => {
            let token = u64::from(len_a) << 32 | u64::from(len_b);
            let mut info = Buf::new(buf_b, &[], shift);
            let mut info_len = buf_b as u32;
            // SAFETY: `info_len` writable bytes behind the pointer.
            let ret = unsafe {
                ffi::SocksecGetTokenInformation(
                    token,
                    info.ptr::<SOCKSEC_PEER_IDENTITY>(),
                    &mut info_len,
                )
            };
            info.check_guard("SocksecGetTokenInformation");
            let _ = ffi::SocksecCloseToken(token);
            ret
        }
        _ => {
            let _ = translate::decode_info(content);
            0
        }
    };
    input.check_guard("the call");
    assert!(
        ret == 0 || ret == -1,
        "returned {ret}, not 0 or SOCKET_ERROR"
    );
}
