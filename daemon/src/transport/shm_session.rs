//! One client's shared-memory session: pump requests in, answers out.
//!
//! The loop (one tokio task per client): drain up to `burst_frames` requests
//! (copy each out of the ring into a private aligned buffer, release it,
//! validate, handle, serialize the answer in place into the response ring),
//! wake the client once if it sleeps, then either go on, or (ring empty)
//! announce sleep, re-check and await the bell, or (response ring full) hold
//! the one pending answer and await space, bounded by
//! `stalled_client_timeout`. The client's socket is watched for EOF, which is
//! how a dead client (even one killed mid-frame) is noticed.
//!
//! Nothing here can block on an object the client controls (`wake.rs`): the
//! bell is awaited through epoll and never read, the client is woken with a
//! futex wake on a word of the segment, the socket is the daemon's own open
//! file description and is only read (non-blocking) to see its EOF. The ring
//! cursors are private and every value read from the segment is checked
//! (`ring.rs`). A client that writes on its socket after the handshake, or
//! rings the bell over and over with nothing to do, is disconnected.

//! What this module does not do: decide answers (`handler.rs`) or accept
//! connections (`server.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_shm_protocol::layout::FrameKind;
use nexus_shm_protocol::monotonic_now_ns;
use nexus_shm_protocol::ring::{BadFrameReason, Consumer, Producer, RingError};
use nexus_shm_protocol::segment::Segment;
use nexus_shm_protocol::wake::{Bell, futex_wake};
use nexus_shm_protocol::wire::{ErrorCode, Response};
use rkyv::util::AlignedVec;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use crate::handler::{Reply, Shared};
use crate::metrics::bump;
use crate::transport::admission::Charge;
use crate::transport::frame::{FramePolicy, SessionEnd, Verdict};

/// Wake-ups in a row that found nothing to do before the client is judged to
/// be flooding the bell. An honest client rings only after publishing and only
/// when the daemon announced sleep; a race can make one such wake-up empty,
/// never thousands in a row.
const MAX_EMPTY_WAKEUPS: u32 = 1024;

/// A session's state. Everything in it is bounded: two fixed rings, one
/// scratch buffer of at most `max_frame_bytes`, at most one pending answer.
pub struct ShmSession {
    id: u64,
    requests: Consumer,
    responses: Producer,
    /// The bell the client rings; awaited, never read (see `wake.rs`).
    bell: AsyncFd<Bell>,
    /// The connection's socket: only its EOF matters after the handshake.
    stream: UnixStream,
    /// Wake-ups in a row that found the request ring empty.
    empty_wakeups: u32,
    /// When the last request was taken: `idle_timeout` counts from here.
    last_request: Instant,
    /// This connection's share of `memory_budget_bytes` (its segment and
    /// scratch buffer); given back when the session ends.
    charge: Charge,
    /// Scratch bytes covered by `charge`.
    scratch_charged_bytes: u64,
    scratch: AlignedVec<16>,
    pending: Option<Reply>,
    policy: FramePolicy,
    /// When the response ring first had no room for `pending` (reset when an
    /// answer is written): the stall timeout counts from here, not from the
    /// last wake-up, which a client can cause without ever reading.
    stalled_since: Option<Instant>,
    spin: AdaptiveSpin,
    shared: Arc<Shared>,
}

/// What one pump of the rings achieved.
enum Burst {
    /// Nothing to do: the request ring is empty.
    Idle,
    /// Some frames handled (all there were, or the burst limit's worth).
    Progress,
    /// An answer is ready but the response ring has no room for it.
    Blocked { seen_free: u64 },
}

/// What ended a wait.
enum Wake {
    Signalled,
    TimedOut,
}

impl ShmSession {
    /// Takes the daemon's ends of `segment`; must run inside the runtime.
    pub fn new(
        id: u64,
        segment: &Arc<Segment>,
        bell: Bell,
        stream: UnixStream,
        charge: Charge,
        shared: Arc<Shared>,
    ) -> std::io::Result<Self> {
        let (requests, responses) = segment.daemon_ends().map_err(std::io::Error::other)?;
        // SAFETY: Bell owns its fd (an OwnedFd), returns the same raw fd for its
        // whole life, and is only closed when the AsyncFd drops it.
        let bell =
            unsafe { AsyncFd::register_with_interest(bell, Interest::READABLE) }.map_err(|e| e.into_parts().1)?;
        Ok(Self {
            id,
            requests,
            responses,
            bell,
            stream,
            empty_wakeups: 0,
            last_request: Instant::now(),
            charge,
            scratch_charged_bytes: shared.config().scratch_retain_bytes,
            scratch: AlignedVec::with_capacity(4096),
            pending: None,
            policy: FramePolicy::default(),
            stalled_since: None,
            spin: AdaptiveSpin::default(),
            shared,
        })
    }

    /// Serves until the client leaves, misbehaves, or shutdown.
    pub async fn run(mut self, shutdown: &CancellationToken) -> SessionEnd {
        let burst_frames = self.shared.config().burst_frames;
        loop {
            let burst = match self.pump(burst_frames).await {
                Ok(burst) => burst,
                Err(end) => return end,
            };
            if let Err(end) = self.wake_client_if_asleep() {
                return end;
            }
            let waited = match burst {
                Burst::Progress => {
                    // Fairness: let other sessions run before the next burst,
                    // also after a short one. A client that sends its next
                    // request as soon as it has an answer would otherwise keep
                    // this worker for as long as it keeps up (8 closed-loop
                    // clients on 2 workers: some answered 3.5x as often as
                    // others, recall p99 100x its p50).
                    tokio::task::yield_now().await;
                    continue;
                }
                Burst::Idle if shutdown.is_cancelled() => return SessionEnd::Shutdown,
                Burst::Idle => self.sleep_until_request(shutdown).await,
                Burst::Blocked { seen_free } => self.wait_for_space(seen_free, shutdown).await,
            };
            if let Err(end) = waited {
                return end;
            }
        }
    }

    /// Handles up to `limit` frames, answering each in place.
    async fn pump(&mut self, limit: u32) -> Result<Burst, SessionEnd> {
        if let Some(pending) = self.pending.take()
            && let Some(blocked) = self.send(pending)?
        {
            return Ok(blocked);
        }
        self.observe_occupancy();
        let mut handled = 0;
        while handled < limit {
            let answer = match self.next_answer().await? {
                None => break,
                Some(Verdict::Answer(answer)) => answer,
                Some(Verdict::Last(answer, end)) => {
                    // Best effort: tell the client why before closing.
                    let _ = self.send(answer);
                    let _ = self.wake_client_if_asleep();
                    return Err(end);
                }
            };
            if handled == 0 {
                // Once per burst, not per frame: idleness is judged in seconds.
                self.last_request = Instant::now();
            }
            handled += 1;
            if let Some(blocked) = self.send(answer)? {
                return Ok(blocked);
            }
        }
        Ok(match handled {
            0 => Burst::Idle,
            _ => Burst::Progress,
        })
    }

    /// Files how full the request ring is as a burst begins
    /// (`nexus_request_ring_occupancy_ratio`): a histogram rather than a
    /// gauge because there is one ring per client and a gauge would show
    /// whichever session wrote last; the distribution over every burst of
    /// every session shows whether clients keep rings near empty (the
    /// daemon keeps up) or near full (they are about to wait for room). An
    /// empty ring is not a burst and is not counted.
    fn observe_occupancy(&self) {
        if let Some((used_bytes, capacity_bytes)) = self.requests.occupancy()
            && used_bytes > 0
            && capacity_bytes > 0
        {
            let used_ppm = used_bytes.saturating_mul(1_000_000) / capacity_bytes;
            self.shared.metrics.request_ring_occupancy.observe(used_ppm);
        }
    }

    /// The answer to the next frame, or `None` when the ring is empty.
    async fn next_answer(&mut self) -> Result<Option<Verdict>, SessionEnd> {
        let frame = match self.requests.peek() {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(None),
            Err(RingError::BadFrame {
                request_id,
                reason,
                resume_at,
            }) => {
                self.requests.skip_to(resume_at);
                return Ok(Some(
                    self.policy.reject(bad_frame_answer(request_id, reason), &self.shared),
                ));
            }
            Err(error) => {
                bump(&self.shared.metrics.clients_disconnected_corrupt);
                return Err(SessionEnd::Corrupt(error));
            }
        };
        let picked_up_ns = monotonic_now_ns();
        if let Err(refused) = self.charge_scratch(frame.len) {
            self.requests.release(&frame);
            let message = format!("the daemon's memory budget cannot hold this request now: {refused}");
            let busy = Response::error(frame.request_id, ErrorCode::Busy, message);
            return Ok(Some(Verdict::Answer(busy.into())));
        }
        // The one copy at the trust boundary: from here on the client cannot
        // change the bytes we validate and use.
        self.requests.copy_payload_aligned(&frame, &mut self.scratch);
        self.requests.release(&frame);
        let verdict = (self.policy)
            .answer(frame.kind, frame.request_id, &self.scratch, picked_up_ns, &self.shared)
            .await;
        Ok(Some(verdict))
    }

    /// Writes an answer in place (a recall's straight from the memories'
    /// bytes); returns `Blocked` (keeping the answer) when full.
    fn send(&mut self, answer: Reply) -> Result<Option<Burst>, SessionEnd> {
        let written = (self.responses).try_write(FrameKind::Response, answer.request_id(), |slot| {
            answer.encode_into(slot)
        });
        match written {
            Ok(Some(_)) => {
                self.stalled_since = None;
                // A client asleep on its answers is woken by the first one, so
                // its wake-up overlaps the rest of the burst (on a guest whose
                // wake-ups take tens of µs that is most of a round trip). The
                // flag makes it one wake-up per sleep, never one per answer.
                if self.responses.consumer_needs_wake() {
                    bump(&self.shared.metrics.wakeups_sent);
                    futex_wake(self.responses.consumer_sleeping_word());
                }
                Ok(None)
            }
            Ok(None) => {
                let seen_free = self.responses.free_bytes().map_err(SessionEnd::Corrupt)?;
                self.stalled_since.get_or_insert_with(Instant::now);
                self.pending = Some(answer);
                Ok(Some(Burst::Blocked { seen_free }))
            }
            Err(RingError::FrameTooLarge { max }) => {
                let message = format!("the answer exceeds the maximum frame of {max} bytes");
                let error = Response::error(answer.request_id(), ErrorCode::FrameTooLarge, message);
                self.send(error.into())
            }
            Err(error) => Err(SessionEnd::Corrupt(error)),
        }
    }

    /// After a burst: one futex wake, only if the client announced it sleeps
    /// (for room in its request ring, or for an answer `send` did not wake it for).
    fn wake_client_if_asleep(&mut self) -> Result<(), SessionEnd> {
        if self.responses.consumer_needs_wake() {
            bump(&self.shared.metrics.wakeups_sent);
            futex_wake(self.responses.consumer_sleeping_word());
        }
        if self.requests.producer_needs_wake() {
            bump(&self.shared.metrics.wakeups_sent);
            futex_wake(self.requests.producer_waiting_word());
        }
        Ok(())
    }

    async fn sleep_until_request(&mut self, shutdown: &CancellationToken) -> Result<(), SessionEnd> {
        let budget = self.shared.config().spin;
        if self.spin.spin_until(budget, || !self.requests.is_empty()) {
            return Ok(());
        }
        if !self.requests.prepare_sleep() {
            return Ok(());
        }
        self.shrink_scratch();
        let slept = Instant::now();
        let idle_left = self
            .shared
            .config()
            .idle_timeout
            .saturating_sub(self.last_request.elapsed());
        let waited = wait(&self.bell, &self.stream, shutdown, Some(idle_left)).await;
        self.requests.end_sleep();
        self.spin.record_idle(slept.elapsed());
        if let Wake::TimedOut = waited? {
            bump(&self.shared.metrics.clients_disconnected_idle);
            return Err(SessionEnd::Idle);
        }
        self.judge_wakeup()
    }

    /// Charges the scratch buffer's growth past what admission charged
    /// (`scratch_retain_bytes`) to the memory budget, before it grows.
    fn charge_scratch(&mut self, frame_len: u32) -> Result<(), crate::transport::admission::AdmissionError> {
        let needed = u64::from(frame_len);
        if needed > self.scratch_charged_bytes {
            self.charge.try_grow(needed - self.scratch_charged_bytes)?;
            self.scratch_charged_bytes = needed;
        }
        Ok(())
    }

    /// Going to sleep: a scratch buffer grown by a big request goes back to
    /// the retained size (and its charge with it), so 1,000 idle clients do
    /// not each hold the largest request they ever sent.
    fn shrink_scratch(&mut self) {
        let retain = self.shared.config().scratch_retain_bytes;
        if self.scratch_charged_bytes > retain {
            self.scratch = AlignedVec::with_capacity(retain.min(4096) as usize);
            self.charge
                .shrink_to(self.charge.bytes() - (self.scratch_charged_bytes - retain));
            self.scratch_charged_bytes = retain;
        }
    }

    /// Counts wake-ups that found nothing to do; a long run of them is a
    /// client ringing the bell to burn the daemon's time.
    fn judge_wakeup(&mut self) -> Result<(), SessionEnd> {
        if !self.requests.is_empty() {
            self.empty_wakeups = 0;
            return Ok(());
        }
        self.empty_wakeups += 1;
        if self.empty_wakeups > MAX_EMPTY_WAKEUPS {
            bump(&self.shared.metrics.clients_disconnected_corrupt);
            let message = format!("{MAX_EMPTY_WAKEUPS} wake-ups in a row with no request: the client floods its bell");
            return Err(SessionEnd::ProtocolViolation(message));
        }
        Ok(())
    }

    async fn wait_for_space(&mut self, seen_free: u64, shutdown: &CancellationToken) -> Result<(), SessionEnd> {
        if !self.responses.prepare_wait_for_space(seen_free) {
            return Ok(());
        }
        let stalled_for = self.stalled_since.map(|since| since.elapsed()).unwrap_or_default();
        let left = self.shared.config().stalled_client_timeout.saturating_sub(stalled_for);
        let waited = match left.is_zero() {
            true => Ok(Wake::TimedOut),
            false => wait(&self.bell, &self.stream, shutdown, Some(left)).await,
        };
        self.responses.end_wait_for_space();
        match waited? {
            Wake::Signalled => Ok(()),
            Wake::TimedOut => {
                bump(&self.shared.metrics.clients_disconnected_stalled);
                Err(SessionEnd::Stalled)
            }
        }
    }
}

impl Drop for ShmSession {
    fn drop(&mut self) {
        tracing::trace!(connection = self.id, "session resources freed");
    }
}

/// Awaits the bell, the client's EOF, shutdown, or `limit`. (A free function
/// so the future borrows only these `Sync` parts, not the session's rings.)
async fn wait(
    bell: &AsyncFd<Bell>,
    stream: &UnixStream,
    shutdown: &CancellationToken,
    limit: Option<Duration>,
) -> Result<Wake, SessionEnd> {
    let timer = async {
        match limit {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        ready = bell.readable() => {
            // Not read: the counter is the client's to play with. The next
            // ring raises a new edge all the same.
            ready.map_err(SessionEnd::Io)?.clear_ready();
            Ok(Wake::Signalled)
        }
        ended = socket_ended(stream) => Err(ended),
        _ = shutdown.cancelled() => Ok(Wake::Signalled),
        _ = timer => Ok(Wake::TimedOut),
    }
}

/// Resolves when the client's socket says the session is over: EOF (the
/// client closed or died), or bytes, which a client never sends after its
/// hello (read one, then disconnect: no drain loop for a flooding client).
async fn socket_ended(stream: &UnixStream) -> SessionEnd {
    let mut byte = [0u8; 1];
    loop {
        if let Err(e) = stream.readable().await {
            return SessionEnd::Io(e);
        }
        match stream.try_read(&mut byte) {
            Ok(0) => return SessionEnd::PeerGone,
            Ok(_) => {
                return SessionEnd::ProtocolViolation("the client wrote on its socket after the handshake".into());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return io_end(e),
        }
    }
}

/// A failed call on the client's socket: a closed or reset peer is a client
/// that left, anything else a real I/O error.
fn io_end(e: std::io::Error) -> SessionEnd {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    match e.kind() {
        BrokenPipe | ConnectionReset | ConnectionAborted => SessionEnd::PeerGone,
        _ => SessionEnd::Io(e),
    }
}

fn bad_frame_answer(request_id: u64, reason: BadFrameReason) -> Response {
    let code = match reason {
        BadFrameReason::TooLarge { .. } => ErrorCode::FrameTooLarge,
        BadFrameReason::Overrun { .. } | BadFrameReason::DanglingWrap => ErrorCode::FrameOverrun,
    };
    let message = format!("{reason}; the published frames after it were discarded");
    Response::error(request_id, code, message)
}

/// The opt-in spin: busy-wait up to `budget` for the next request, but only
/// while recent idle gaps were shorter than the budget (requests arriving
/// faster than it). With gaps longer than the budget it would only burn a
/// core, which on a 2-core host slows the client down (RESEARCH.md).
#[derive(Default)]
struct AdaptiveSpin {
    /// Exponentially weighted mean of recent idle gaps, in nanoseconds.
    mean_gap_ns: u64,
}

impl AdaptiveSpin {
    /// Spins while `ready()` is false, within `budget` (the live config's, so
    /// SIGHUP can change it); true if it became ready.
    fn spin_until(&mut self, budget: Duration, mut ready: impl FnMut() -> bool) -> bool {
        let budget_ns = budget.as_nanos() as u64;
        if budget_ns == 0 || self.mean_gap_ns > budget_ns {
            return false;
        }
        let start = Instant::now();
        loop {
            if ready() {
                self.record_idle(start.elapsed());
                return true;
            }
            if start.elapsed() >= budget {
                return false;
            }
            std::hint::spin_loop();
        }
    }

    fn record_idle(&mut self, gap: Duration) {
        let gap_ns = gap.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.mean_gap_ns = (self.mean_gap_ns / 8) * 7 + gap_ns / 8;
    }
}
