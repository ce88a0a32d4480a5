//! A session's one deadline: which timeout applies in each phase, arming
//! the worker's timer heap, and what a timeout that fired does.

use std::time::Instant;

use super::{Close, Ctx, Downward, LINGER, Phase, Session, TUNNEL_IDLE, Verdict};
use crate::config::Config;
use crate::error::ProxyError;
use crate::worker::timer::{TimerKey, Timers};

impl Session {
    /// When this session next needs attention if nothing happens.
    pub(super) fn deadline(&self, cfg: &Config) -> Instant {
        let t = &cfg.timeouts;
        match self.phase {
            Phase::ReadHead => match self.head_started {
                Some(started) => started + t.head,
                // The first request must come as quickly as a head; later
                // ones may wait the keep-alive idle time.
                None if self.requests == 0 => self.last_io + t.head,
                None => self.last_io + t.idle,
            },
            // A queue for a stream is bounded like a connect (HAProxy's
            // `timeout queue` defaults to `timeout connect` too).
            Phase::Connecting | Phase::H2Queued => self.phase_since + t.connect,
            Phase::Exchange | Phase::H2Exchange
                if self.up_done && self.down == Downward::AwaitHead =>
            {
                self.sent_at + t.response
            }
            Phase::Exchange | Phase::H2Exchange if self.reading_body() => self.last_io + t.body,
            Phase::Exchange | Phase::H2Exchange | Phase::Answer { .. } => self.last_io + t.idle,
            Phase::Tunnel => self.last_io + TUNNEL_IDLE,
            Phase::Linger => self.phase_since + LINGER,
        }
    }

    /// The request body is still coming and the response has not started.
    pub(super) fn reading_body(&self) -> bool {
        !self.req_body.is_done() && !self.response_started
    }

    /// Arms the worker's heap if our deadline moved earlier than what is
    /// armed (a later deadline is found when the armed entry fires).
    pub fn arm(&mut self, timers: &mut Timers, cfg: &Config) {
        let deadline = self.deadline(cfg);
        if self.armed.is_none_or(|armed| deadline < armed) {
            timers.arm(deadline, self.timer_key());
            self.armed = Some(deadline);
        }
    }

    pub fn timer_key(&self) -> TimerKey {
        TimerKey {
            key: self.key,
            generation: self.generation,
        }
    }

    /// A heap entry armed at `at` fired. Returns `None` if it was stale
    /// (nothing to do), else the verdict after acting on the timeout.
    pub fn on_timer(&mut self, at: Instant, cx: &mut Ctx<'_>) -> Option<Verdict> {
        if self.armed != Some(at) {
            return None;
        }
        self.armed = None;
        if self.deadline(cx.config) > cx.now {
            return Some(Verdict::Open);
        }
        let step = match self.phase {
            Phase::ReadHead if self.head_started.is_some() => {
                self.answer_error(cx, ProxyError::HeadTimeout)
            }
            Phase::Connecting => {
                let connected = self
                    .upstream
                    .and_then(|k| cx.pool.get(k))
                    .is_some_and(|u| u.connected);
                let why = match connected {
                    true => "TLS handshake timeout",
                    false => "connect timeout",
                };
                self.connect_failed(cx, why)
            }
            Phase::H2Queued => self.answer_error(cx, ProxyError::QueueTimeout),
            Phase::Exchange | Phase::H2Exchange
                if self.up_done && self.down == Downward::AwaitHead =>
            {
                self.answer_error(cx, ProxyError::GatewayTimeout)
            }
            // The body stalled on the client's side (nothing of it waits for
            // the backend): 408, as nginx's client_body_timeout, and the
            // backend connection, mid-request, is closed.
            Phase::Exchange | Phase::H2Exchange
                if self.reading_body() && self.body_pending == 0 =>
            {
                self.answer_error(cx, ProxyError::BodyTimeout)
            }
            _ => Err(Close),
        };
        Some(match step {
            Ok(_) => self.drive(cx),
            Err(Close) => {
                self.teardown(cx);
                Verdict::Close
            }
        })
    }
}
