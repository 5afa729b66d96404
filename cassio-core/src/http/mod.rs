//! The operators' HTTP endpoint (`--http`): Prometheus metrics at
//! `/metrics`, a liveness probe at `/health` and a readiness probe at
//! `/ready`, HTTP/1.1 by hyper. It serves no data and asks no password;
//! anything else gets 404 or 405 with a sentence.

mod exposition;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;

use crate::coordinator::Metrics;
use crate::net::{ConnectionLimit, Transport, refuse_and_close};
use crate::node::shared::NodeShared;

/// A client that sends no complete request head in this time is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections open at once at most: probes and scrapers need a few.
const HTTP_CONNECTIONS_MAX: usize = 128;

/// The answer to a connection over [`HTTP_CONNECTIONS_MAX`], before it is
/// closed.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 31\r\nconnection: close\r\n\r\n\
too many HTTP connections open\n";

const INDEX: &str = "\
/metrics  Prometheus metrics (text format 0.0.4)
/health   liveness: 200 while the node serves and its storage takes writes
/ready    readiness: 200 once the node is NORMAL in its own view, else 503
";

/// Serves HTTP connections until `shutdown`.
pub(crate) async fn serve<T: Transport>(
    transport: T,
    listener: T::Listener,
    node: Arc<NodeShared<T>>,
    shutdown: watch::Receiver<bool>,
) {
    let limit = ConnectionLimit::new(HTTP_CONNECTIONS_MAX);
    crate::net::accept_loop(
        transport,
        listener,
        shutdown,
        "HTTP",
        move |mut stream, _| {
            let node = node.clone();
            let admitted = limit.admit();
            async move {
                let Some(_admitted) = admitted else {
                    refuse_and_close(&mut stream, TOO_MANY_CONNECTIONS).await;
                    return Ok(());
                };
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let response = respond(&node, request.method(), request.uri().path());
                    std::future::ready(Ok::<_, Infallible>(response))
                });
                hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await
}

/// The answer to `method path`.
fn respond<T: Transport>(
    node: &NodeShared<T>,
    method: &Method,
    path: &str,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not served here: only GET and HEAD\n"),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/" => text(
            StatusCode::OK,
            format!("cassio node {}\n{INDEX}", node.node_id),
        ),
        "/metrics" => {
            let connections = &node.client_connections;
            let local = exposition::NodeLocal {
                reads: node.metrics.read_latency.snapshot(),
                writes: node.metrics.write_latency.snapshot(),
                speculative_retries: Metrics::get(&node.metrics.speculative_retries),
                stalled_replica_requests: Metrics::get(&node.metrics.stalled_replica_requests),
                client_connections: connections.open() as u64,
                client_connections_max: connections.max() as u64,
                client_connections_refused: connections.refused(),
            };
            let page = exposition::render(&node.cluster_status(), &local, &node.engine.stats());
            answer(StatusCode::OK, exposition::CONTENT_TYPE, page)
        }
        "/health" => match node.engine.health() {
            Ok(()) => text(StatusCode::OK, format!("{} is serving\n", node.node_id)),
            Err(e) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{}: {e}\n", node.node_id),
            ),
        },
        "/ready" => match node.cluster_status().readiness() {
            Ok(sentence) => text(StatusCode::OK, sentence + "\n"),
            Err(sentence) => text(StatusCode::SERVICE_UNAVAILABLE, sentence + "\n"),
        },
        other => text(
            StatusCode::NOT_FOUND,
            format!("nothing at {other}; this node serves:\n{INDEX}"),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    answer(status, "text/plain; charset=utf-8", body)
}

fn answer(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::cluster::NodeStatus;
    use crate::proto::{ClusterStatus, MemberStatus};

    /// A cluster as node `answered_by` sees it.
    pub(crate) fn view(answered_by: &str, members: &[(&str, NodeStatus)]) -> ClusterStatus {
        ClusterStatus {
            answered_by: answered_by.into(),
            cluster_name: "c".into(),
            replication_factor: 3,
            members: members
                .iter()
                .enumerate()
                .map(|(i, (node, status))| MemberStatus {
                    node: (*node).into(),
                    native_addr: ([127, 0, 0, 1], 9000 + i as u16).into(),
                    resp_addr: None,
                    up: i != 1,
                    status: *status,
                    generation: 1,
                    heartbeat: 1,
                    load_bytes: 1000 * (i as u64 + 1),
                    owns: 0.5,
                    vnodes: 16,
                })
                .collect(),
            metrics: Default::default(),
        }
    }

    #[test]
    fn the_too_many_connections_answer_is_whole_http() {
        let text = std::str::from_utf8(super::TOO_MANY_CONNECTIONS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
    }

    #[test]
    fn only_a_node_normal_in_its_own_view_is_ready() {
        let members = [("a", NodeStatus::Normal), ("b", NodeStatus::Joining)];
        assert_eq!(
            view("a", &members).readiness(),
            Ok("a is NORMAL: ready".into())
        );
        assert_eq!(
            view("b", &members).readiness(),
            Err("b is JOINING: not ready".into())
        );
        assert!(view("z", &members).readiness().is_err());
    }
}
