//! The HTTPS webhook server: TLS with rustls, HTTP/1.1 and HTTP/2 with hyper, one URL per
//! handler (`POST {path}/{handler_id}`), AdmissionReview in, AdmissionReview out.
//!
//! Every client is bounded, so that a slow or flooding one cannot hold the server (nor,
//! through it, the API server's admission of other writes): connections at once, the TLS
//! handshake, the request head (HTTP/1) and the whole request (both) have limits; HTTP/2
//! streams per connection and header sizes are capped; a body announced over the limit is
//! refused before anything of it is read.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::RwLock;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::review::{self, ReviewRequest, Transport};
use crate::plugin::{HandlerRef, PluginSet};
use crate::structs::references::Resource;

/// The largest accepted review (kube-apiserver's request limit is 3 MiB).
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// How long a client may take for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an HTTP/1 client may take to send a request head (also: how long an idle
/// keep-alive connection stays open).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one request may take from its head to the answer: longer than any webhook
/// timeout the API server may use (at most 30 s), so only abandoned requests hit it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(35);

/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 256;

/// Concurrent HTTP/2 streams per connection (the API server multiplexes its calls).
const MAX_STREAMS: u32 = 64;

/// The largest request head (HTTP/1 buffer, HTTP/2 header list).
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Request headers never passed to handlers as they are (credentials).
const REDACTED_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// What the request handler needs.
pub struct WebhookApp {
    /// The loaded plugins.
    pub plugins: PluginSet,
    /// The operator's metrics.
    pub metrics: crate::observability::metrics::Metrics,
    /// The webhook handlers.
    pub handlers: Vec<HandlerRef>,
    /// The URL path prefix (no trailing slash; may be empty).
    pub path: String,
    /// The discovered resources (refreshed by the configuration manager).
    pub discovered: Arc<RwLock<Vec<Resource>>>,
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl WebhookApp {
    /// The handler served at a URL path, if any.
    fn handler_at(&self, path: &str) -> Option<&HandlerRef> {
        let rest = path.strip_prefix(self.path.as_str())?.strip_prefix('/')?;
        let id = percent_decode(rest)?;
        self.handlers.iter().find(|h| h.id() == id)
    }

    /// Answers one HTTP request within [`REQUEST_TIMEOUT`]; never fails (errors are HTTP
    /// statuses). `sslpeer`: the connection's client certificate (Kopf's kwarg).
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        sslpeer: &serde_json::Value,
    ) -> Response<Full<Bytes>> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.handle_unbounded(request, sslpeer)).await {
            Ok(response) => response,
            Err(_) => plain(
                StatusCode::REQUEST_TIMEOUT,
                "the request was not complete in time",
            ),
        }
    }

    async fn handle_unbounded(
        &self,
        request: Request<Incoming>,
        sslpeer: &serde_json::Value,
    ) -> Response<Full<Bytes>> {
        let announced = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is over {MAX_BODY_BYTES} bytes"),
            );
        }
        // Read the (bounded) body before answering anything: an HTTP/2 client still sending
        // it would otherwise see its stream reset instead of our 404/405.
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                return plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the body is over {MAX_BODY_BYTES} bytes"),
                );
            }
            Err(error) => {
                return plain(StatusCode::BAD_REQUEST, &format!("cannot read the body: {error}"));
            }
        };
        let Some(handler) = self.handler_at(parts.uri.path()).cloned() else {
            return plain(StatusCode::NOT_FOUND, "no webhook handler at this path");
        };
        if parts.method != Method::POST {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "only POST is accepted");
        }
        let headers = redacted_headers(&parts.headers);
        let review = match ReviewRequest::parse(&body) {
            Ok(review) => review,
            Err(error) => {
                tracing::warn!(target: "kopf.admission", "Malformed admission review for {:?}: {error}", handler.id());
                return plain(StatusCode::BAD_REQUEST, &error.to_string());
            }
        };
        let transport = Transport {
            headers,
            sslpeer: sslpeer.clone(),
        };
        let discovered = self.discovered.read().clone();
        let answer = review::review(
            &self.metrics,
            &self.plugins,
            std::slice::from_ref(&handler),
            &review,
            &transport,
            &discovered,
        )
        .await;
        let body = serde_json::to_vec(&answer).unwrap_or_default();
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }
}

/// The request headers as handlers see them: credentials replaced by a marker (their
/// presence may matter to a handler, their value must not leak into its logs).
fn redacted_headers(headers: &http::HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(k, v)| {
            let value = if REDACTED_HEADERS.contains(&k.as_str()) {
                "<redacted>".to_owned()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (k.as_str().to_owned(), value)
        })
        .collect()
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    response
}

/// Accepts TLS connections until `stop` and serves each on its own task. Plain-HTTP and
/// other non-TLS clients fail the handshake and are disconnected.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Arc<WebhookApp>,
    stop: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(Some(HEADER_READ_TIMEOUT));
    let builder = Arc::new(builder);
    loop {
        // A free slot first: beyond the limit, clients wait in the listen backlog.
        let slot = tokio::select! {
            _ = stop.cancelled() => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(target: "kopf.admission", "Webhook server cannot accept: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let stop = stop.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(target: "kopf.admission", "TLS handshake with {peer} failed: {error}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(target: "kopf.admission", "TLS handshake with {peer} timed out.");
                    return;
                }
            };
            // Verified by the TLS layer when present; `{}` without one, as in Kopf.
            let sslpeer = Arc::new(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .map_or_else(|| json!({}), |cert| super::sslpeer::describe(cert)),
            );
            let service = service_fn(move |request| {
                let app = app.clone();
                let sslpeer = sslpeer.clone();
                async move { Ok::<_, Infallible>(app.handle(request, &sslpeer).await) }
            });
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(target: "kopf.admission", "Webhook connection from {peer} ended: {error}");
                    }
                }
                _ = stop.cancelled() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_headers_never_reach_handlers() {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer secret-token".parse().unwrap());
        headers.insert(header::PROXY_AUTHORIZATION, "Basic c2VjcmV0".parse().unwrap());
        headers.insert(header::COOKIE, "session=secret".parse().unwrap());
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let seen = redacted_headers(&headers);
        assert_eq!(seen["authorization"], "<redacted>");
        assert_eq!(seen["proxy-authorization"], "<redacted>");
        assert_eq!(seen["cookie"], "<redacted>");
        assert_eq!(seen["content-type"], "application/json");
        assert!(!format!("{seen:?}").contains("secret"));
    }
}
