//! The HTTPS webhook server: TLS with rustls, HTTP/1.1 and HTTP/2 with hyper, one URL per
//! handler (`POST {path}/{handler_id}`), AdmissionReview in, AdmissionReview out.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
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

/// What the request handler needs.
pub struct WebhookApp {
    /// The loaded plugins.
    pub plugins: PluginSet,
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

    /// Answers one HTTP request; never fails (errors are HTTP statuses).
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        // Read the (bounded) body before answering anything: an HTTP/2 client still sending
        // it would otherwise see its stream reset instead of our 404/405.
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
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
        let headers: BTreeMap<String, String> = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let review = match ReviewRequest::parse(&body) {
            Ok(review) => review,
            Err(error) => {
                tracing::warn!(target: "kopf.admission", "Malformed admission review for {:?}: {error}", handler.id());
                return plain(StatusCode::BAD_REQUEST, &error.to_string());
            }
        };
        let transport = Transport {
            headers,
            sslpeer: json!({}),
        };
        let discovered = self.discovered.read().clone();
        let answer = review::review(
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
    loop {
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
        tokio::spawn(async move {
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
            let service = service_fn(move |request| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.handle(request).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
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
