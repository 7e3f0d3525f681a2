//! The benchmark's live-feed subscriber: one WebSocket on `/api/v1/ws`, read by one
//! task that stamps every frame the moment it arrives and hands that instant to
//! whichever sample is waiting for it.
//!
//! Samples register what they wait for (a sensor's `readings` frame, or the alert
//! it opens) *before* their request is sent, so a frame can never arrive unclaimed
//! because the request was faster than the bookkeeping.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hyper::header::{HeaderValue, AUTHORIZATION};
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::http::Target;

/// The live-feed route, relative to the server URL.
pub const WS_PATH: &str = "/api/v1/ws";

/// Why the feed could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The token cannot be sent in a header.
    #[error("invalid token: it must be printable ASCII")]
    InvalidToken,
    /// The URL cannot be turned into a WebSocket request.
    #[error("invalid WebSocket URL `{url}`: {source}")]
    InvalidUrl {
        /// The `ws://` URL built from the server URL.
        url: String,
        /// tungstenite's reason.
        source: tungstenite::Error,
    },
    /// The server answered the upgrade with something other than 101.
    #[error("the server refused the WebSocket upgrade on {url} with {status}")]
    Refused {
        /// The `ws://` URL.
        url: String,
        /// The HTTP status it answered.
        status: hyper::StatusCode,
    },
    /// No connection, or the handshake broke.
    #[error("cannot open the WebSocket {url}: {source}")]
    Connect {
        /// The `ws://` URL.
        url: String,
        /// tungstenite's reason.
        source: tungstenite::Error,
    },
    /// No handshake within the timeout.
    #[error("no WebSocket handshake from {url} within {timeout:?}")]
    Timeout {
        /// The `ws://` URL.
        url: String,
        /// How long we waited.
        timeout: Duration,
    },
}

/// A frame that is not what the live feed sends.
#[derive(Debug, thiserror::Error)]
#[error("not a live-feed frame: {0}")]
pub struct FrameError(#[from] serde_json::Error);

/// What one live-feed frame says, reduced to what the benchmark matches on.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Committed readings, by sensor key (one entry per reading).
    Readings {
        /// The sensor of each reading in the frame.
        sensors: Vec<String>,
    },
    /// An alert opened, was acknowledged or resolved.
    Alert {
        /// `opened`, `acked` or `resolved`.
        change: String,
        /// The alert's sensor key.
        sensor: String,
        /// The alert's id.
        id: i64,
    },
    /// The subscriber fell behind and the server dropped this many events.
    Lagged {
        /// Events the server could not deliver.
        missed: u64,
    },
    /// A frame type this benchmark does not know (the feed may grow new ones).
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Wire {
    Readings {
        readings: Vec<WireReading>,
    },
    Alert {
        change: String,
        alert: WireAlert,
    },
    Lagged {
        missed: u64,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct WireReading {
    sensor: String,
}

#[derive(Deserialize)]
struct WireAlert {
    id: i64,
    sensor: String,
}

/// Parses one text frame of `/api/v1/ws`.
pub fn parse_frame(text: &str) -> Result<Frame, FrameError> {
    Ok(match serde_json::from_str::<Wire>(text)? {
        Wire::Readings { readings } => Frame::Readings {
            sensors: readings.into_iter().map(|r| r.sensor).collect(),
        },
        Wire::Alert { change, alert } => Frame::Alert {
            change,
            sensor: alert.sensor,
            id: alert.id,
        },
        Wire::Lagged { missed } => Frame::Lagged { missed },
        Wire::Other => Frame::Other,
    })
}

/// Which frame a sample waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Watch {
    /// The `readings` frame carrying the sensor's reading (the baseline).
    Readings,
    /// The `alert` frame with `change: opened` for the sensor (the budgeted path).
    AlertOpened,
}

/// When the awaited frame came, and the alert's id if it was an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// The instant the frame was read off the socket.
    pub at: Instant,
    /// The opened alert's id (for [`Watch::AlertOpened`]).
    pub alert: Option<i64>,
}

/// Samples waiting for frames, by what they watch and the sensor key.
#[derive(Default)]
pub struct Waiters {
    inner: Mutex<WaitersInner>,
}

#[derive(Default)]
struct WaitersInner {
    waiting: HashMap<(Watch, String), oneshot::Sender<Arrival>>,
    /// The feed ended: nothing will ever be delivered again.
    closed: bool,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, WaitersInner> {
        // The critical sections below cannot panic, so a poisoned lock still holds
        // consistent data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers interest in the next `watch` frame for `sensor`. The receiver fails
    /// at once when the feed has ended (or ends later), so a sample never waits for a
    /// feed that is gone. A second registration for the same key replaces the first.
    pub fn expect(&self, watch: Watch, sensor: &str) -> oneshot::Receiver<Arrival> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        if !inner.closed {
            inner.waiting.insert((watch, sensor.to_string()), tx);
        }
        rx
    }

    /// Withdraws a registration (the request failed, or the sample gave up).
    pub fn forget(&self, watch: Watch, sensor: &str) {
        self.lock().waiting.remove(&(watch, sensor.to_string()));
    }

    /// How many samples are waiting.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Hands `at` to every sample the frame satisfies; returns how many it satisfied.
    pub fn deliver(&self, frame: &Frame, at: Instant) -> usize {
        let mut inner = self.lock();
        if inner.waiting.is_empty() {
            return 0;
        }
        let mut take = |watch: Watch, sensor: &str, alert: Option<i64>| {
            match inner.waiting.remove(&(watch, sensor.to_string())) {
                // The receiver may have given up just now; that sample counts as missing.
                Some(tx) => usize::from(tx.send(Arrival { at, alert }).is_ok()),
                None => 0,
            }
        };
        match frame {
            Frame::Readings { sensors } => {
                sensors.iter().map(|s| take(Watch::Readings, s, None)).sum()
            }
            Frame::Alert { change, sensor, id } if change == "opened" => {
                take(Watch::AlertOpened, sensor, Some(*id))
            }
            Frame::Alert { .. } | Frame::Lagged { .. } | Frame::Other => 0,
        }
    }

    /// Ends every wait: dropping the senders fails their receivers.
    fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.waiting.clear();
    }
}

/// Counters of what the feed received.
#[derive(Debug, Default)]
pub struct FeedCounters {
    frames: AtomicU64,
    lagged_missed: AtomicU64,
    unparsable: AtomicU64,
}

/// What the feed received over the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FeedStats {
    /// Text frames received.
    pub frames: u64,
    /// Events the server dropped because we fell behind (`lagged` frames).
    pub lagged_missed: u64,
    /// Text frames that were not valid live-feed JSON.
    pub unparsable: u64,
    /// Why the feed ended before we closed it, if it did.
    pub ended: Option<String>,
}

/// An open live feed and the task reading it.
pub struct Feed {
    /// Samples waiting for frames.
    pub waiters: Arc<Waiters>,
    counters: Arc<FeedCounters>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Option<String>>,
}

/// `ws://host:port/prefix/api/v1/ws` for a server URL.
pub fn ws_url(target: &Target) -> String {
    let http = target.url();
    let rest = http
        .strip_prefix("http://")
        .expect("Target::url always starts with http://");
    format!("ws://{rest}{WS_PATH}")
}

impl Feed {
    /// Opens the WebSocket and starts reading it. The token goes in an
    /// `Authorization` header rather than `?access_token=`: the server takes either,
    /// and a header needs no URL encoding and stays out of access logs.
    pub async fn open(target: &Target, token: &str, timeout: Duration) -> Result<Self, FeedError> {
        let url = ws_url(target);
        let mut request =
            url.as_str()
                .into_client_request()
                .map_err(|source| FeedError::InvalidUrl {
                    url: url.clone(),
                    source,
                })?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| FeedError::InvalidToken)?;
        auth.set_sensitive(true);
        request.headers_mut().insert(AUTHORIZATION, auth);
        let connect = tokio_tungstenite::connect_async_with_config(request, None, true);
        let (stream, _) = match tokio::time::timeout(timeout, connect).await {
            Err(_) => return Err(FeedError::Timeout { url, timeout }),
            Ok(Err(tungstenite::Error::Http(response))) => {
                return Err(FeedError::Refused {
                    url,
                    status: response.status(),
                })
            }
            Ok(Err(source)) => return Err(FeedError::Connect { url, source }),
            Ok(Ok(pair)) => pair,
        };
        let waiters = Arc::new(Waiters::default());
        let counters = Arc::new(FeedCounters::default());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(read(stream, waiters.clone(), counters.clone(), stopped));
        Ok(Self {
            waiters,
            counters,
            stop: Some(stop),
            task,
        })
    }

    /// Closes the socket (politely, with a Close frame) and reports what it received.
    pub async fn close(mut self) -> FeedStats {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let ended = match tokio::time::timeout(Duration::from_secs(5), &mut self.task).await {
            Ok(Ok(ended)) => ended,
            Ok(Err(e)) => Some(format!("the feed reader failed: {e}")),
            Err(_) => {
                self.task.abort();
                Some("the feed did not close within 5 s".into())
            }
        };
        FeedStats {
            frames: self.counters.frames.load(Ordering::Relaxed),
            lagged_missed: self.counters.lagged_missed.load(Ordering::Relaxed),
            unparsable: self.counters.unparsable.load(Ordering::Relaxed),
            ended,
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads frames until asked to stop (`None`) or the feed ends (`Some(why)`).
async fn read(
    mut socket: Socket,
    waiters: Arc<Waiters>,
    counters: Arc<FeedCounters>,
    mut stop: oneshot::Receiver<()>,
) -> Option<String> {
    let ended = loop {
        tokio::select! {
            biased;
            message = socket.next() => {
                // Stamped before parsing: the parse is our cost, not the server's.
                let at = Instant::now();
                match message {
                    Some(Ok(Message::Text(text))) => {
                        counters.frames.fetch_add(1, Ordering::Relaxed);
                        match parse_frame(text.as_str()) {
                            Ok(frame) => {
                                if let Frame::Lagged { missed } = &frame {
                                    counters.lagged_missed.fetch_add(*missed, Ordering::Relaxed);
                                }
                                waiters.deliver(&frame, at);
                            }
                            Err(_) => {
                                counters.unparsable.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        break Some(match frame {
                            Some(f) => format!("the server closed the feed ({} {})", f.code, f.reason),
                            None => "the server closed the feed".into(),
                        });
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break Some(format!("the feed broke: {e}")),
                    None => break Some("the feed ended".into()),
                }
            }
            _ = &mut stop => {
                let _ = socket.close(None).await;
                break None;
            }
        }
    };
    waiters.close();
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_frames_the_server_sends() {
        let cases: &[(&str, Frame)] = &[
            (
                r#"{"type":"readings","readings":[
                    {"sensor":"a","metric":"temperature","ts":"2026-01-01T00:00:00.000Z","value":-1.0},
                    {"sensor":"b","metric":"temperature","ts":"2026-01-01T00:00:00.000Z","value":2.0}]}"#,
                Frame::Readings {
                    sensors: vec!["a".into(), "b".into()],
                },
            ),
            (
                r#"{"type":"readings","readings":[]}"#,
                Frame::Readings { sensors: vec![] },
            ),
            (
                r#"{"type":"alert","change":"opened","alert":{"id":42,"sensor":"alert-bench-0001",
                    "sensor_id":7,"rule":"threshold-critical","kind":"threshold","severity":"critical",
                    "state":"open","metric":"temperature","value":1.0,"message":"m",
                    "opened_at":"2026-01-01T00:00:00.000Z"}}"#,
                Frame::Alert {
                    change: "opened".into(),
                    sensor: "alert-bench-0001".into(),
                    id: 42,
                },
            ),
            (
                r#"{"type":"alert","change":"resolved","alert":{"id":1,"sensor":"s"}}"#,
                Frame::Alert {
                    change: "resolved".into(),
                    sensor: "s".into(),
                    id: 1,
                },
            ),
            (
                r#"{"type":"lagged","missed":17}"#,
                Frame::Lagged { missed: 17 },
            ),
            (r#"{"type":"robot","robot":{}}"#, Frame::Other),
            (
                r#"{"readings":[],"type":"readings"}"#,
                Frame::Readings { sensors: vec![] },
            ),
            (
                r#"{"type":"readings","readings":[{"sensor":"c\u00e1mara \"1\""}]}"#,
                Frame::Readings {
                    sensors: vec!["cámara \"1\"".into()],
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_frame(text).expect(text), *want, "{text}");
        }
    }

    #[test]
    fn rejects_what_the_server_does_not_send() {
        for bad in [
            "",
            "not json",
            "[]",
            r#"{"readings":[]}"#,
            r#"{"type":"readings"}"#,
            r#"{"type":"readings","readings":[{"value":1}]}"#,
            r#"{"type":"alert","change":"opened"}"#,
            r#"{"type":"alert","change":"opened","alert":{"sensor":"s"}}"#,
            r#"{"type":"alert","change":"opened","alert":{"id":"x","sensor":"s"}}"#,
            r#"{"type":"lagged","missed":-1}"#,
            r#"{"type":7}"#,
        ] {
            let err = parse_frame(bad).expect_err(bad);
            assert!(
                err.to_string().starts_with("not a live-feed frame"),
                "{err}"
            );
        }
    }

    fn opened(sensor: &str, id: i64) -> Frame {
        Frame::Alert {
            change: "opened".into(),
            sensor: sensor.into(),
            id,
        }
    }

    #[test]
    fn frames_go_to_the_samples_waiting_for_them() {
        let waiters = Waiters::default();
        let at = Instant::now();
        let mut a_readings = waiters.expect(Watch::Readings, "a");
        let mut b_readings = waiters.expect(Watch::Readings, "b");
        let mut a_alert = waiters.expect(Watch::AlertOpened, "a");
        assert_eq!(waiters.waiting(), 3);

        // Nobody waits for c; a readings frame never satisfies an alert wait.
        let frame = Frame::Readings {
            sensors: vec!["a".into(), "c".into()],
        };
        assert_eq!(waiters.deliver(&frame, at), 1);
        assert_eq!(
            a_readings.try_recv().expect("delivered"),
            Arrival { at, alert: None }
        );
        assert!(b_readings.try_recv().is_err(), "b's frame has not come");
        assert!(a_alert.try_recv().is_err(), "readings do not open alerts");

        // Only `opened` counts; other changes and other frames are ignored.
        let ignored = [
            Frame::Alert {
                change: "resolved".into(),
                sensor: "a".into(),
                id: 1,
            },
            Frame::Alert {
                change: "acked".into(),
                sensor: "a".into(),
                id: 1,
            },
            opened("b", 2),
            Frame::Lagged { missed: 3 },
            Frame::Other,
        ];
        for frame in &ignored {
            assert_eq!(waiters.deliver(frame, at), 0, "{frame:?}");
        }
        assert_eq!(waiters.deliver(&opened("a", 9), at), 1);
        assert_eq!(
            a_alert.try_recv().expect("delivered"),
            Arrival { at, alert: Some(9) }
        );
        // Delivered once: a second frame for the same sensor finds nobody.
        assert_eq!(waiters.deliver(&opened("a", 10), at), 0);
        assert_eq!(waiters.waiting(), 1, "b still waits");
        waiters.forget(Watch::Readings, "b");
        assert_eq!(waiters.waiting(), 0);
    }

    #[test]
    fn a_sample_that_gave_up_is_not_counted() {
        let waiters = Waiters::default();
        drop(waiters.expect(Watch::AlertOpened, "a"));
        assert_eq!(waiters.deliver(&opened("a", 1), Instant::now()), 0);
        assert_eq!(waiters.waiting(), 0);
    }

    #[test]
    fn a_closed_feed_fails_every_wait_at_once() {
        let waiters = Waiters::default();
        let mut before = waiters.expect(Watch::Readings, "a");
        waiters.close();
        let mut after = waiters.expect(Watch::Readings, "b");
        assert!(matches!(
            before.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(matches!(
            after.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert_eq!(waiters.waiting(), 0);
    }

    #[test]
    fn websocket_urls_follow_the_server_url() {
        let cases = [
            ("http://127.0.0.1:8080", "ws://127.0.0.1:8080/api/v1/ws"),
            ("http://127.0.0.1:8080/", "ws://127.0.0.1:8080/api/v1/ws"),
            ("http://[::1]:9/vigia/", "ws://[::1]:9/vigia/api/v1/ws"),
        ];
        for (url, want) in cases {
            assert_eq!(ws_url(&Target::parse(url).expect(url)), want, "{url}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_clear_error() {
        let port = crate::test_server::free_port();
        let target = Target::parse(&format!("http://127.0.0.1:{port}")).expect("valid");
        let err = Feed::open(&target, "tok", Duration::from_secs(5))
            .await
            .err()
            .expect("nobody listens");
        assert!(matches!(err, FeedError::Connect { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!(":{port}/api/v1/ws")),
            "{err}"
        );
        let err = Feed::open(&target, "bad\ntoken", Duration::from_secs(5))
            .await
            .err()
            .expect("bad token");
        assert!(matches!(err, FeedError::InvalidToken), "{err}");
    }
}
