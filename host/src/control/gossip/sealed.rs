//! chitchat's transport, sealed: every datagram leaving the gossip socket is a sealed
//! packet ([`nanogrid_wire::seal`]) and every datagram arriving is opened, checked
//! ([`nanogrid_wire::chitchat::check`]) and only then handed to chitchat. What fails is
//! dropped and counted by reason.
//!
//! chitchat keeps its wire format to itself (its (de)serialisers are crate-private), so
//! this transport uses chitchat's own UDP socket as a codec: a message is encoded by
//! having chitchat's socket send it to a relay socket on loopback, and decoded by
//! relaying checked bytes to chitchat's socket. Both codec sockets accept datagrams only
//! from each other (their addresses are checked), and neither is the gossip port.
//!
//! Receiving runs in its own task (stopped with the socket), so chitchat can cancel
//! `recv` at any point without leaving a datagram half handled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use nanogrid_wire::seal::{GossipKey, Opener, Reject, seal};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::ratelog::RateLimited;
use crate::transport::Faults;

/// Every reason a received datagram is dropped (metric labels).
pub const REJECT_REASONS: [&str; 9] =
    ["truncated", "version", "forged", "foreign-cluster", "stale", "replay", "busy", "malformed", "invalid"];

/// Gossip counters, kept across restarts of the gossip task.
#[derive(Default)]
pub struct GossipStats {
    rejected: [AtomicU64; 9],
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub send_failed: AtomicU64,
    pub restarts: AtomicU64,
    pub running: AtomicBool,
}

impl GossipStats {
    pub fn reject(&self, reason: &str) {
        if let Some(i) = REJECT_REASONS.iter().position(|r| *r == reason) {
            self.rejected[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn rejected(&self) -> Vec<(&'static str, u64)> {
        REJECT_REASONS.iter().zip(&self.rejected).map(|(r, c)| (*r, c.load(Ordering::Relaxed))).collect()
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The sealed transport chitchat is started with.
#[derive(Clone)]
pub struct SealedUdp {
    pub key: GossipKey,
    pub cluster_id: String,
    /// Opens received packets; kept across restarts of the gossip task, so the nonces
    /// seen before a restart are still refused after it.
    pub opener: Arc<std::sync::Mutex<Opener>>,
    pub faults: Arc<Faults>,
    pub stats: Arc<GossipStats>,
    pub log: Arc<RateLimited>,
}

#[async_trait::async_trait]
impl Transport for SealedUdp {
    async fn open(&self, listen: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let outer = Arc::new(
            UdpSocket::bind(listen).await.with_context(|| format!("binding the gossip socket on {listen}/UDP"))?,
        );
        let (tx, rx) = mpsc::channel(256);
        let receiver = Receiver { outer: outer.clone(), codec: Codec::open().await?, cfg: self.clone() };
        let task = tokio::spawn(receiver.run(tx));
        Ok(Box::new(SealedSocket { outer, rx, task, codec: Codec::open().await?, cfg: self.clone(), stalled: false }))
    }
}

struct SealedSocket {
    outer: Arc<UdpSocket>,
    rx: mpsc::Receiver<anyhow::Result<RecvOutcome>>,
    task: tokio::task::JoinHandle<()>,
    codec: Codec,
    cfg: SealedUdp,
    stalled: bool,
}

impl Drop for SealedSocket {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait::async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.outer.local_addr()?)
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        if self.cfg.faults.take_gossip_stall() {
            self.stalled = true;
        }
        if self.stalled {
            // Fault injection: the gossip task hangs here for good, as if wedged.
            std::future::pending::<()>().await;
        }
        let plain = match self.codec.encode(envelope).await {
            Ok(p) => p,
            Err(e) => {
                // A late answer would be taken for the next message's: start afresh.
                self.codec = Codec::open().await?;
                return Err(e);
            }
        };
        let packet = seal(&self.cfg.key, &self.cfg.cluster_id, now_ms(), &plain)?;
        match self.outer.send_to(&packet, to).await {
            Ok(n) => {
                self.cfg.stats.sent.fetch_add(1, Ordering::Relaxed);
                Ok(SendOutcome { num_bytes_sent: n })
            }
            Err(e) => {
                self.cfg.stats.send_failed.fetch_add(1, Ordering::Relaxed);
                Err(anyhow::anyhow!("sending a {}-byte gossip packet to {to}: {e}", packet.len()))
            }
        }
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        match self.rx.recv().await {
            Some(r) => r,
            None => Err(anyhow::anyhow!("the gossip receiver stopped")),
        }
    }
}

/// Reads the gossip socket: open, check, decode, pass on.
struct Receiver {
    outer: Arc<UdpSocket>,
    codec: Codec,
    cfg: SealedUdp,
}

impl Receiver {
    async fn run(mut self, tx: mpsc::Sender<anyhow::Result<RecvOutcome>>) {
        let mut buf = vec![0u8; 65_536];
        loop {
            let (n, from) = match self.outer.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    let _ = tx.send(Err(anyhow::anyhow!("the gossip socket failed: {e}"))).await;
                    return;
                }
            };
            if self.cfg.faults.take_gossip_fail() {
                let _ = tx.send(Err(anyhow::anyhow!("gossip failure injected (fault injection)"))).await;
                return;
            }
            let Some(envelope) = self.accept(&buf[..n], from).await else { continue };
            self.cfg.stats.received.fetch_add(1, Ordering::Relaxed);
            if tx.send(Ok(RecvOutcome { from_addr: from, envelope, num_bytes_received: n })).await.is_err() {
                return;
            }
        }
    }

    async fn accept(&mut self, packet: &[u8], from: SocketAddr) -> Option<ChitchatEnvelope> {
        let opened = self.cfg.opener.lock().unwrap_or_else(|e| e.into_inner()).open(packet, now_ms());
        let plain = match opened {
            Ok(p) => p,
            Err(r) => {
                self.drop_packet(r.reason(), from, packet.len(), &r.to_string(), matches!(r, Reject::Stale { .. }));
                return None;
            }
        };
        if let Err(e) = nanogrid_wire::chitchat::check(&plain) {
            self.drop_packet(e.reason(), from, packet.len(), &e.to_string(), true);
            return None;
        }
        match self.codec.decode(&plain).await {
            Ok(envelope) => Some(envelope),
            Err(e) => {
                self.drop_packet("malformed", from, packet.len(), &format!("{e:#}"), true);
                // A late answer would pair the next packet with this one's: start afresh.
                match Codec::open().await {
                    Ok(c) => self.codec = c,
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot reopen the gossip codec"),
                }
                None
            }
        }
    }

    /// Count a dropped packet; log it unless this kind was logged in the last period.
    /// Packets that authenticated (`loud`) are worth a warning: a node of the cluster sent
    /// them. Unauthenticated ones are noise anyone can make, logged at debug.
    fn drop_packet(&self, reason: &'static str, from: SocketAddr, len: usize, detail: &str, loud: bool) {
        self.cfg.stats.reject(reason);
        if let Some(dropped) = self.cfg.log.allow(reason) {
            if loud {
                tracing::warn!(%from, reason, len, detail, dropped, "dropped a gossip packet");
            } else {
                tracing::debug!(%from, reason, len, detail, dropped, "dropped a gossip packet");
            }
        }
    }
}

/// chitchat's UDP socket used as an encoder/decoder through loopback.
struct Codec {
    inner: chitchat::transport::UdpSocket,
    inner_addr: SocketAddr,
    relay: UdpSocket,
    relay_addr: SocketAddr,
    buf: Vec<u8>,
}

const CODEC_TIMEOUT: Duration = Duration::from_millis(500);

impl Codec {
    async fn open() -> anyhow::Result<Codec> {
        let inner = chitchat::transport::UdpSocket::open("127.0.0.1:0".parse()?).await?;
        let relay = UdpSocket::bind("127.0.0.1:0").await.context("binding the gossip codec socket")?;
        Ok(Codec {
            inner_addr: inner.local_addr()?,
            relay_addr: relay.local_addr()?,
            inner,
            relay,
            buf: vec![0; 65_536],
        })
    }

    /// chitchat's bytes for `envelope`.
    async fn encode(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<Vec<u8>> {
        self.inner.send(self.relay_addr, envelope).await?;
        let got = tokio::time::timeout(CODEC_TIMEOUT, async {
            loop {
                let (n, from) = self.relay.recv_from(&mut self.buf).await?;
                if from == self.inner_addr {
                    return Ok::<_, std::io::Error>(self.buf[..n].to_vec());
                }
            }
        });
        got.await.context("encoding a gossip message timed out")?.context("encoding a gossip message")
    }

    /// The envelope chitchat reads from `bytes` (already checked).
    async fn decode(&mut self, bytes: &[u8]) -> anyhow::Result<ChitchatEnvelope> {
        self.relay.send_to(bytes, self.inner_addr).await?;
        let got = tokio::time::timeout(CODEC_TIMEOUT, async {
            loop {
                let r = self.inner.recv().await?;
                if r.from_addr == self.relay_addr {
                    return Ok::<_, anyhow::Error>(r.envelope);
                }
            }
        });
        got.await.context("chitchat did not read a checked packet")?
    }
}
