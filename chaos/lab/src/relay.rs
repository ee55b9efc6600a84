//! Bad links without netem (this kernel has none): a seeded userspace UDP relay on every
//! directed node-to-node QUIC path. A DNAT rule in the sending node's namespace diverts
//! what it sends to a peer's QUIC port into a relay on the bridge's address; the relay
//! forwards to the peer and back, delaying (with jitter), dropping, duplicating and
//! reordering packets as its [`Impairment`] says, or blackholing them. Conntrack rewrites
//! the replies, so the nodes keep their real addresses in config and see nothing but a
//! worse network. A healthy relay forwards at once.

use crate::netns::{Lab, Nat};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// What a directed link does to each packet.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Impairment {
    /// Added to every packet.
    pub delay: Duration,
    /// Up to this much more, uniformly (packets overtake each other when it exceeds their
    /// spacing).
    pub jitter: Duration,
    /// The chance a packet is dropped.
    pub loss: f64,
    /// The chance a packet is sent twice (the copy with a delay of its own).
    pub duplicate: f64,
    /// The chance a packet is held back by a further `delay + jitter`, so later ones pass it.
    pub reorder: f64,
    /// Drop everything.
    pub blackhole: bool,
}

impl Impairment {
    /// A link that forwards everything at once.
    pub const HEALTHY: Impairment = Impairment {
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        loss: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        blackhole: false,
    };

    /// When the copies of one packet go out, counted from its arrival: none (dropped), one,
    /// or two (duplicated).
    pub fn schedule(&self, rng: &mut impl Rng) -> Vec<Duration> {
        if self.blackhole || (self.loss > 0.0 && rng.random_bool(self.loss.min(1.0))) {
            return Vec::new();
        }
        let copies = if self.duplicate > 0.0 && rng.random_bool(self.duplicate.min(1.0)) {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                let mut delay = self.delay + self.jittered(rng);
                if self.reorder > 0.0 && rng.random_bool(self.reorder.min(1.0)) {
                    delay += self.delay + self.jitter;
                }
                delay
            })
            .collect()
    }

    fn jittered(&self, rng: &mut impl Rng) -> Duration {
        match self.jitter.as_micros() as u64 {
            0 => Duration::ZERO,
            j => Duration::from_micros(rng.random_range(0..=j)),
        }
    }
}

/// One direction of traffic between two nodes: its impairment and its seeded choices.
struct Link {
    state: Mutex<(Impairment, StdRng)>,
    /// Packets scheduled so far (for the report, and for tests to await).
    packets: std::sync::atomic::AtomicU64,
}

impl Link {
    fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new((Impairment::HEALTHY, StdRng::seed_from_u64(seed))),
            packets: Default::default(),
        })
    }

    fn schedule(&self) -> Vec<Duration> {
        self.packets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (impairment, rng) = &mut *state;
        if *impairment == Impairment::HEALTHY {
            return vec![Duration::ZERO];
        }
        impairment.schedule(rng)
    }

    fn set(&self, impairment: Impairment) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 = impairment;
    }
}

/// Sends `data` on `socket` (to `to`, or to its connected peer) as `link` schedules it.
async fn forward(link: &Link, socket: &Arc<UdpSocket>, to: Option<SocketAddr>, data: &[u8]) {
    for delay in link.schedule() {
        if delay.is_zero() {
            let _ = send(socket, to, data).await;
            continue;
        }
        let (socket, data) = (socket.clone(), data.to_vec());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = send(&socket, to, &data).await;
        });
    }
}

async fn send(socket: &UdpSocket, to: Option<SocketAddr>, data: &[u8]) -> io::Result<usize> {
    match to {
        Some(to) => socket.send_to(data, to).await,
        None => socket.send(data).await,
    }
}

/// A node as the relays see it: its id, its lab host and its QUIC address.
pub struct RelayedNode<'a> {
    /// The node id.
    pub id: u64,
    /// Its lab host.
    pub host: &'a str,
    /// Its QUIC address.
    pub raft: SocketAddr,
}

/// A relay on every directed path between the nodes; removed (tasks stopped, DNAT rules
/// deleted) on drop.
pub struct Relays {
    links: BTreeMap<(u64, u64), Arc<Link>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    _nat: Vec<Nat>,
}

impl Relays {
    /// Starts one relay per ordered pair of `nodes` on the lab's bridge address and diverts
    /// each node's QUIC traffic through them. Call before the nodes start: a flow conntrack
    /// already knows is not diverted.
    pub async fn start(lab: &Lab, nodes: &[RelayedNode<'_>], seed: u64) -> io::Result<Self> {
        let mut links = BTreeMap::new();
        for a in nodes {
            for b in nodes.iter().filter(|b| b.id != a.id) {
                let mix = seed ^ (a.id << 32 | b.id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                links.insert((a.id, b.id), Link::new(mix));
            }
        }
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Default::default();
        let mut nat = Vec::new();
        for a in nodes {
            for b in nodes.iter().filter(|b| b.id != a.id) {
                let front = UdpSocket::bind(SocketAddr::new(IpAddr::V4(lab.gateway()), 0)).await?;
                let relay = front.local_addr()?;
                let IpAddr::V4(to) = b.raft.ip() else {
                    return Err(io::Error::other("the lab is IPv4"));
                };
                nat.push(lab.divert_udp(a.host, to, b.raft.port(), relay)?);
                let there = links[&(a.id, b.id)].clone();
                let back = links[&(b.id, a.id)].clone();
                let task = tokio::spawn(relay_path(
                    Arc::new(front),
                    b.raft,
                    there,
                    back,
                    tasks.clone(),
                ));
                tasks.lock().unwrap_or_else(|e| e.into_inner()).push(task);
            }
        }
        Ok(Self {
            links,
            tasks,
            _nat: nat,
        })
    }

    /// Impairs what node `from` sends to node `to` (on the flows either of them began).
    pub fn impair(&self, from: u64, to: u64, impairment: Impairment) {
        if let Some(link) = self.links.get(&(from, to)) {
            link.set(impairment);
        }
    }

    /// Impairs every directed link.
    pub fn impair_all(&self, impairment: Impairment) {
        for link in self.links.values() {
            link.set(impairment);
        }
    }

    /// Packets each directed link (from, to) has carried or dropped so far.
    pub fn packets(&self) -> BTreeMap<(u64, u64), u64> {
        self.links
            .iter()
            .map(|(k, l)| (*k, l.packets.load(std::sync::atomic::Ordering::Relaxed)))
            .collect()
    }

    /// Every link healthy again.
    pub fn heal(&self) {
        self.impair_all(Impairment::HEALTHY);
    }
}

impl Drop for Relays {
    fn drop(&mut self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

/// One relay: what arrives on `front` from a sender goes to `upstream` through a socket of
/// that sender's own (`there`), and what comes back goes to the sender (`back`).
async fn relay_path(
    front: Arc<UdpSocket>,
    upstream: SocketAddr,
    there: Arc<Link>,
    back: Arc<Link>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let mut senders: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = front.recv_from(&mut buf).await else {
            continue;
        };
        let socket = match senders.get(&from) {
            Some(s) => s.clone(),
            None => {
                let Ok(socket) = open_upstream(front.local_addr(), upstream).await else {
                    continue;
                };
                let socket = Arc::new(socket);
                senders.insert(from, socket.clone());
                let task = tokio::spawn(replies(socket.clone(), front.clone(), from, back.clone()));
                tasks.lock().unwrap_or_else(|e| e.into_inner()).push(task);
                socket
            }
        };
        forward(&there, &socket, None, &buf[..n]).await;
    }
}

/// A socket on the relay's address connected to `upstream`.
async fn open_upstream(
    local: io::Result<SocketAddr>,
    upstream: SocketAddr,
) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(local?.ip(), 0)).await?;
    socket.connect(upstream).await?;
    Ok(socket)
}

/// Carries the upstream's replies to `sender` through `front`.
async fn replies(
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    sender: SocketAddr,
    link: Arc<Link>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match upstream.recv(&mut buf).await {
            Ok(n) => forward(&link, &front, Some(sender), &buf[..n]).await,
            // A connected UDP socket hears ICMP errors: a datagram sent before the peer
            // bound its port (or while it restarts) is refused, and the relay must outlast
            // that rather than stop carrying its replies.
            Err(_) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn a_healthy_link_sends_each_packet_once_at_once() {
        assert_eq!(
            Impairment::HEALTHY.schedule(&mut rng()),
            vec![Duration::ZERO]
        );
    }

    #[test]
    fn a_blackhole_sends_nothing() {
        let hole = Impairment {
            blackhole: true,
            ..Impairment::HEALTHY
        };
        assert!((0..100).all(|_| hole.schedule(&mut rng()).is_empty()));
    }

    #[test]
    fn loss_duplication_and_delay_come_in_their_proportions_and_bounds() {
        let bad = Impairment {
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(5),
            loss: 0.2,
            duplicate: 0.1,
            reorder: 0.0,
            blackhole: false,
        };
        let mut rng = rng();
        let plans: Vec<Vec<Duration>> = (0..10_000).map(|_| bad.schedule(&mut rng)).collect();
        let lost = plans.iter().filter(|p| p.is_empty()).count();
        let doubled = plans.iter().filter(|p| p.len() == 2).count();
        assert!((1_700..2_300).contains(&lost), "lost {lost} of 10000");
        assert!(
            (600..1_000).contains(&doubled),
            "doubled {doubled} of 10000"
        );
        let delays = plans.iter().flatten();
        assert!(delays
            .clone()
            .all(|d| (Duration::from_millis(10)..=Duration::from_millis(15)).contains(d)));
    }

    #[test]
    fn a_reordered_packet_waits_long_enough_for_the_next_to_overtake_it() {
        let reorder = Impairment {
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(5),
            reorder: 1.0,
            ..Impairment::HEALTHY
        };
        let plan = reorder.schedule(&mut rng());
        assert!(plan[0] >= Duration::from_millis(25), "{plan:?}");
    }

    #[test]
    fn the_same_seed_makes_the_same_choices() {
        let bad = Impairment {
            loss: 0.5,
            duplicate: 0.5,
            jitter: Duration::from_millis(3),
            ..Impairment::HEALTHY
        };
        let run = || {
            let mut rng = rng();
            (0..50).map(|_| bad.schedule(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[tokio::test]
    async fn a_relay_outlasts_a_peer_that_was_not_listening_yet() {
        // The peer's port is closed at first: what the relay sends there is refused (ICMP),
        // and the refusal is pending on its socket when it starts carrying replies.
        let port = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peer = port.local_addr().unwrap();
        drop(port);
        let upstream = Arc::new(open_upstream(Ok(peer), peer).await.unwrap());
        upstream.send(b"early").await.unwrap();
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sender = client.local_addr().unwrap();
        let carrying = tokio::spawn(replies(upstream.clone(), front, sender, Link::new(1)));
        // Then the peer starts on that port and answers.
        let peer = UdpSocket::bind(peer).await.unwrap();
        peer.send_to(b"reply", upstream.local_addr().unwrap())
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let heard = tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf));
        let (n, _) = heard
            .await
            .expect("the relay stopped carrying replies after a refusal")
            .unwrap();
        assert_eq!(&buf[..n], b"reply");
        carrying.abort();
    }

    #[tokio::test]
    async fn a_relay_carries_datagrams_both_ways_and_a_blackhole_stops_them() {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let relay = front.local_addr().unwrap();
        let (there, back) = (Link::new(1), Link::new(2));
        let tasks = Default::default();
        let path = tokio::spawn(relay_path(
            front,
            upstream.local_addr().unwrap(),
            there.clone(),
            back,
            tasks,
        ));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"ping", relay).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, via) = upstream.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"ping");
        upstream.send_to(b"pong", via).await.unwrap();
        let (n, from) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"pong"[..], relay));

        there.set(Impairment {
            blackhole: true,
            ..Impairment::HEALTHY
        });
        client.send_to(b"lost", relay).await.unwrap();
        while there.packets.load(std::sync::atomic::Ordering::Relaxed) < 2 {
            tokio::task::yield_now().await;
        }
        there.set(Impairment::HEALTHY);
        client.send_to(b"after", relay).await.unwrap();
        let (n, _) = upstream.recv_from(&mut buf).await.unwrap();
        assert_eq!(
            &buf[..n],
            b"after",
            "the blackholed datagram must not arrive"
        );
        path.abort();
    }
}
