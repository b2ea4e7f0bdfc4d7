//! TFTP packets (RRQ, WRQ, DATA, ACK, ERROR, OACK): parse and encode on byte buffers.
//!
//! [`parse`] is total: any byte sequence gives a [`Packet`] or a [`PacketError`], never a
//! panic. It is strict: fields must be NUL-terminated, nothing may trail a packet, known
//! options must be in range (`blksize` 8..=65464, `timeout` 1..=255, `windowsize`
//! 1..=65535) and may appear once; unknown options in a request are ignored (RFC 2347).

use std::fmt;

/// Smallest block size a client may ask for (RFC 2348).
pub const MIN_BLKSIZE: u16 = 8;
/// Largest block size a client may ask for (RFC 2348).
pub const MAX_BLKSIZE: u16 = 65464;
/// Block size without a `blksize` option (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;

const OP_RRQ: u16 = 1;
const OP_WRQ: u16 = 2;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;

/// Errors from [`parse`]: what was wrong with the datagram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Fewer bytes than the smallest packet of that kind.
    #[error("packet too short: {len} bytes")]
    TooShort {
        /// The datagram's length.
        len: usize,
    },
    /// The first two bytes are not a TFTP opcode.
    #[error("unknown opcode {opcode}")]
    UnknownOpcode {
        /// The opcode read.
        opcode: u16,
    },
    /// A string field ran to the end of the datagram without its NUL.
    #[error("{field} is not terminated by a NUL byte")]
    Unterminated {
        /// Which field.
        field: &'static str,
    },
    /// A string field is not UTF-8.
    #[error("{field} is not valid utf-8")]
    NotUtf8 {
        /// Which field.
        field: &'static str,
    },
    /// A request with an empty file name.
    #[error("empty file name")]
    EmptyFilename,
    /// A transfer mode other than `octet` or `netascii`.
    #[error("unsupported transfer mode {mode:?}")]
    UnsupportedMode {
        /// The mode sent.
        mode: String,
    },
    /// A known option with a value that is not a number in its range.
    #[error("invalid value {value:?} for option {name}")]
    BadOption {
        /// The option's name, lowercased.
        name: String,
        /// The value sent.
        value: String,
    },
    /// A known option sent twice.
    #[error("option {name} appears twice")]
    DuplicateOption {
        /// The option's name, lowercased.
        name: String,
    },
    /// An option acknowledgement naming an option this crate does not know.
    #[error("unknown option {name} in option acknowledgement")]
    UnknownOption {
        /// The option's name as sent.
        name: String,
    },
    /// A DATA packet longer than the largest block size.
    #[error("data block of {len} bytes exceeds the largest block size")]
    DataTooLong {
        /// The payload's length.
        len: usize,
    },
    /// Bytes after the end of a complete packet.
    #[error("{count} unexpected bytes after the packet")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

impl PacketError {
    /// The TFTP error code a server answers this with: 8 for option problems, else 4.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            PacketError::BadOption { .. } | PacketError::DuplicateOption { .. } => {
                ErrorCode::OptionNegotiation
            }
            _ => ErrorCode::IllegalOperation,
        }
    }
}

/// Transfer mode of a request. Both are served as raw bytes by this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `octet`: raw bytes.
    Octet,
    /// `netascii`: text; this crate does not translate line endings.
    Netascii,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Octet => "octet",
            Mode::Netascii => "netascii",
        }
    }
}

/// The options of a request (RFC 2347), or the values of an option acknowledgement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// `blksize` (RFC 2348), 8..=65464.
    pub blksize: Option<u16>,
    /// `tsize` (RFC 2349): 0 in a read request, the file size in an acknowledgement.
    pub tsize: Option<u64>,
    /// `timeout` in seconds (RFC 2349), 1..=255.
    pub timeout: Option<u8>,
    /// `windowsize` (RFC 7440), 1..=65535.
    pub windowsize: Option<u16>,
}

impl RequestOptions {
    /// Whether no option is set.
    pub fn is_empty(&self) -> bool {
        *self == RequestOptions::default()
    }
}

/// A read or write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The file name as sent.
    pub filename: String,
    /// The transfer mode.
    pub mode: Mode,
    /// The known options sent; unknown ones are dropped.
    pub options: RequestOptions,
}

/// TFTP error codes (RFC 1350, RFC 2347).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 0: not defined, see the message.
    NotDefined,
    /// 1: file not found.
    FileNotFound,
    /// 2: access violation.
    AccessViolation,
    /// 3: disk full or allocation exceeded.
    DiskFull,
    /// 4: illegal TFTP operation.
    IllegalOperation,
    /// 5: unknown transfer ID.
    UnknownTransferId,
    /// 6: file already exists.
    FileExists,
    /// 7: no such user.
    NoSuchUser,
    /// 8: option negotiation failed (RFC 2347).
    OptionNegotiation,
    /// Any other code.
    Other(u16),
}

impl ErrorCode {
    /// The code on the wire.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::NotDefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::DiskFull => 3,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTransferId => 5,
            ErrorCode::FileExists => 6,
            ErrorCode::NoSuchUser => 7,
            ErrorCode::OptionNegotiation => 8,
            ErrorCode::Other(code) => code,
        }
    }

    /// The error code for a wire value.
    pub fn from_code(code: u16) -> ErrorCode {
        match code {
            0 => ErrorCode::NotDefined,
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTransferId,
            6 => ErrorCode::FileExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionNegotiation,
            other => ErrorCode::Other(other),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// A parsed TFTP packet; DATA borrows its payload from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Read request (opcode 1).
    Rrq(Request),
    /// Write request (opcode 2).
    Wrq(Request),
    /// A block of data (opcode 3).
    Data {
        /// Block number on the wire (wraps after 65535).
        block: u16,
        /// The payload.
        data: &'a [u8],
    },
    /// Acknowledgement (opcode 4).
    Ack {
        /// Block number acknowledged; 0 acknowledges an OACK.
        block: u16,
    },
    /// Error (opcode 5).
    Error {
        /// The error code.
        code: ErrorCode,
        /// The message (lossily decoded).
        message: String,
    },
    /// Option acknowledgement (opcode 6).
    Oack(RequestOptions),
}

/// Parses one datagram.
pub fn parse(datagram: &[u8]) -> Result<Packet<'_>, PacketError> {
    let len = datagram.len();
    if len < 2 {
        return Err(PacketError::TooShort { len });
    }
    let opcode = u16::from_be_bytes([datagram[0], datagram[1]]);
    let body = &datagram[2..];
    match opcode {
        OP_RRQ => parse_request(body).map(Packet::Rrq),
        OP_WRQ => parse_request(body).map(Packet::Wrq),
        OP_DATA => {
            if len < 4 {
                return Err(PacketError::TooShort { len });
            }
            let data = &datagram[4..];
            if data.len() > usize::from(MAX_BLKSIZE) {
                return Err(PacketError::DataTooLong { len: data.len() });
            }
            Ok(Packet::Data {
                block: u16::from_be_bytes([datagram[2], datagram[3]]),
                data,
            })
        }
        OP_ACK => {
            if len < 4 {
                return Err(PacketError::TooShort { len });
            }
            if len > 4 {
                return Err(PacketError::TrailingBytes { count: len - 4 });
            }
            Ok(Packet::Ack {
                block: u16::from_be_bytes([datagram[2], datagram[3]]),
            })
        }
        OP_ERROR => {
            if len < 5 {
                return Err(PacketError::TooShort { len });
            }
            let code = ErrorCode::from_code(u16::from_be_bytes([datagram[2], datagram[3]]));
            let mut rest = &datagram[4..];
            let message = take_field(&mut rest, "error message")?;
            if !rest.is_empty() {
                return Err(PacketError::TrailingBytes { count: rest.len() });
            }
            Ok(Packet::Error {
                code,
                message: String::from_utf8_lossy(message).into_owned(),
            })
        }
        OP_OACK => {
            let mut rest = body;
            parse_options(&mut rest, true).map(Packet::Oack)
        }
        opcode => Err(PacketError::UnknownOpcode { opcode }),
    }
}

fn parse_request(body: &[u8]) -> Result<Request, PacketError> {
    let mut rest = body;
    let filename = take_str(&mut rest, "file name")?;
    if filename.is_empty() {
        return Err(PacketError::EmptyFilename);
    }
    let mode = take_str(&mut rest, "mode")?;
    let mode = if mode.eq_ignore_ascii_case("octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case("netascii") {
        Mode::Netascii
    } else {
        return Err(PacketError::UnsupportedMode {
            mode: mode.to_owned(),
        });
    };
    let options = parse_options(&mut rest, false)?;
    Ok(Request {
        filename: filename.to_owned(),
        mode,
        options,
    })
}

fn parse_options(rest: &mut &[u8], reject_unknown: bool) -> Result<RequestOptions, PacketError> {
    let mut options = RequestOptions::default();
    while !rest.is_empty() {
        let name = take_str(rest, "option name")?;
        let value = take_str(rest, "option value")?;
        let lower = name.to_ascii_lowercase();
        let bad = || PacketError::BadOption {
            name: lower.clone(),
            value: value.to_owned(),
        };
        let duplicate = || PacketError::DuplicateOption {
            name: lower.clone(),
        };
        match lower.as_str() {
            "blksize" => {
                let v = parse_number(value)
                    .filter(|v| (u64::from(MIN_BLKSIZE)..=u64::from(MAX_BLKSIZE)).contains(v))
                    .ok_or_else(bad)?;
                set_once(&mut options.blksize, v as u16, duplicate)?;
            }
            "tsize" => {
                let v = parse_number(value).ok_or_else(bad)?;
                set_once(&mut options.tsize, v, duplicate)?;
            }
            "timeout" => {
                let v = parse_number(value)
                    .filter(|v| (1..=255).contains(v))
                    .ok_or_else(bad)?;
                set_once(&mut options.timeout, v as u8, duplicate)?;
            }
            "windowsize" => {
                let v = parse_number(value)
                    .filter(|v| (1..=65535).contains(v))
                    .ok_or_else(bad)?;
                set_once(&mut options.windowsize, v as u16, duplicate)?;
            }
            _ if reject_unknown => {
                return Err(PacketError::UnknownOption {
                    name: name.to_owned(),
                });
            }
            _ => {}
        }
    }
    Ok(options)
}

fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    duplicate: impl FnOnce() -> PacketError,
) -> Result<(), PacketError> {
    if slot.is_some() {
        return Err(duplicate());
    }
    *slot = Some(value);
    Ok(())
}

/// A decimal number of at most 20 digits with no sign, or `None`.
fn parse_number(value: &str) -> Option<u64> {
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

fn take_field<'a>(rest: &mut &'a [u8], field: &'static str) -> Result<&'a [u8], PacketError> {
    let Some(end) = rest.iter().position(|&b| b == 0) else {
        return Err(PacketError::Unterminated { field });
    };
    let value = &rest[..end];
    *rest = &rest[end + 1..];
    Ok(value)
}

fn take_str<'a>(rest: &mut &'a [u8], field: &'static str) -> Result<&'a str, PacketError> {
    let bytes = take_field(rest, field)?;
    std::str::from_utf8(bytes).map_err(|_| PacketError::NotUtf8 { field })
}

impl Packet<'_> {
    /// Appends the packet's wire form to `out`. NUL bytes inside strings are dropped so
    /// the result always parses back.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Packet::Rrq(request) => encode_request(OP_RRQ, request, out),
            Packet::Wrq(request) => encode_request(OP_WRQ, request, out),
            Packet::Data { block, data } => {
                encode_data_header(*block, out);
                out.extend_from_slice(data);
            }
            Packet::Ack { block } => encode_ack(*block, out),
            Packet::Error { code, message } => encode_error(*code, message, out),
            Packet::Oack(options) => {
                out.extend_from_slice(&OP_OACK.to_be_bytes());
                encode_options(options, out);
            }
        }
    }

    /// The packet's wire form in a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Appends the 4-byte header of a DATA packet for `block`.
pub fn encode_data_header(block: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&OP_DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
}

/// Appends an ACK packet for `block`.
pub fn encode_ack(block: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&OP_ACK.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
}

/// Appends an ERROR packet.
pub fn encode_error(code: ErrorCode, message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&OP_ERROR.to_be_bytes());
    out.extend_from_slice(&code.code().to_be_bytes());
    push_str(message, out);
}

fn encode_request(opcode: u16, request: &Request, out: &mut Vec<u8>) {
    out.extend_from_slice(&opcode.to_be_bytes());
    push_str(&request.filename, out);
    push_str(request.mode.as_str(), out);
    encode_options(&request.options, out);
}

fn encode_options(options: &RequestOptions, out: &mut Vec<u8>) {
    let mut push = |name: &str, value: Option<u64>| {
        if let Some(value) = value {
            push_str(name, out);
            push_str(&value.to_string(), out);
        }
    };
    push("blksize", options.blksize.map(u64::from));
    push("tsize", options.tsize);
    push("timeout", options.timeout.map(u64::from));
    push("windowsize", options.windowsize.map(u64::from));
}

fn push_str(value: &str, out: &mut Vec<u8>) {
    out.extend(value.bytes().filter(|&b| b != 0));
    out.push(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(packet: Packet<'_>) {
        let bytes = packet.to_bytes();
        assert_eq!(parse(&bytes).as_ref(), Ok(&packet), "bytes {bytes:?}");
    }

    #[test]
    fn every_packet_kind_round_trips() {
        let options = RequestOptions {
            blksize: Some(1468),
            tsize: Some(0),
            timeout: Some(3),
            windowsize: Some(16),
        };
        round_trip(Packet::Rrq(Request {
            filename: "1234abcd/start4.elf".into(),
            mode: Mode::Octet,
            options,
        }));
        round_trip(Packet::Wrq(Request {
            filename: "x".into(),
            mode: Mode::Netascii,
            options: RequestOptions::default(),
        }));
        round_trip(Packet::Data {
            block: 65535,
            data: b"hello",
        });
        round_trip(Packet::Data {
            block: 0,
            data: b"",
        });
        round_trip(Packet::Ack { block: 7 });
        round_trip(Packet::Error {
            code: ErrorCode::FileNotFound,
            message: "file not found".into(),
        });
        round_trip(Packet::Error {
            code: ErrorCode::Other(99),
            message: String::new(),
        });
        round_trip(Packet::Oack(RequestOptions {
            tsize: Some(u64::MAX),
            ..RequestOptions::default()
        }));
    }

    #[test]
    fn parses_a_request_as_real_clients_send_it() {
        let datagram = b"\0\x01bootcode.bin\0OCTET\0TSIZE\x000\0BlkSize\x001024\0foo\0bar\0";
        let Ok(Packet::Rrq(request)) = parse(datagram) else {
            panic!("not a read request: {:?}", parse(datagram));
        };
        assert_eq!(request.filename, "bootcode.bin");
        assert_eq!(request.mode, Mode::Octet);
        assert_eq!(request.options.blksize, Some(1024));
        assert_eq!(request.options.tsize, Some(0));
        assert_eq!(request.options.windowsize, None);
    }

    #[test]
    fn option_bounds_are_enforced() {
        let rrq = |opt: &str, value: &str| {
            let mut bytes = b"\0\x01f\0octet\0".to_vec();
            bytes.extend_from_slice(opt.as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(value.as_bytes());
            bytes.push(0);
            parse(&bytes).map(|p| match p {
                Packet::Rrq(r) => r.options,
                other => panic!("not a read request: {other:?}"),
            })
        };
        assert_eq!(rrq("blksize", "8").map(|o| o.blksize), Ok(Some(8)));
        assert_eq!(rrq("blksize", "65464").map(|o| o.blksize), Ok(Some(65464)));
        assert!(matches!(
            rrq("blksize", "7"),
            Err(PacketError::BadOption { .. })
        ));
        assert!(matches!(
            rrq("blksize", "65465"),
            Err(PacketError::BadOption { .. })
        ));
        assert_eq!(rrq("timeout", "255").map(|o| o.timeout), Ok(Some(255)));
        assert!(matches!(
            rrq("timeout", "0"),
            Err(PacketError::BadOption { .. })
        ));
        assert!(matches!(
            rrq("timeout", "256"),
            Err(PacketError::BadOption { .. })
        ));
        assert_eq!(
            rrq("windowsize", "65535").map(|o| o.windowsize),
            Ok(Some(65535))
        );
        assert!(matches!(
            rrq("windowsize", "0"),
            Err(PacketError::BadOption { .. })
        ));
        assert!(matches!(
            rrq("windowsize", "65536"),
            Err(PacketError::BadOption { .. })
        ));
        assert!(matches!(
            rrq("tsize", "-1"),
            Err(PacketError::BadOption { .. })
        ));
        assert!(matches!(
            rrq("tsize", "+1"),
            Err(PacketError::BadOption { .. })
        ));
        assert!(matches!(
            rrq("tsize", "99999999999999999999999"),
            Err(PacketError::BadOption { .. })
        ));
        assert_eq!(
            rrq("tsize", "18446744073709551615").map(|o| o.tsize),
            Ok(Some(u64::MAX))
        );
        assert!(matches!(
            rrq("tsize", "18446744073709551616"),
            Err(PacketError::BadOption { .. })
        ));
        assert_eq!(
            parse(b"\0\x01f\0octet\0tsize\x000\0TSIZE\x000\0"),
            Err(PacketError::DuplicateOption {
                name: "tsize".into()
            })
        );
    }

    #[test]
    fn malformed_packets_are_typed_errors() {
        assert_eq!(parse(b""), Err(PacketError::TooShort { len: 0 }));
        assert_eq!(parse(b"\0"), Err(PacketError::TooShort { len: 1 }));
        assert_eq!(
            parse(b"\0\x09"),
            Err(PacketError::UnknownOpcode { opcode: 9 })
        );
        assert_eq!(
            parse(b"\0\x01"),
            Err(PacketError::Unterminated { field: "file name" })
        );
        assert_eq!(parse(b"\0\x01\0octet\0"), Err(PacketError::EmptyFilename));
        assert_eq!(
            parse(b"\0\x01f\0octet"),
            Err(PacketError::Unterminated { field: "mode" })
        );
        assert!(matches!(
            parse(b"\0\x01f\0mail\0"),
            Err(PacketError::UnsupportedMode { .. })
        ));
        assert_eq!(
            parse(b"\0\x01\xff\0octet\0"),
            Err(PacketError::NotUtf8 { field: "file name" })
        );
        assert_eq!(
            parse(b"\0\x01f\0octet\0blksize\0"),
            Err(PacketError::Unterminated {
                field: "option value"
            })
        );
        assert_eq!(parse(b"\0\x04\0"), Err(PacketError::TooShort { len: 3 }));
        assert_eq!(
            parse(b"\0\x04\0\x01\0"),
            Err(PacketError::TrailingBytes { count: 1 })
        );
        assert_eq!(
            parse(b"\0\x05\0\x01"),
            Err(PacketError::TooShort { len: 4 })
        );
        assert_eq!(
            parse(b"\0\x05\0\x01x"),
            Err(PacketError::Unterminated {
                field: "error message"
            })
        );
        assert!(matches!(
            parse(b"\0\x06foo\x001\0"),
            Err(PacketError::UnknownOption { .. })
        ));
        let mut long = vec![0, 3, 0, 1];
        long.resize(4 + usize::from(MAX_BLKSIZE) + 1, 0);
        assert!(matches!(parse(&long), Err(PacketError::DataTooLong { .. })));
    }

    #[test]
    fn error_codes_map_option_problems_to_eight() {
        assert_eq!(
            parse(b"\0\x01f\0octet\0blksize\x001\0")
                .err()
                .map(|e| e.error_code()),
            Some(ErrorCode::OptionNegotiation)
        );
        assert_eq!(
            PacketError::EmptyFilename.error_code(),
            ErrorCode::IllegalOperation
        );
    }

    #[test]
    fn parse_is_total_on_pseudo_random_input() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..50_000 {
            let len = (next() % 64) as usize;
            const ALPHABET: &[u8] = b"\0\0\x0101blksizetimeoutwindowsize\xff\x06";
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect();
            if len >= 2 {
                bytes[0] = 0;
                bytes[1] = (next() % 8) as u8;
            }
            let _ = parse(&bytes);
        }
    }
}
