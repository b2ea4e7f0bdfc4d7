//! The read-transfer state machine of a TFTP server: no sockets and no clocks.
//!
//! A [`ReadSession`] is fed events (an ACK, a timeout, an ERROR from the client, the client's
//! port closing) and answers with an [`Action`] (send the OACK, send these DATA blocks, wait,
//! done, give up). Blocks are
//! counted with 64-bit absolute numbers; the wire number is the low 16 bits, so files of more
//! than 65535 blocks roll over to block 0 as tftp-hpa, curl and the Pi firmware expect.
//! Windows follow RFC 7440; a duplicate or stale ACK never triggers a resend (no sorcerer's
//! apprentice): only a timeout or an ACK that moves forward does.

use std::time::Duration;

use crate::packet::{DEFAULT_BLKSIZE, RequestOptions};

/// What was agreed for one transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Bytes per DATA block.
    pub blksize: u16,
    /// DATA blocks sent before waiting for an ACK.
    pub windowsize: u16,
    /// The retransmission timeout the client negotiated, if it did.
    pub timeout: Option<Duration>,
}

/// Most payload bytes in one window: a window larger than the client's socket receive
/// buffer (208 KiB by default on Linux, counted with per-packet overhead) loses its tail
/// every time and stalls each window for a timeout, so large blocks get smaller windows.
pub const MAX_WINDOW_BYTES: u64 = 96 * 1024;

/// Negotiates a request's options against the server's limits for a source of `len` bytes.
///
/// The window size is also capped so a window carries at most [`MAX_WINDOW_BYTES`].
///
/// Returns the settings and the options to acknowledge in an OACK (`None`: the client asked
/// for no option this server knows, so the transfer starts with DATA 1).
pub fn negotiate(
    requested: &RequestOptions,
    len: u64,
    max_blksize: u16,
    max_windowsize: u16,
) -> (Settings, Option<RequestOptions>) {
    let blksize = requested
        .blksize
        .map(|b| b.min(max_blksize.max(crate::packet::MIN_BLKSIZE)));
    let window_cap = MAX_WINDOW_BYTES / u64::from(blksize.unwrap_or(DEFAULT_BLKSIZE));
    let window_cap = window_cap.clamp(1, u64::from(max_windowsize.max(1))) as u16;
    let oack = RequestOptions {
        blksize,
        tsize: requested.tsize.map(|_| len),
        timeout: requested.timeout,
        windowsize: requested.windowsize.map(|w| w.min(window_cap)),
    };
    let settings = Settings {
        blksize: oack.blksize.unwrap_or(DEFAULT_BLKSIZE),
        windowsize: oack.windowsize.unwrap_or(1),
        timeout: oack.timeout.map(|t| Duration::from_secs(u64::from(t))),
    };
    (settings, (!oack.is_empty()).then_some(oack))
}

/// What the server should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send (or resend) the option acknowledgement.
    SendOack(RequestOptions),
    /// Send DATA blocks `first..=last` (absolute numbers; see [`ReadSession::block`]).
    SendData {
        /// First absolute block number.
        first: u64,
        /// Last absolute block number.
        last: u64,
    },
    /// Nothing to send; keep waiting until the current deadline.
    Wait,
    /// Every block is acknowledged.
    Done,
    /// Retries are exhausted (or the client is gone) before the last block was sent.
    GiveUp,
    /// Retries are exhausted (or the client is gone) after the window holding the last
    /// block was sent, without its acknowledgement. The client most likely has the whole
    /// file and its final ACK was lost (RFC 1350 §6: the final ACK may be lost, which is why
    /// a client dallies); from the server's side this cannot be confirmed.
    Unconfirmed,
    /// The client sent an ERROR.
    Aborted,
}

/// Where one block lives in the source and what it is called on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// The block number on the wire.
    pub wire: u16,
    /// Byte offset in the source.
    pub offset: u64,
    /// Payload length (less than the block size only for the last block).
    pub len: usize,
}

/// The sending side of one read transfer.
#[derive(Debug, Clone)]
pub struct ReadSession {
    len: u64,
    settings: Settings,
    blocks: u64,
    oack: Option<RequestOptions>,
    acked: u64,
    sent: u64,
    retries: u32,
    max_retries: u32,
    finished: bool,
}

impl ReadSession {
    /// A session sending `len` bytes with `settings`, opening with `oack` if some, and
    /// retransmitting at most `max_retries` times in a row.
    pub fn new(
        len: u64,
        settings: Settings,
        oack: Option<RequestOptions>,
        max_retries: u32,
    ) -> ReadSession {
        let blksize = u64::from(settings.blksize.max(1));
        ReadSession {
            len,
            settings: Settings {
                blksize: blksize as u16,
                windowsize: settings.windowsize.max(1),
                ..settings
            },
            blocks: len / blksize + 1,
            oack,
            acked: 0,
            sent: 0,
            retries: 0,
            max_retries,
            finished: false,
        }
    }

    /// The agreed settings.
    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// How many DATA blocks the transfer has (the last one is shorter than the block size,
    /// possibly empty).
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Payload bytes the client has acknowledged.
    pub fn acked_bytes(&self) -> u64 {
        (self.acked * u64::from(self.settings.blksize)).min(self.len)
    }

    /// The first action: the OACK, or the first window of DATA.
    pub fn start(&mut self) -> Action {
        match self.oack {
            Some(oack) => Action::SendOack(oack),
            None => self.next_window(),
        }
    }

    /// Where absolute block `abs` (1-based) lives.
    pub fn block(&self, abs: u64) -> Block {
        let blksize = u64::from(self.settings.blksize);
        let offset = abs.saturating_sub(1).saturating_mul(blksize).min(self.len);
        Block {
            wire: abs as u16,
            offset,
            len: (self.len - offset).min(blksize) as usize,
        }
    }

    /// The client acknowledged wire block `block`.
    pub fn on_ack(&mut self, block: u16) -> Action {
        if self.finished {
            return Action::Wait;
        }
        if self.oack.is_some() {
            if block != 0 {
                return Action::Wait;
            }
            self.oack = None;
            self.retries = 0;
            return self.next_window();
        }
        let ahead = u64::from(block.wrapping_sub(self.acked as u16));
        if ahead == 0 || ahead > self.sent - self.acked {
            return Action::Wait;
        }
        self.acked += ahead;
        self.retries = 0;
        if self.acked == self.blocks {
            self.finished = true;
            return Action::Done;
        }
        self.next_window()
    }

    /// No acknowledgement arrived in time.
    pub fn on_timeout(&mut self) -> Action {
        if self.finished {
            return Action::Wait;
        }
        self.retries += 1;
        if self.retries > self.max_retries {
            return self.give_up();
        }
        match self.oack {
            Some(oack) => Action::SendOack(oack),
            None => Action::SendData {
                first: self.acked + 1,
                last: self.sent,
            },
        }
    }

    /// The client cannot be reached any more (ICMP port unreachable: its socket is closed),
    /// so waiting for retries is pointless.
    pub fn on_unreachable(&mut self) -> Action {
        if self.finished {
            return Action::Wait;
        }
        self.give_up()
    }

    /// Whether the last block has been sent (in the current window or an earlier one).
    pub fn last_block_sent(&self) -> bool {
        self.oack.is_none() && self.sent == self.blocks
    }

    /// Ends the session without its final acknowledgement: unconfirmed when the last block
    /// went out, given up otherwise.
    fn give_up(&mut self) -> Action {
        self.finished = true;
        if self.last_block_sent() {
            Action::Unconfirmed
        } else {
            Action::GiveUp
        }
    }

    /// The client sent an ERROR packet.
    pub fn on_error(&mut self) -> Action {
        if self.finished {
            return Action::Wait;
        }
        self.finished = true;
        Action::Aborted
    }

    /// The window after the last acknowledged block; after a partial ACK this resends the
    /// blocks the client missed (RFC 7440).
    fn next_window(&mut self) -> Action {
        let first = self.acked + 1;
        let last = (self.acked + u64::from(self.settings.windowsize)).min(self.blocks);
        self.sent = last;
        Action::SendData { first, last }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(blksize: u16, windowsize: u16) -> Settings {
        Settings {
            blksize,
            windowsize,
            timeout: None,
        }
    }

    #[test]
    fn lock_step_without_options() {
        let mut s = ReadSession::new(1000, settings(512, 1), None, 3);
        assert_eq!(s.blocks(), 2);
        assert_eq!(s.start(), Action::SendData { first: 1, last: 1 });
        assert_eq!(
            s.block(1),
            Block {
                wire: 1,
                offset: 0,
                len: 512
            }
        );
        assert_eq!(
            s.block(2),
            Block {
                wire: 2,
                offset: 512,
                len: 488
            }
        );
        assert_eq!(s.on_ack(1), Action::SendData { first: 2, last: 2 });
        assert_eq!(s.acked_bytes(), 512);
        assert_eq!(s.on_ack(2), Action::Done);
        assert_eq!(s.acked_bytes(), 1000);
    }

    #[test]
    fn exact_multiple_ends_with_an_empty_block() {
        let mut s = ReadSession::new(1024, settings(512, 1), None, 3);
        assert_eq!(s.blocks(), 3);
        assert_eq!(s.block(3).len, 0);
        let mut s0 = ReadSession::new(0, settings(512, 1), None, 3);
        assert_eq!(s0.start(), Action::SendData { first: 1, last: 1 });
        assert_eq!(s0.block(1).len, 0);
        assert_eq!(s0.on_ack(1), Action::Done);
        s.start();
        s.on_ack(1);
        s.on_ack(2);
        assert_eq!(s.on_ack(3), Action::Done);
    }

    #[test]
    fn oack_must_be_acknowledged_with_block_zero() {
        let oack = RequestOptions {
            tsize: Some(10),
            ..RequestOptions::default()
        };
        let mut s = ReadSession::new(10, settings(512, 1), Some(oack), 3);
        assert_eq!(s.start(), Action::SendOack(oack));
        assert_eq!(s.on_ack(1), Action::Wait);
        assert_eq!(s.on_timeout(), Action::SendOack(oack));
        assert_eq!(s.on_ack(0), Action::SendData { first: 1, last: 1 });
        assert_eq!(s.on_ack(0), Action::Wait);
        assert_eq!(s.on_ack(1), Action::Done);
    }

    #[test]
    fn duplicate_and_stale_acks_send_nothing() {
        let mut s = ReadSession::new(5000, settings(512, 1), None, 3);
        s.start();
        assert_eq!(s.on_ack(1), Action::SendData { first: 2, last: 2 });
        assert_eq!(s.on_ack(1), Action::Wait);
        assert_eq!(s.on_ack(1), Action::Wait);
        assert_eq!(s.on_ack(0), Action::Wait);
        assert_eq!(s.on_ack(9), Action::Wait);
        assert_eq!(s.on_ack(2), Action::SendData { first: 3, last: 3 });
    }

    #[test]
    fn timeouts_resend_the_window_then_give_up() {
        let mut s = ReadSession::new(100_000, settings(1000, 4), None, 2);
        assert_eq!(s.start(), Action::SendData { first: 1, last: 4 });
        assert_eq!(s.on_timeout(), Action::SendData { first: 1, last: 4 });
        assert_eq!(s.on_ack(4), Action::SendData { first: 5, last: 8 });
        assert_eq!(s.on_timeout(), Action::SendData { first: 5, last: 8 });
        assert_eq!(s.on_timeout(), Action::SendData { first: 5, last: 8 });
        assert_eq!(s.on_timeout(), Action::GiveUp);
        assert_eq!(s.on_ack(8), Action::Wait);
    }

    #[test]
    fn a_lost_final_ack_is_unconfirmed_not_given_up() {
        // Lock-step: every block but the last acknowledged, then only timeouts.
        let mut s = ReadSession::new(1000, settings(512, 1), None, 2);
        assert_eq!(s.start(), Action::SendData { first: 1, last: 1 });
        assert!(!s.last_block_sent());
        assert_eq!(s.on_ack(1), Action::SendData { first: 2, last: 2 });
        assert!(s.last_block_sent());
        assert_eq!(s.on_timeout(), Action::SendData { first: 2, last: 2 });
        assert_eq!(s.on_timeout(), Action::SendData { first: 2, last: 2 });
        assert_eq!(s.on_timeout(), Action::Unconfirmed);
        assert_eq!(s.acked_bytes(), 512);
        assert_eq!(s.on_ack(2), Action::Wait);
        assert_eq!(s.on_timeout(), Action::Wait);
        // A window holding the last block, never acknowledged.
        let mut w = ReadSession::new(2500, settings(1000, 2), None, 1);
        assert_eq!(w.start(), Action::SendData { first: 1, last: 2 });
        assert_eq!(w.on_ack(2), Action::SendData { first: 3, last: 3 });
        assert_eq!(w.on_timeout(), Action::SendData { first: 3, last: 3 });
        assert_eq!(w.on_timeout(), Action::Unconfirmed);
        // A single (empty) block that was never acknowledged.
        let mut empty = ReadSession::new(0, settings(512, 1), None, 0);
        assert_eq!(empty.start(), Action::SendData { first: 1, last: 1 });
        assert_eq!(empty.on_timeout(), Action::Unconfirmed);
    }

    #[test]
    fn a_client_gone_before_the_last_block_is_given_up() {
        let mut s = ReadSession::new(1000, settings(512, 1), None, 5);
        s.start();
        assert_eq!(s.on_unreachable(), Action::GiveUp);
        assert_eq!(s.on_ack(1), Action::Wait);
        // Unanswered OACK: nothing was sent, whatever the file's size.
        let oack = RequestOptions {
            tsize: Some(0),
            ..RequestOptions::default()
        };
        let mut o = ReadSession::new(0, settings(512, 1), Some(oack), 0);
        assert_eq!(o.start(), Action::SendOack(oack));
        assert_eq!(o.on_timeout(), Action::GiveUp);
        // Gone after the last block went out: unconfirmed at once, no retries spent.
        let mut late = ReadSession::new(1000, settings(512, 1), None, 5);
        late.start();
        late.on_ack(1);
        assert_eq!(late.on_unreachable(), Action::Unconfirmed);
        assert_eq!(late.on_unreachable(), Action::Wait);
    }

    #[test]
    fn partial_window_ack_resends_from_the_gap() {
        let mut s = ReadSession::new(100_000, settings(1000, 8), None, 2);
        assert_eq!(s.start(), Action::SendData { first: 1, last: 8 });
        assert_eq!(s.on_ack(3), Action::SendData { first: 4, last: 11 });
        assert_eq!(s.on_ack(3), Action::Wait);
        assert_eq!(
            s.on_ack(11),
            Action::SendData {
                first: 12,
                last: 19
            }
        );
    }

    #[test]
    fn window_stops_at_the_last_block() {
        let mut s = ReadSession::new(2500, settings(1000, 16), None, 2);
        assert_eq!(s.start(), Action::SendData { first: 1, last: 3 });
        assert_eq!(s.on_ack(2), Action::SendData { first: 3, last: 3 });
        assert_eq!(s.on_ack(3), Action::Done);
    }

    #[test]
    fn block_numbers_roll_over_past_65535() {
        let blocks: u64 = 70_000;
        let mut s = ReadSession::new(blocks * 8, settings(8, 1), None, 1);
        assert_eq!(s.blocks(), blocks + 1);
        s.start();
        for abs in 1..=blocks {
            let wire = s.block(abs).wire;
            assert_eq!(wire, (abs % 65536) as u16);
            let expected = if abs == blocks + 1 {
                Action::Done
            } else {
                Action::SendData {
                    first: abs + 1,
                    last: abs + 1,
                }
            };
            assert_eq!(s.on_ack(wire), expected, "at block {abs}");
        }
        assert_eq!(s.block(65536).offset, 65535 * 8);
        assert_eq!(s.on_ack((blocks + 1) as u16), Action::Done);
    }

    #[test]
    fn negotiation_clamps_to_limits_and_reports_tsize() {
        let requested = RequestOptions {
            blksize: Some(65464),
            tsize: Some(0),
            timeout: Some(2),
            windowsize: Some(1000),
        };
        let (settings, oack) = negotiate(&requested, 4242, 1468, 64);
        assert_eq!(settings.blksize, 1468);
        assert_eq!(settings.windowsize, 64);
        assert_eq!(settings.timeout, Some(Duration::from_secs(2)));
        let oack = oack.expect("options acknowledged");
        assert_eq!(oack.tsize, Some(4242));
        assert_eq!(oack.blksize, Some(1468));
        let big = RequestOptions {
            blksize: Some(8192),
            windowsize: Some(64),
            ..RequestOptions::default()
        };
        assert_eq!(negotiate(&big, 1, 65464, 64).0.windowsize, 12);
        let huge = RequestOptions {
            blksize: Some(65464),
            windowsize: Some(64),
            ..RequestOptions::default()
        };
        assert_eq!(negotiate(&huge, 1, 65464, 64).0.windowsize, 1);
        let (plain, none) = negotiate(&RequestOptions::default(), 10, 1468, 64);
        assert_eq!(none, None);
        assert_eq!(plain.blksize, 512);
        assert_eq!(plain.windowsize, 1);
    }
}
