//! SPDY/3.1 sessions in the client or server role over any byte stream: streams as
//! `AsyncRead + AsyncWrite` handles with half-close, pings, GOAWAY and flow control.
//!
//! Flow control: we always advertise 64 KiB windows and send WINDOW_UPDATE (per stream and for the
//! session) as the application consumes data. We respect the peer's windows once the peer shows it
//! does flow control (it sent SETTINGS or WINDOW_UPDATE). moby/spdystream -- the SPDY library of
//! kubectl, the kubelet and containerd's streaming server -- neither sends nor honours
//! WINDOW_UPDATE, so enforcing its (never reopened) 64 KiB window would stall every transfer
//! larger than that. Receive windows are not policed for the same reason.

mod frame;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{ready, Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::PollSender;

pub use frame::{
    decode_header_block, encode_frame, encode_header_block, header, read_frame, rst, Frame,
    HeaderDecoder, HeaderEncoder, Headers, DICTIONARY, FLAG_FIN, FLAG_UNIDIRECTIONAL,
    MAX_FRAME_LEN, SETTINGS_INITIAL_WINDOW_SIZE, VERSION,
};

/// Initial flow-control window of every stream and of the session (SPDY/3.1).
pub const INITIAL_WINDOW_SIZE: u32 = 65536;
/// Largest DATA frame we send.
const MAX_CHUNK: usize = 32 * 1024;
/// Consumed bytes that trigger a WINDOW_UPDATE.
const WINDOW_UPDATE_THRESHOLD: u32 = INITIAL_WINDOW_SIZE / 2;
/// Queued outgoing DATA frames before writers wait.
const DATA_QUEUE: usize = 16;

/// What went wrong in a SPDY session.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("spdy connection i/o failed: {0}")]
    Io(#[from] io::Error),
    #[error("spdy protocol error: {0}")]
    Protocol(String),
    #[error("spdy header block (de)compression failed: {0}")]
    Compression(String),
    #[error("spdy stream {stream_id} was reset by the peer (status {status})")]
    Reset { stream_id: u32, status: u32 },
    #[error("spdy session is closed: {0}")]
    Closed(String),
    #[error("spdy peer sent GOAWAY; no new streams")]
    GoneAway,
}

/// Which end of the session we are: clients use odd stream and ping ids, servers even ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

struct StreamState {
    recv: VecDeque<Bytes>,
    recv_fin: bool,
    reset: Option<u32>,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    send_window: i64,
    local_fin: bool,
    unacked: u32,
    reply: Option<oneshot::Sender<Result<Headers, SpdyError>>>,
}

impl StreamState {
    fn new(send_window: i64) -> Self {
        StreamState {
            recv: VecDeque::new(),
            recv_fin: false,
            reset: None,
            read_waker: None,
            write_waker: None,
            send_window,
            local_fin: false,
            unacked: 0,
            reply: None,
        }
    }

    fn wake(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }
}

struct State {
    streams: HashMap<u32, StreamState>,
    next_stream_id: u32,
    next_ping_id: u32,
    pings: HashMap<u32, oneshot::Sender<()>>,
    initial_send_window: i64,
    session_send_window: i64,
    session_unacked: u32,
    peer_flow_control: bool,
    closed: Option<String>,
    going_away: bool,
    last_peer_stream: u32,
}

enum WriterCmd {
    Frame(Frame),
    Shutdown(oneshot::Sender<()>),
}

struct Shared {
    role: Role,
    state: Mutex<State>,
    control: mpsc::UnboundedSender<WriterCmd>,
    closed_tx: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, frame: Frame) {
        // The writer is gone only when the connection is; callers see that through `closed`.
        let _ = self.control.send(WriterCmd::Frame(frame));
    }

    fn mark_closed(&self, reason: String) {
        let mut st = self.lock();
        if st.closed.is_none() {
            st.closed = Some(reason.clone());
        }
        for s in st.streams.values_mut() {
            if let Some(tx) = s.reply.take() {
                let _ = tx.send(Err(SpdyError::Closed(reason.clone())));
            }
            s.wake();
        }
        st.pings.clear();
        drop(st);
        self.closed_tx.send_replace(true);
    }
}

struct SessionHandle {
    shared: Arc<Shared>,
    data_tx: mpsc::Sender<Frame>,
    reader: tokio::task::AbortHandle,
}

impl SessionHandle {
    /// Queues a frame behind the DATA frames already queued (the writer sends control frames first).
    fn send_ordered(&self, frame: Frame) {
        if let Err(mpsc::error::TrySendError::Full(frame)) = self.data_tx.try_send(frame) {
            let tx = self.data_tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(frame).await;
            });
        }
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        self.reader.abort();
        let (tx, _rx) = oneshot::channel();
        let _ = self.shared.control.send(WriterCmd::Shutdown(tx));
    }
}

/// A SPDY session. Cheap to clone; the connection closes when the last clone and stream are gone.
#[derive(Clone)]
pub struct Session {
    handle: Arc<SessionHandle>,
}

/// Streams the peer opens, already answered with SYN_REPLY.
pub struct Incoming {
    rx: mpsc::UnboundedReceiver<Stream>,
}

impl Incoming {
    /// The next stream the peer opened; `None` once the session has ended.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.rx.recv().await
    }
}

impl Session {
    /// Starts a session over `io` (already upgraded). Spawns the reader and writer tasks, and
    /// announces our 64 KiB initial window with a SETTINGS frame.
    pub fn new<T>(io: T, role: Role) -> (Session, Incoming)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (data_tx, data_rx) = mpsc::channel(DATA_QUEUE);
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
        let (closed_tx, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            role,
            state: Mutex::new(State {
                streams: HashMap::new(),
                next_stream_id: if role == Role::Client { 1 } else { 2 },
                next_ping_id: if role == Role::Client { 1 } else { 2 },
                pings: HashMap::new(),
                initial_send_window: INITIAL_WINDOW_SIZE as i64,
                session_send_window: INITIAL_WINDOW_SIZE as i64,
                session_unacked: 0,
                peer_flow_control: false,
                closed: None,
                going_away: false,
                last_peer_stream: 0,
            }),
            control: control_tx,
            closed_tx,
        });
        shared.send(Frame::Settings {
            flags: 0,
            entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, INITIAL_WINDOW_SIZE)],
        });
        tokio::spawn(writer_loop(wr, control_rx, data_rx, shared.clone()));
        let handle = Arc::new_cyclic(|weak: &Weak<SessionHandle>| {
            let reader = tokio::spawn(reader_loop(rd, shared.clone(), weak.clone(), incoming_tx));
            SessionHandle {
                shared: shared.clone(),
                data_tx,
                reader: reader.abort_handle(),
            }
        });
        (Session { handle }, Incoming { rx: incoming_rx })
    }

    /// Opens a stream with `headers` (names are sent lowercase) and waits for the peer's SYN_REPLY.
    pub async fn open_stream(&self, headers: Headers) -> Result<Stream, SpdyError> {
        let shared = &self.handle.shared;
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut st = shared.lock();
            if let Some(reason) = &st.closed {
                return Err(SpdyError::Closed(reason.clone()));
            }
            if st.going_away {
                return Err(SpdyError::GoneAway);
            }
            let id = st.next_stream_id;
            st.next_stream_id += 2;
            let mut s = StreamState::new(st.initial_send_window);
            s.reply = Some(tx);
            st.streams.insert(id, s);
            id
        };
        shared.send(Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: headers.clone(),
        });
        let result = rx
            .await
            .map_err(|_| SpdyError::Closed("session ended before SYN_REPLY".into()))?;
        let stream = Stream::new(id, headers, self.handle.clone());
        result?;
        Ok(stream)
    }

    /// Sends a PING and waits for its echo; returns the round-trip time.
    pub async fn ping(&self) -> Result<Duration, SpdyError> {
        let shared = &self.handle.shared;
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut st = shared.lock();
            if let Some(reason) = &st.closed {
                return Err(SpdyError::Closed(reason.clone()));
            }
            let id = st.next_ping_id;
            st.next_ping_id = st.next_ping_id.wrapping_add(2) & 0x7fff_ffff;
            if st.next_ping_id == 0 {
                st.next_ping_id = if shared.role == Role::Client { 1 } else { 2 };
            }
            st.pings.insert(id, tx);
            id
        };
        let start = Instant::now();
        shared.send(Frame::Ping { id });
        rx.await
            .map_err(|_| SpdyError::Closed("session ended before the ping reply".into()))?;
        Ok(start.elapsed())
    }

    /// Sends GOAWAY after everything already queued, then closes our sending side.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .handle
            .shared
            .control
            .send(WriterCmd::Shutdown(tx))
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// True once the connection has ended (peer closed it, or it failed).
    pub fn is_closed(&self) -> bool {
        self.handle.shared.lock().closed.is_some()
    }

    /// Waits until the connection has ended.
    pub async fn closed(&self) {
        let mut rx = self.handle.shared.closed_tx.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// One SPDY stream. Reading yields the peer's DATA until its FIN (then EOF); `shutdown()` sends our
/// FIN (half-close). Dropping the handle sends FIN if not yet sent and forgets the stream.
pub struct Stream {
    id: u32,
    headers: Headers,
    handle: Arc<SessionHandle>,
    tx: PollSender<Frame>,
}

impl Stream {
    fn new(id: u32, headers: Headers, handle: Arc<SessionHandle>) -> Stream {
        let tx = PollSender::new(handle.data_tx.clone());
        Stream {
            id,
            headers,
            handle,
            tx,
        }
    }

    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The SYN_STREAM headers (the peer's for accepted streams, ours for opened ones).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// One SYN_STREAM header, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Aborts the stream with RST_STREAM.
    pub fn reset(&self, status: u32) {
        let shared = &self.handle.shared;
        {
            let mut st = shared.lock();
            if let Some(s) = st.streams.get_mut(&self.id) {
                s.reset = Some(status);
                s.recv.clear();
                s.wake();
            }
        }
        // Through the data queue, so the reset goes out after data already written on the stream.
        self.handle.send_ordered(Frame::RstStream {
            stream_id: self.id,
            status,
        });
    }

    fn io_err(kind: io::ErrorKind, msg: String) -> io::Error {
        io::Error::new(kind, msg)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let shared = &self.handle.shared;
        let mut st = shared.lock();
        let st = &mut *st;
        let Some(s) = st.streams.get_mut(&self.id) else {
            return Poll::Ready(Ok(()));
        };
        if let Some(front) = s.recv.front_mut() {
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            let _ = front.split_to(n);
            if front.is_empty() {
                s.recv.pop_front();
            }
            s.unacked += n as u32;
            if s.unacked >= WINDOW_UPDATE_THRESHOLD && !s.recv_fin && s.reset.is_none() {
                shared.send(Frame::WindowUpdate {
                    stream_id: self.id,
                    delta: s.unacked,
                });
                s.unacked = 0;
            }
            st.session_unacked += n as u32;
            if st.session_unacked >= WINDOW_UPDATE_THRESHOLD {
                shared.send(Frame::WindowUpdate {
                    stream_id: 0,
                    delta: st.session_unacked,
                });
                st.session_unacked = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if let Some(status) = s.reset {
            return Poll::Ready(Err(Self::io_err(
                io::ErrorKind::ConnectionReset,
                format!("spdy stream {} was reset (status {status})", self.id),
            )));
        }
        if s.recv_fin || st.closed.is_some() {
            return Poll::Ready(Ok(()));
        }
        s.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Stream {
    /// Checks that we may still send; returns the bytes the windows allow (`usize::MAX` when the
    /// peer does no flow control), registering the waker when that is zero.
    fn send_allowance(&self, cx: &mut Context<'_>) -> io::Result<usize> {
        let mut st = self.handle.shared.lock();
        let st = &mut *st;
        if let Some(reason) = &st.closed {
            return Err(Self::io_err(
                io::ErrorKind::BrokenPipe,
                format!("spdy session closed: {reason}"),
            ));
        }
        let peer_fc = st.peer_flow_control;
        let session_window = st.session_send_window;
        let Some(s) = st.streams.get_mut(&self.id) else {
            return Err(Self::io_err(
                io::ErrorKind::BrokenPipe,
                format!("spdy stream {} is gone", self.id),
            ));
        };
        if let Some(status) = s.reset {
            return Err(Self::io_err(
                io::ErrorKind::ConnectionReset,
                format!("spdy stream {} was reset (status {status})", self.id),
            ));
        }
        if s.local_fin {
            return Err(Self::io_err(
                io::ErrorKind::BrokenPipe,
                format!("write on spdy stream {} after its FIN", self.id),
            ));
        }
        if !peer_fc {
            return Ok(usize::MAX);
        }
        let window = s.send_window.min(session_window);
        if window <= 0 {
            s.write_waker = Some(cx.waker().clone());
            return Ok(0);
        }
        Ok(window as usize)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.send_allowance(cx)? == 0 {
            return Poll::Pending;
        }
        if ready!(self.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(Self::io_err(
                io::ErrorKind::BrokenPipe,
                "spdy session writer is gone".into(),
            )));
        }
        // The windows may have changed while we waited for queue space.
        let allowance = self.send_allowance(cx)?;
        if allowance == 0 {
            self.tx.abort_send();
            return Poll::Pending;
        }
        let n = buf.len().min(MAX_CHUNK).min(allowance);
        {
            let mut st = self.handle.shared.lock();
            if st.peer_flow_control {
                st.session_send_window -= n as i64;
                if let Some(s) = st.streams.get_mut(&self.id) {
                    s.send_window -= n as i64;
                }
            }
        }
        let frame = Frame::Data {
            stream_id: self.id,
            flags: 0,
            data: Bytes::copy_from_slice(&buf[..n]),
        };
        if self.tx.send_item(frame).is_err() {
            return Poll::Ready(Err(Self::io_err(
                io::ErrorKind::BrokenPipe,
                "spdy session writer is gone".into(),
            )));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        {
            let st = self.handle.shared.lock();
            match st.streams.get(&self.id) {
                Some(s) if !s.local_fin && s.reset.is_none() && st.closed.is_none() => {}
                _ => return Poll::Ready(Ok(())),
            }
        }
        if ready!(self.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Ok(()));
        }
        let frame = Frame::Data {
            stream_id: self.id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        };
        let _ = self.tx.send_item(frame);
        let mut st = self.handle.shared.lock();
        if let Some(s) = st.streams.get_mut(&self.id) {
            s.local_fin = true;
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let shared = &self.handle.shared;
        let mut st = shared.lock();
        let send_fin = match st.streams.remove(&self.id) {
            Some(s) => !s.local_fin && s.reset.is_none() && st.closed.is_none(),
            None => false,
        };
        drop(st);
        if send_fin {
            let frame = Frame::Data {
                stream_id: self.id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            };
            if let Err(mpsc::error::TrySendError::Full(frame)) = self.handle.data_tx.try_send(frame)
            {
                let tx = self.handle.data_tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(frame).await;
                });
            }
        }
    }
}

async fn writer_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut control: mpsc::UnboundedReceiver<WriterCmd>,
    mut data: mpsc::Receiver<Frame>,
    shared: Arc<Shared>,
) {
    let mut enc = match HeaderEncoder::new() {
        Ok(e) => e,
        Err(e) => {
            shared.mark_closed(e.to_string());
            return;
        }
    };
    let mut buf = BytesMut::with_capacity(MAX_CHUNK + 64);
    let mut data_open = true;
    loop {
        let cmd = tokio::select! {
            biased;
            c = control.recv() => match c {
                Some(c) => c,
                None => break,
            },
            d = data.recv(), if data_open => match d {
                Some(f) => WriterCmd::Frame(f),
                None => { data_open = false; continue; }
            },
        };
        let result = match cmd {
            WriterCmd::Frame(f) => write_frame(&mut w, &mut enc, &mut buf, &f).await,
            WriterCmd::Shutdown(done) => {
                let mut result = Ok(());
                while let Ok(f) = data.try_recv() {
                    result = write_frame(&mut w, &mut enc, &mut buf, &f).await;
                    if result.is_err() {
                        break;
                    }
                }
                if result.is_ok() {
                    let last = shared.lock().last_peer_stream;
                    let goaway = Frame::GoAway {
                        last_good_stream_id: last,
                        status: 0,
                    };
                    let _ = write_frame(&mut w, &mut enc, &mut buf, &goaway).await;
                }
                let _ = w.shutdown().await;
                let _ = done.send(());
                return;
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "spdy writer stopped");
            shared.mark_closed(format!("write failed: {e}"));
            return;
        }
    }
    let _ = w.shutdown().await;
}

async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    enc: &mut HeaderEncoder,
    buf: &mut BytesMut,
    frame: &Frame,
) -> Result<(), SpdyError> {
    buf.clear();
    encode_frame(frame, enc, buf)?;
    w.write_all(buf).await?;
    w.flush().await?;
    Ok(())
}

async fn reader_loop<R: AsyncRead + Unpin>(
    mut r: R,
    shared: Arc<Shared>,
    handle: Weak<SessionHandle>,
    incoming: mpsc::UnboundedSender<Stream>,
) {
    let mut dec = HeaderDecoder::new();
    let reason = loop {
        let frame = match read_frame(&mut r, &mut dec).await {
            Ok(Some(f)) => f,
            Ok(None) => break "peer closed the connection".to_string(),
            Err(e) => break format!("read failed: {e}"),
        };
        if let Err(reason) = handle_frame(frame, &shared, &handle, &incoming) {
            break reason;
        }
    };
    tracing::debug!(%reason, "spdy reader stopped");
    shared.mark_closed(reason);
}

fn handle_frame(
    frame: Frame,
    shared: &Arc<Shared>,
    handle: &Weak<SessionHandle>,
    incoming: &mpsc::UnboundedSender<Stream>,
) -> Result<(), String> {
    match frame {
        Frame::SynStream {
            stream_id,
            flags,
            headers,
            ..
        } => {
            let peer_parity = if shared.role == Role::Client { 0 } else { 1 };
            let mut st = shared.lock();
            if stream_id % 2 != peer_parity
                || stream_id <= st.last_peer_stream
                || st.streams.contains_key(&stream_id)
            {
                drop(st);
                shared.send(Frame::RstStream {
                    stream_id,
                    status: rst::PROTOCOL_ERROR,
                });
                return Ok(());
            }
            st.last_peer_stream = stream_id;
            let mut s = StreamState::new(st.initial_send_window);
            s.recv_fin = flags & FLAG_FIN != 0;
            s.local_fin = flags & FLAG_UNIDIRECTIONAL != 0;
            st.streams.insert(stream_id, s);
            drop(st);
            shared.send(Frame::SynReply {
                stream_id,
                flags: 0,
                headers: Vec::new(),
            });
            let Some(handle) = handle.upgrade() else {
                return Err("session dropped".into());
            };
            if let Err(refused) = incoming.send(Stream::new(stream_id, headers, handle)) {
                let stream = refused.0;
                stream.reset(rst::REFUSED_STREAM);
            }
        }
        Frame::SynReply {
            stream_id,
            flags,
            headers,
        } => {
            let mut st = shared.lock();
            if let Some(s) = st.streams.get_mut(&stream_id) {
                if flags & FLAG_FIN != 0 {
                    s.recv_fin = true;
                }
                if let Some(tx) = s.reply.take() {
                    let _ = tx.send(Ok(headers));
                }
                s.wake();
            }
        }
        Frame::Headers {
            stream_id, flags, ..
        } => {
            let mut st = shared.lock();
            if let Some(s) = st.streams.get_mut(&stream_id) {
                if flags & FLAG_FIN != 0 {
                    s.recv_fin = true;
                    s.wake();
                }
            }
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            let mut st = shared.lock();
            let st = &mut *st;
            let len = data.len() as u32;
            match st.streams.get_mut(&stream_id) {
                Some(s) if s.reset.is_none() => {
                    if !data.is_empty() {
                        s.recv.push_back(data);
                    }
                    if flags & FLAG_FIN != 0 {
                        s.recv_fin = true;
                    }
                    s.wake();
                }
                _ => {
                    // Data for a stream we forgot still counts against the session window.
                    st.session_unacked += len;
                    if st.session_unacked >= WINDOW_UPDATE_THRESHOLD {
                        shared.send(Frame::WindowUpdate {
                            stream_id: 0,
                            delta: st.session_unacked,
                        });
                        st.session_unacked = 0;
                    }
                }
            }
        }
        Frame::RstStream { stream_id, status } => {
            let mut st = shared.lock();
            if let Some(s) = st.streams.get_mut(&stream_id) {
                s.reset = Some(status);
                if let Some(tx) = s.reply.take() {
                    let _ = tx.send(Err(SpdyError::Reset { stream_id, status }));
                }
                s.wake();
            }
        }
        Frame::Settings { entries, .. } => {
            let mut st = shared.lock();
            st.peer_flow_control = true;
            for (_, id, value) in entries {
                if id == SETTINGS_INITIAL_WINDOW_SIZE {
                    let delta = value as i64 - st.initial_send_window;
                    st.initial_send_window = value as i64;
                    for s in st.streams.values_mut() {
                        s.send_window += delta;
                        s.wake();
                    }
                }
            }
        }
        Frame::WindowUpdate { stream_id, delta } => {
            let mut st = shared.lock();
            st.peer_flow_control = true;
            if stream_id == 0 {
                st.session_send_window += delta as i64;
                for s in st.streams.values_mut() {
                    if let Some(w) = s.write_waker.take() {
                        w.wake();
                    }
                }
            } else if let Some(s) = st.streams.get_mut(&stream_id) {
                s.send_window += delta as i64;
                if let Some(w) = s.write_waker.take() {
                    w.wake();
                }
            }
        }
        Frame::Ping { id } => {
            let own_parity = if shared.role == Role::Client { 1 } else { 0 };
            if id % 2 == own_parity {
                if let Some(tx) = shared.lock().pings.remove(&id) {
                    let _ = tx.send(());
                }
            } else {
                shared.send(Frame::Ping { id });
            }
        }
        Frame::GoAway { .. } => {
            shared.lock().going_away = true;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
