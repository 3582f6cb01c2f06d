//! The built-in Kubernetes node scaler (`--node-scaler kubernetes:statefulset/NAME`): sets
//! the StatefulSet's replicas through the API server with the pod's service account, so
//! the image needs no shell and no kubectl. The request is a JSON merge patch of the
//! StatefulSet's `scale` subresource (RBAC: `patch` on `statefulsets/scale`, which
//! deploy/k8s/nanogrid.yaml grants).

use std::time::Duration;

use bytes::Bytes;

/// Where the service account's credentials are mounted in every pod.
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// One StatefulSet in the cluster the node runs in.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeTarget {
    pub statefulset: String,
}

/// How to reach the API server: from the pod's environment, or given (tests).
pub struct KubeApi {
    /// `https://host:port` (`http://` is accepted only for loopback, in tests).
    pub base: String,
    pub token: String,
    pub namespace: String,
    pub ca_pem: Vec<u8>,
}

impl KubeTarget {
    /// `kubernetes:statefulset/NAME`.
    pub fn parse(s: &str) -> Option<Result<KubeTarget, String>> {
        let rest = s.strip_prefix("kubernetes:")?;
        let name = match rest.strip_prefix("statefulset/") {
            Some(n) if crate::transport::secrets::validate_node_id(n).is_ok() => n,
            _ => {
                return Some(Err(format!(
                    "--node-scaler {s:?}: write kubernetes:statefulset/NAME with the StatefulSet's name"
                )));
            }
        };
        Some(Ok(KubeTarget { statefulset: name.to_string() }))
    }
}

impl KubeApi {
    /// The in-cluster API server and this pod's service account.
    pub fn in_cluster() -> Result<KubeApi, String> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .map_err(|_| "KUBERNETES_SERVICE_HOST is not set: the kubernetes scaler runs inside a pod".to_string())?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let read = |f: &str| {
            std::fs::read(format!("{SA_DIR}/{f}"))
                .map_err(|e| format!("reading {SA_DIR}/{f}: {e} (is automountServiceAccountToken off?)"))
        };
        Ok(KubeApi {
            base: format!("https://{host}:{port}"),
            token: String::from_utf8_lossy(&read("token")?).trim().to_string(),
            namespace: String::from_utf8_lossy(&read("namespace")?).trim().to_string(),
            ca_pem: read("ca.crt")?,
        })
    }

    /// Set the StatefulSet's replicas to `want`; `Ok` with a line for the event log.
    pub async fn scale(&self, target: &KubeTarget, want: usize, timeout: Duration) -> Result<String, String> {
        let url = format!(
            "{}/apis/apps/v1/namespaces/{}/statefulsets/{}/scale",
            self.base, self.namespace, target.statefulset
        );
        let client = crate::client::Client::with_ca_pem(&self.ca_pem);
        let headers = [
            ("content-type", "application/merge-patch+json".to_string()),
            ("authorization", format!("Bearer {}", self.token)),
            ("accept", "application/json".to_string()),
        ];
        let body = Bytes::from(serde_json::json!({ "spec": { "replicas": want } }).to_string());
        let reply = tokio::time::timeout(timeout, client.send(http::Method::PATCH, &url, &headers, body))
            .await
            .map_err(|_| format!("the Kubernetes API did not answer within {}s", timeout.as_secs()))?
            .map_err(|e| format!("{e:#}"))?;
        if !reply.status.is_success() {
            let text: String = String::from_utf8_lossy(&reply.body).chars().take(300).collect();
            let hint = if reply.status == http::StatusCode::FORBIDDEN {
                " (the pod's service account needs patch on statefulsets/scale: see deploy/k8s/nanogrid.yaml)"
            } else {
                ""
            };
            return Err(format!("PATCH {url} answered {}{hint}: {text}", reply.status));
        }
        Ok(format!("statefulset {}/{}: replicas {want}", self.namespace, target.statefulset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn targets_parse_or_say_how_to_write_them() {
        assert_eq!(KubeTarget::parse("/usr/bin/x"), None);
        assert_eq!(
            KubeTarget::parse("kubernetes:statefulset/nanogrid"),
            Some(Ok(KubeTarget { statefulset: "nanogrid".into() }))
        );
        let err = KubeTarget::parse("kubernetes:deployment/x").unwrap().unwrap_err();
        assert!(err.contains("kubernetes:statefulset/NAME"), "{err}");
    }

    /// A one-request API server: answers `status` and hands back what it was sent.
    async fn api_once(status: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&got).contains("\"replicas\"") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed early");
                got.extend_from_slice(&buf[..n]);
            }
            let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}");
            s.write_all(reply.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&got).into_owned()
        });
        (base, task)
    }

    #[tokio::test]
    async fn the_scale_subresource_is_patched_with_the_service_account_token() {
        let (base, seen) = api_once("200 OK").await;
        let api = KubeApi { base, token: "sa-token".into(), namespace: "ng".into(), ca_pem: Vec::new() };
        let target = KubeTarget { statefulset: "nanogrid".into() };
        let out = api.scale(&target, 4, Duration::from_secs(5)).await.unwrap();
        assert_eq!(out, "statefulset ng/nanogrid: replicas 4");
        let req = seen.await.unwrap();
        assert!(req.starts_with("PATCH /apis/apps/v1/namespaces/ng/statefulsets/nanogrid/scale HTTP/1.1"), "{req}");
        let lower = req.to_ascii_lowercase();
        assert!(lower.contains("authorization: bearer sa-token"), "{req}");
        assert!(lower.contains("content-type: application/merge-patch+json"), "{req}");
        assert!(req.ends_with("{\"spec\":{\"replicas\":4}}"), "{req}");

        let (base, _seen) = api_once("403 Forbidden").await;
        let api = KubeApi { base, token: "t".into(), namespace: "ng".into(), ca_pem: Vec::new() };
        let err = api.scale(&target, 2, Duration::from_secs(5)).await.unwrap_err();
        assert!(err.contains("403") && err.contains("statefulsets/scale"), "{err}");
    }
}
