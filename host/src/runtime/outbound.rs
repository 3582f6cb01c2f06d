//! Where a guest's outgoing HTTP may go, and how it gets there.
//!
//! A request leaves only for a `host:port` in the service's `outbound_http` grant. The
//! name is then resolved here (or pinned with `--resolve NAME=IP`, as curl does), and the
//! addresses are checked before connecting: loopback, link-local (cloud metadata
//! services live there), private and shared ranges, and this node's own listeners are
//! refused unless the grant names the address itself (`"10.0.0.7:8080"`). The connection
//! goes to an address that passed, so a name cannot resolve one way for the check and
//! another for the connection. `https` is TLS with the Mozilla roots (`webpki-roots`)
//! plus any `--extra-ca`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

use std::future::Future;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// Node-wide settings of outgoing HTTP.
#[derive(Debug)]
pub struct OutboundNet {
    tls: Arc<rustls::ClientConfig>,
    /// Names pinned to addresses (`--resolve`), checked like resolved ones.
    pins: HashMap<String, IpAddr>,
    /// This node's listeners (set once they are bound).
    own: RwLock<Vec<SocketAddr>>,
}

/// Why a target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{target} resolves to no address")]
    NoAddress { target: String },
    #[error(
        "{target} resolves only to addresses guests may not reach by name ({addrs}: loopback, link-local, private or this node's own); grant the address itself to allow it"
    )]
    Internal { target: String, addrs: String },
}

impl OutboundNet {
    /// `extra_ca`: PEM files of CAs to trust besides the Mozilla roots.
    pub fn new(extra_ca: &[impl AsRef<Path>], pins: HashMap<String, IpAddr>) -> anyhow::Result<OutboundNet> {
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        for path in extra_ca {
            let path = path.as_ref();
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading --extra-ca {}", path.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("--extra-ca {} is not a PEM certificate file", path.display()))?;
            anyhow::ensure!(!certs.is_empty(), "--extra-ca {} holds no certificate", path.display());
            for c in certs {
                roots.add(c).with_context(|| format!("a certificate in {} is not a usable CA", path.display()))?;
            }
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(OutboundNet { tls: Arc::new(tls), pins, own: RwLock::new(Vec::new()) })
    }

    /// Record this node's listener addresses (guests may not reach them by name). A
    /// listener bound to a wildcard address should be given as the addresses others reach
    /// it at (its advertised address); on loopback or a private network it is refused by
    /// range anyway.
    pub fn set_own(&self, addrs: Vec<SocketAddr>) {
        *self.own.write().unwrap_or_else(|e| e.into_inner()) = addrs;
    }

    pub fn tls(&self) -> Arc<rustls::ClientConfig> {
        self.tls.clone()
    }

    fn is_own(&self, a: SocketAddr) -> bool {
        let a = SocketAddr::new(canonical(a.ip()), a.port());
        let own = self.own.read().unwrap_or_else(|e| e.into_inner());
        own.iter().any(|o| SocketAddr::new(canonical(o.ip()), o.port()) == a)
    }

    /// The addresses of `host:port` this node may connect to for a guest.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refused> {
        let target = format!("{host}:{port}");
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        // An address in the grant is the operator's explicit choice: no range check.
        if let Some(ip) = literal {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let found: Vec<SocketAddr> = match self.pins.get(&host.to_ascii_lowercase()) {
            Some(ip) => vec![SocketAddr::new(*ip, port)],
            None => tokio::net::lookup_host(target.as_str()).await.map(Iterator::collect).unwrap_or_default(),
        };
        if found.is_empty() {
            return Err(Refused::NoAddress { target });
        }
        let ok: Vec<SocketAddr> = found.iter().copied().filter(|a| !internal(a.ip()) && !self.is_own(*a)).collect();
        if ok.is_empty() {
            let addrs = found.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ");
            return Err(Refused::Internal { target, addrs });
        }
        Ok(ok)
    }

    /// The TLS server name for `host`.
    pub fn server_name(host: &str) -> Option<ServerName<'static>> {
        ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_string()).ok()
    }
}

/// An IPv6 address that carries an IPv4 one (mapped, compatible, translated) as that
/// IPv4 address; anything else as it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The IPv4 address inside `::ffff:a.b.c.d`, `::a.b.c.d`, `::ffff:0:a.b.c.d` or NAT64's
/// `64:ff9b::a.b.c.d`.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s[..6] {
        [0, 0, 0, 0, 0, 0xffff] | [0, 0, 0, 0, 0, 0] | [0, 0, 0, 0, 0xffff, 0] | [0x64, 0xff9b, 0, 0, 0, 0] => {
            Some(tail)
        }
        _ => None,
    }
}

/// Addresses that are not on the public internet: guests reach them only when a grant
/// names them.
pub fn internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => internal_v4(v4),
            None => internal_v6(v6),
        },
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space (carrier-grade NAT)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking
        || o[0] >= 240 // reserved
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // 6to4 carries an IPv4 address in its prefix: internal if that one is.
    let six_to_four = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64
        || (s[0] == 0x2001 && s[1] == 0) // Teredo: tunnels to addresses it hides
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
        || (s[0] == 0x2002 && internal_v4(six_to_four))
}

/// Where a service's outgoing HTTP may go.
#[derive(Clone)]
pub struct OutboundPolicy {
    /// `host:port` entries from the service's `outbound_http` grant.
    pub allowed: Arc<Vec<String>>,
    /// Name resolution, the address check and TLS ([`super::outbound`]).
    pub net: Arc<OutboundNet>,
    /// The calling run's trace: outgoing requests carry it (`traceparent`) and are counted.
    pub trace: crate::trace::CallTrace,
}

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl OutboundPolicy {
    /// The granted `(host, port)` the request is for.
    fn permits(&self, uri: &http::Uri) -> Option<(String, u16)> {
        let host = uri.host()?;
        let port = uri.port_u16().unwrap_or(if uri.scheme() == Some(&http::uri::Scheme::HTTPS) { 443 } else { 80 });
        let target = format!("{host}:{port}");
        self.allowed.iter().any(|a| a.eq_ignore_ascii_case(&target)).then(|| (host.to_string(), port))
    }
}

impl WasiHttpHooks for OutboundPolicy {
    /// The default set, checked in place: the trait's default builds an `Arc`'d closure
    /// for every header it checks (an allocation per header of every request and
    /// response; docs/BENCHMARKS.md, "Allocations per request").
    fn is_forbidden_header(&mut self, name: &http::HeaderName) -> bool {
        wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
    }

    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), HttpError>> + Send> {
        let target = self.permits(request.uri());
        let net = self.net.clone();
        let trace = self.trace.clone();
        if let Some(c) = trace.ctx {
            let h = request.headers_mut();
            h.insert(crate::trace::context::TRACEPARENT_NAME.clone(), c.header_value());
            // The guest's own tracestate on the request is replaced by its run's.
            h.remove(crate::trace::context::TRACESTATE);
            if let Some(v) = trace.state.as_deref().and_then(|s| http::HeaderValue::from_str(s).ok()) {
                h.insert(crate::trace::context::TRACESTATE, v);
            }
        }
        Box::new(async move {
            let started = std::time::Instant::now();
            let out = send_checked(request, target, net).await;
            if let Some(run) = &trace.run {
                run.outbound(started.elapsed().as_micros() as u64);
            }
            out
        })
    }
}

/// Send a request the grant allows (`target`) to an address that passes the check.
async fn send_checked(
    mut request: http::Request<WasiBody>,
    target: Option<(String, u16)>,
    net: Arc<OutboundNet>,
) -> Result<(http::Response<WasiBody>, IoFuture), HttpError> {
    {
        let Some((host, port)) = target else {
            tracing::info!(uri = %request.uri(), "outbound request denied: not in the outbound_http grant");
            return Err(HttpError::HttpRequestDenied);
        };
        let addrs = net.resolve(&host, port).await.map_err(|e| {
            tracing::info!(uri = %request.uri(), reason = %e, "outbound request denied");
            match e {
                Refused::NoAddress { .. } => HttpError::DestinationNotFound,
                Refused::Internal { .. } => HttpError::DestinationIpProhibited,
            }
        })?;
        let tcp = connect(&addrs).await?;
        // HTTP/1.1 on the wire wants the origin form.
        let https = request.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
        let origin = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
        *request.uri_mut() = origin.parse().map_err(|_| HttpError::HttpRequestUriInvalid)?;
        if !https {
            return exchange(tcp, request).await;
        }
        let name = OutboundNet::server_name(&host).ok_or(HttpError::HttpRequestUriInvalid)?;
        let tls = tokio_rustls::TlsConnector::from(net.tls()).connect(name, tcp).await.map_err(|e| {
            tracing::info!(%host, error = %e, "outbound TLS handshake failed");
            HttpError::TlsCertificateError
        })?;
        exchange(tls, request).await
    }
}

/// A connection to the first of `addrs` that answers within 10 s.
async fn connect(addrs: &[std::net::SocketAddr]) -> Result<tokio::net::TcpStream, HttpError> {
    let mut last = HttpError::ConnectionRefused;
    for a in addrs {
        match tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(a)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = HttpError::Connect(e),
            Err(_) => last = HttpError::ConnectionTimeout,
        }
    }
    Err(last)
}

/// Send one HTTP/1.1 request over `io`; the connection is driven until the body is read.
async fn exchange<IO>(
    io: IO,
    request: http::Request<WasiBody>,
) -> Result<(http::Response<WasiBody>, IoFuture), HttpError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let io = tokio::spawn(conn);
    let resp = sender.send_request(request).await?;
    let io: IoFuture = Box::new(async move {
        match io.await {
            Ok(r) => r.map_err(HttpError::from),
            Err(e) => Err(HttpError::InternalError(Some(e.to_string()))),
        }
    });
    Ok((resp.map(|b| b.map_err(HttpError::from).boxed_unsync()), io))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "::7f00:1",
            "::ffff:0:a00:1",
            "2002:a00:1::1",
            "2001:0:4136:e378::1",
            "fec0::1",
            "64:ff9b:1::1",
        ] {
            assert!(internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "2606:4700::1111",
            "100.128.0.1",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn names_resolving_inward_are_refused_and_granted_addresses_are_not() {
        let pins = HashMap::from([
            ("metadata.test".to_string(), "169.254.169.254".parse().unwrap()),
            ("public.test".to_string(), "93.184.216.34".parse().unwrap()),
        ]);
        let net = OutboundNet::new(&[] as &[&str], pins).unwrap();
        net.set_own(vec!["93.184.216.34:8081".parse().unwrap()]);
        let e = net.resolve("metadata.test", 80).await.unwrap_err();
        assert!(matches!(&e, Refused::Internal { addrs, .. } if addrs == "169.254.169.254"), "{e}");
        assert!(matches!(net.resolve("localhost", 8081).await, Err(Refused::Internal { .. })), "loopback");
        assert_eq!(net.resolve("public.test", 443).await.unwrap(), vec!["93.184.216.34:443".parse().unwrap()]);
        assert!(matches!(net.resolve("public.test", 8081).await, Err(Refused::Internal { .. })), "own listener");
        let mapped = HashMap::from([("mapped.test".to_string(), "::ffff:93.184.216.34".parse().unwrap())]);
        let net2 = OutboundNet::new(&[] as &[&str], mapped).unwrap();
        net2.set_own(vec!["93.184.216.34:8081".parse().unwrap()]);
        assert!(matches!(net2.resolve("mapped.test", 8081).await, Err(Refused::Internal { .. })), "own, IPv6-mapped");
        // The address itself in the grant is the operator's choice.
        assert_eq!(net.resolve("127.0.0.1", 8081).await.unwrap(), vec!["127.0.0.1:8081".parse().unwrap()]);
        assert_eq!(net.resolve("[::1]", 80).await.unwrap(), vec!["[::1]:80".parse().unwrap()]);
    }

    #[test]
    fn a_guest_may_not_set_the_hop_by_hop_and_host_headers_and_may_set_others() {
        let net = Arc::new(OutboundNet::new(&[] as &[&str], HashMap::new()).unwrap());
        let mut policy = OutboundPolicy { allowed: Arc::new(Vec::new()), net, trace: Default::default() };
        for name in ["connection", "keep-alive", "transfer-encoding", "upgrade", "host", "proxy-authorization"] {
            assert!(policy.is_forbidden_header(&http::HeaderName::from_static(name)), "{name}");
        }
        for name in ["content-type", "authorization", "x-request-id", "traceparent"] {
            assert!(!policy.is_forbidden_header(&http::HeaderName::from_static(name)), "{name}");
        }
    }
}
