//! The load generator's HTTP/1.1 keep-alive client: the request is encoded once into bytes and
//! written with one `write_all` per request; responses are parsed (httparse) from one reused
//! per-connection buffer and their bodies framed (Content-Length, chunked, to EOF) and discarded;
//! the per-request timeout is one timer per connection, re-armed only when it fires.

use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// The read buffer's first size; a response head may grow it up to [`MAX_BUFFER`].
const BUFFER: usize = 16 * 1024;
/// The largest response head accepted.
const MAX_BUFFER: usize = 256 * 1024;
/// The most header fields in a response head (or a chunked body's trailer).
const MAX_HEADERS: usize = 64;

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The TCP connection could not be opened within the timeout.
    Connect,
    /// No complete response within the timeout.
    Timeout,
    /// The connection broke, or the response was not HTTP/1.x.
    Io,
}

/// One request, encoded once.
#[derive(Debug)]
pub struct Request {
    addr: String,
    bytes: Vec<u8>,
    head: bool,
    timeout: Duration,
}

impl Request {
    /// Encodes `method path HTTP/1.1`, `Host` (unless `headers` has one), `headers`, and
    /// `Content-Length` with the body when there is one (or when the method is POST, PUT or
    /// PATCH). The caller has checked the method, path and headers are valid HTTP.
    pub fn new<'a>(
        addr: String,
        method: &str,
        path: &str,
        host: &str,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        body: &[u8],
        timeout: Duration,
    ) -> Self {
        let mut fields = Vec::new();
        let mut has_host = false;
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("content-length") {
                continue;
            }
            has_host |= name.eq_ignore_ascii_case("host");
            fields.extend_from_slice(name.as_bytes());
            fields.extend_from_slice(b": ");
            fields.extend_from_slice(value.as_bytes());
            fields.extend_from_slice(b"\r\n");
        }
        let mut bytes =
            Vec::with_capacity(64 + path.len() + host.len() + fields.len() + body.len());
        bytes.extend_from_slice(method.as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(path.as_bytes());
        bytes.extend_from_slice(b" HTTP/1.1\r\n");
        if !has_host {
            bytes.extend_from_slice(b"Host: ");
            bytes.extend_from_slice(host.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(&fields);
        if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
            bytes.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(body);
        Request {
            addr,
            bytes,
            head: method == "HEAD",
            timeout: timeout.max(Duration::from_millis(1)),
        }
    }
}

/// How a response's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Empty,
    Length(u64),
    Chunked,
    /// Until the server closes the connection.
    ToEof,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    len: usize,
    status: u16,
    body: Body,
    /// The server closes the connection after this response.
    close: bool,
}

/// How one exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broken {
    /// The connection was closed or reset before any byte of the response: on a reused
    /// connection, the server had closed it while idle, and the request may be sent again.
    BeforeResponse,
    Io,
}

/// Reading more into the buffer failed.
enum Fill {
    Eof,
    Io,
}

/// One keep-alive connection (opened on first use, and again after a failure or a close).
pub struct Conn {
    io: Io,
    /// Fires at or before the current request's deadline (see [`within`]).
    timer: Pin<Box<Sleep>>,
}

/// The socket and its reused read buffer.
struct Io {
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// The unread bytes are `buf[pos..end]`.
    pos: usize,
    end: usize,
}

impl Default for Conn {
    fn default() -> Self {
        Self::new()
    }
}

impl Conn {
    /// A connection not yet opened (must be called inside a tokio runtime).
    pub fn new() -> Self {
        Conn {
            io: Io {
                stream: None,
                buf: vec![0; BUFFER],
                pos: 0,
                end: 0,
            },
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
        }
    }

    /// Sends `req` and reads the whole response: its status, or why it failed. Opening the
    /// connection and the exchange each have `req`'s timeout. After a failure (or when the
    /// server closes), the next request opens a new connection. A request that finds its reused
    /// connection closed by the server before any response byte is sent once more on a new one.
    pub async fn send(&mut self, req: &Request) -> Result<u16, Failure> {
        let mut retried = false;
        loop {
            let reused = self.io.stream.is_some();
            if !reused {
                let deadline = Instant::now() + req.timeout;
                match within(&mut self.timer, deadline, TcpStream::connect(&req.addr)).await {
                    Some(Ok(stream)) => {
                        let _ = stream.set_nodelay(true);
                        self.io.stream = Some(stream);
                        self.io.pos = 0;
                        self.io.end = 0;
                    }
                    // refused, unreachable, or no answer to the SYN within the timeout
                    Some(Err(_)) | None => return Err(Failure::Connect),
                }
            }
            let deadline = Instant::now() + req.timeout;
            let outcome = within(&mut self.timer, deadline, self.io.exchange(req)).await;
            match outcome {
                Some(Ok(head)) => {
                    if head.close {
                        self.io.stream = None;
                    }
                    return Ok(head.status);
                }
                Some(Err(broken)) => {
                    self.io.stream = None;
                    if broken == Broken::BeforeResponse && reused && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(Failure::Io);
                }
                None => {
                    self.io.stream = None;
                    return Err(Failure::Timeout);
                }
            }
        }
    }
}

impl Io {
    /// Writes the request, reads responses until a final one, and discards its body.
    async fn exchange(&mut self, req: &Request) -> Result<Head, Broken> {
        // nothing is pipelined, so bytes left from the last exchange (a server sending more than
        // it framed) are read as the start of this response, and fail it
        let mut received = self.pos < self.end;
        let stream = self.stream.as_mut().ok_or(Broken::Io)?;
        stream
            .write_all(&req.bytes)
            .await
            .map_err(|_| Broken::BeforeResponse)?;
        loop {
            let head = loop {
                if let Some(head) = parse_head(&self.buf[self.pos..self.end], req.head)? {
                    break head;
                }
                self.fill().await.map_err(|_| {
                    if received {
                        Broken::Io
                    } else {
                        Broken::BeforeResponse
                    }
                })?;
                received = true;
            };
            self.pos += head.len;
            // 1xx interim responses (100 Continue, 103 Early Hints) have no body; 101 is final
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            self.discard_body(head.body).await?;
            return Ok(head);
        }
    }

    async fn discard_body(&mut self, body: Body) -> Result<(), Broken> {
        match body {
            Body::Empty => Ok(()),
            Body::Length(n) => self.skip(n).await,
            Body::Chunked => self.discard_chunked().await,
            Body::ToEof => loop {
                self.pos = self.end;
                match self.fill().await {
                    Ok(()) => {}
                    Err(Fill::Eof) => return Ok(()),
                    Err(Fill::Io) => return Err(Broken::Io),
                }
            },
        }
    }

    /// Skips `n` bytes of the body.
    async fn skip(&mut self, mut n: u64) -> Result<(), Broken> {
        loop {
            let take = ((self.end - self.pos) as u64).min(n);
            self.pos += take as usize;
            n -= take;
            if n == 0 {
                return Ok(());
            }
            self.fill().await.map_err(|_| Broken::Io)?;
        }
    }

    async fn discard_chunked(&mut self) -> Result<(), Broken> {
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buf[self.pos..self.end]) {
                    Ok(httparse::Status::Complete((n, size))) => {
                        self.pos += n;
                        break size;
                    }
                    Ok(httparse::Status::Partial) => {
                        self.fill().await.map_err(|_| Broken::Io)?;
                    }
                    Err(_) => return Err(Broken::Io),
                }
            };
            if size == 0 {
                break;
            }
            self.skip(size).await?;
            while self.end - self.pos < 2 {
                self.fill().await.map_err(|_| Broken::Io)?;
            }
            if &self.buf[self.pos..self.pos + 2] != b"\r\n" {
                return Err(Broken::Io);
            }
            self.pos += 2;
        }
        // the trailer: header fields up to an empty line
        loop {
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match httparse::parse_headers(&self.buf[self.pos..self.end], &mut fields) {
                Ok(httparse::Status::Complete((n, _))) => {
                    self.pos += n;
                    return Ok(());
                }
                Ok(httparse::Status::Partial) => {
                    self.fill().await.map_err(|_| Broken::Io)?;
                }
                Err(_) => return Err(Broken::Io),
            }
        }
    }

    /// Reads more bytes after `buf[..end]`, first moving the unread bytes to the front (or
    /// growing the buffer when they fill it).
    async fn fill(&mut self) -> Result<(), Fill> {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.end, 0);
                self.end -= self.pos;
                self.pos = 0;
            } else if self.buf.len() < MAX_BUFFER {
                self.buf.resize(self.buf.len() * 2, 0);
            } else {
                return Err(Fill::Io);
            }
        }
        let stream = self.stream.as_mut().ok_or(Fill::Io)?;
        match stream.read(&mut self.buf[self.end..]).await {
            Ok(0) => Err(Fill::Eof),
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(_) => Err(Fill::Io),
        }
    }
}

/// Runs `fut` until `deadline`: `None` when the deadline passed first. `timer` stays registered
/// across requests: it is only re-armed (to this request's deadline) when it fires at an
/// earlier, older deadline, so a connection re-arms it about once per timeout, not per request.
async fn within<F: Future>(
    timer: &mut Pin<Box<Sleep>>,
    deadline: Instant,
    fut: F,
) -> Option<F::Output> {
    if timer.deadline() > deadline {
        timer.as_mut().reset(deadline);
    }
    let mut fut = pin!(fut);
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        while timer.as_mut().poll(cx).is_ready() {
            if timer.deadline() >= deadline {
                return Poll::Ready(None);
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await
}

/// Parses a response head from `buf`: `None` while incomplete.
fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<Head>, Broken> {
    if buf.is_empty() {
        return Ok(None);
    }
    // not initialised: parsing a head does not pay for clearing MAX_HEADERS fields
    let mut fields = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut resp, buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Broken::Io),
    };
    let status = resp.code.ok_or(Broken::Io)?;
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let (mut close, mut keep_alive) = (false, false);
    for field in resp.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(field.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(Broken::Io)?;
            if length.is_some_and(|l| l != n) {
                return Err(Broken::Io);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // chunked only when it is the last coding
            let last = field
                .value
                .rsplit(|b| *b == b',')
                .next()
                .unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in field.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    // HTTP/1.0 closes unless asked to keep the connection
    if resp.version == Some(0) && !keep_alive {
        close = true;
    }
    let body = if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        Body::Empty
    } else if let Some(chunked) = chunked {
        if chunked {
            Body::Chunked
        } else {
            Body::ToEof
        }
    } else if let Some(n) = length {
        Body::Length(n)
    } else {
        Body::ToEof
    };
    if body == Body::ToEof || status == 101 {
        close = true;
    }
    Ok(Some(Head {
        len,
        status,
        body,
        close,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// What a test server does on one connection, in order.
    enum Step {
        /// Reads one request head.
        Read,
        Write(&'static [u8]),
        /// Waits a little, so the next write arrives in a separate read.
        Pause,
        /// Waits this many milliseconds.
        Wait(u64),
        /// Keeps the connection open without answering.
        Hold,
    }
    use Step::{Hold, Pause, Read, Wait, Write};

    /// A loopback server playing `script[i]` on its i-th connection, then closing it; later
    /// connections are closed at once. Returns its address and how many connections it accepted.
    async fn server(script: Vec<Vec<Step>>) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut script = script.into_iter();
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let steps = script.next().unwrap_or_default();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    for step in steps {
                        match step {
                            Read => {
                                let mut chunk = [0u8; 1024];
                                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                                    match s.read(&mut chunk).await {
                                        Ok(0) | Err(_) => return,
                                        Ok(n) => got.extend_from_slice(&chunk[..n]),
                                    }
                                }
                                let at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                                got.drain(..at + 4);
                            }
                            Write(bytes) => {
                                if s.write_all(bytes).await.is_err() {
                                    return;
                                }
                            }
                            Pause => tokio::time::sleep(Duration::from_millis(30)).await,
                            Wait(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                            Hold => {
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn request(addr: SocketAddr, method: &str, timeout_ms: u64) -> Request {
        Request::new(
            addr.to_string(),
            method,
            "/",
            &addr.to_string(),
            [("user-agent", "test")],
            b"",
            Duration::from_millis(timeout_ms),
        )
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    #[test]
    fn request_new_encodes_host_headers_and_body_once() {
        let r = Request::new(
            "h:80".into(),
            "POST",
            "/p?q=1",
            "h",
            [("x-a", "1")],
            b"body",
            Duration::from_secs(1),
        );
        assert_eq!(
            r.bytes,
            b"POST /p?q=1 HTTP/1.1\r\nHost: h\r\nx-a: 1\r\nContent-Length: 4\r\n\r\nbody"
        );
        let r = Request::new(
            "h:80".into(),
            "GET",
            "/",
            "h",
            [("Host", "other")],
            b"",
            Duration::from_secs(1),
        );
        assert_eq!(r.bytes, b"GET / HTTP/1.1\r\nHost: other\r\n\r\n");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn send_content_length_body_split_over_reads_is_read_whole() {
        let (addr, accepted) = server(vec![vec![
            Read,
            Write(b"HTTP/1.1 200 OK\r\nContent-Len"),
            Pause,
            Write(b"gth: 10\r\n\r\nhel"),
            Pause,
            Write(b"lo"),
            Pause,
            Write(b"world"),
            Read,
            Write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
        ]])
        .await;
        let mut conn = Conn::new();
        let req = request(addr, "GET", 2000);
        assert_eq!(conn.send(&req).await, Ok(200));
        assert_eq!(conn.send(&req).await, Ok(201));
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn send_chunked_body_with_trailer_is_read_whole() {
        let (addr, accepted) = server(vec![vec![
            Read,
            Write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"),
            Pause,
            Write(b"lo\r\n6;ext=1\r\n world\r"),
            Pause,
            Write(b"\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: y"),
            Pause,
            Write(b"es\r\n\r\n"),
            Read,
            Write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"),
        ]])
        .await;
        let mut conn = Conn::new();
        let req = request(addr, "GET", 2000);
        assert_eq!(conn.send(&req).await, Ok(200));
        assert_eq!(conn.send(&req).await, Ok(202));
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn send_head_and_204_responses_have_no_body() {
        let (addr, accepted) = server(vec![vec![
            Read,
            Write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"),
            Read,
            Write(b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"),
            Read,
            Write(b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Read,
            Write(OK),
        ]])
        .await;
        let mut conn = Conn::new();
        let get = request(addr, "GET", 2000);
        assert_eq!(conn.send(&request(addr, "HEAD", 2000)).await, Ok(200));
        assert_eq!(conn.send(&get).await, Ok(204));
        assert_eq!(conn.send(&get).await, Ok(304));
        assert_eq!(conn.send(&get).await, Ok(200));
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn send_response_without_length_is_read_to_close_then_reconnects() {
        let (addr, accepted) = server(vec![
            vec![
                Read,
                Write(b"HTTP/1.1 200 OK\r\n\r\nsome"),
                Pause,
                Write(b" body"),
            ],
            // the body never ends: the response is not complete before the timeout
            vec![Read, Write(b"HTTP/1.1 200 OK\r\n\r\nsome"), Hold],
            vec![Read, Write(OK), Hold],
        ])
        .await;
        let mut conn = Conn::new();
        let req = request(addr, "GET", 300);
        assert_eq!(conn.send(&req).await, Ok(200));
        assert_eq!(conn.send(&req).await, Err(Failure::Timeout));
        assert_eq!(conn.send(&req).await, Ok(200));
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn send_after_connection_close_reconnects_and_succeeds() {
        // the server keeps each connection open after its answer: reusing one would time out
        let close: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
        let (addr, accepted) = server(vec![
            vec![Read, Write(close), Hold],
            vec![Read, Write(close), Hold],
        ])
        .await;
        let mut conn = Conn::new();
        let req = request(addr, "GET", 1000);
        assert_eq!(conn.send(&req).await, Ok(200));
        assert_eq!(conn.send(&req).await, Ok(200));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn send_on_connection_closed_while_idle_resends_on_a_new_one() {
        let (addr, accepted) =
            server(vec![vec![Read, Write(OK)], vec![Read, Write(OK), Hold]]).await;
        let mut conn = Conn::new();
        let req = request(addr, "GET", 2000);
        assert_eq!(conn.send(&req).await, Ok(200));
        // let the server's close arrive
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(conn.send(&req).await, Ok(200));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn send_to_silent_server_times_out_then_recovers() {
        let (addr, accepted) = server(vec![vec![Read, Hold], vec![Read, Write(OK), Hold]]).await;
        let mut conn = Conn::new();
        let req = request(addr, "GET", 300);
        assert_eq!(conn.send(&req).await, Err(Failure::Timeout));
        assert_eq!(conn.send(&req).await, Ok(200));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn send_outliving_an_earlier_requests_deadline_does_not_time_out() {
        // the connection's timer, armed for the first request's deadline, fires during the
        // second (slow) request, whose own deadline is later
        let (addr, accepted) = server(vec![vec![
            Read,
            Write(OK),
            Read,
            Wait(500),
            Write(OK),
            Hold,
        ]])
        .await;
        let mut conn = Conn::new();
        let req = request(addr, "GET", 1000);
        assert_eq!(conn.send(&req).await, Ok(200));
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(conn.send(&req).await, Ok(200));
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn send_skips_100_continue_before_the_final_response() {
        let (addr, accepted) = server(vec![vec![
            Read,
            Write(b"HTTP/1.1 100 Continue\r\n\r\n"),
            Pause,
            Write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\n"),
            Write(b"Content-Length: 2\r\n\r\nok"),
            Read,
            Write(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            ),
        ]])
        .await;
        let mut conn = Conn::new();
        let req = request(addr, "GET", 2000);
        assert_eq!(conn.send(&req).await, Ok(200));
        assert_eq!(conn.send(&req).await, Ok(404));
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn send_malformed_status_line_is_io_error_and_drops_the_connection() {
        let (addr, accepted) = server(vec![
            vec![
                Read,
                Write(b"HTTP/1.1 abc OK\r\n\r\n"),
                Read,
                Write(OK),
                Hold,
            ],
            vec![Read, Write(OK), Hold],
        ])
        .await;
        let mut conn = Conn::new();
        let req = request(addr, "GET", 2000);
        assert_eq!(conn.send(&req).await, Err(Failure::Io));
        assert_eq!(conn.send(&req).await, Ok(200));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn send_to_closed_port_is_connect_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut conn = Conn::new();
        assert_eq!(
            conn.send(&request(addr, "GET", 2000)).await,
            Err(Failure::Connect)
        );
    }
}
