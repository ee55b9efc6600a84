//! Hosts as network namespaces on one bridge: each host gets its own namespace, a veth pair
//! into the bridge and an address of the lab's own subnet (10.x.y.0/24, the bridge holds
//! .1, so the process that built the lab reaches every host). Faults are iptables rules
//! *inside* a host's namespace, so they are per host and kernel-level.
//!
//! Everything a [`Lab`] creates (namespaces, bridge, veths, the FORWARD rules that let
//! bridged traffic past a host firewall such as Docker's) is removed when it drops, also
//! when a test panics; a lab left by a killed process (its pid is in every name) is swept
//! by the next one. One process builds one lab at a time (names and the subnet derive
//! from its pid). Needs root and `ip`/`iptables` (`./x test` installs iproute2 and
//! iptables); [`Lab::available`] says why not, for a visible skip.

use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

/// Names of everything a lab creates start with this, then the owner's pid.
const NETNS_PREFIX: &str = "tcl-";
const LINK_PREFIX: &str = "tcb";

/// One host: a network namespace with one address on the lab's bridge.
#[derive(Debug, Clone)]
pub struct Host {
    /// The host's name in the lab (e.g. `n1`, `robot-1`).
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// Its address on the bridge.
    pub addr: Ipv4Addr,
}

/// A set of hosts on one bridge; removed on drop.
#[derive(Debug)]
pub struct Lab {
    bridge: String,
    /// The host-side ends of the veth pairs: deleting one deletes its pair at once, where a
    /// namespace's own teardown is deferred by the kernel (a lab built right after would
    /// find the names taken).
    veths: Vec<String>,
    gateway: Ipv4Addr,
    hosts: Vec<Host>,
    forward: Vec<Vec<String>>,
}

/// Runs a command to completion; an error carries its stderr.
fn run(program: &str, args: &[&str]) -> io::Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

fn ip(args: &[&str]) -> io::Result<()> {
    run("ip", args)
}

/// `iptables` in the namespace `netns` (the root namespace for `None`).
fn iptables(netns: Option<&str>, args: &[String]) -> io::Result<()> {
    let mut all: Vec<&str> = Vec::new();
    if let Some(ns) = netns {
        all.extend(["netns", "exec", ns, "iptables"]);
    }
    all.push("-w");
    all.extend(args.iter().map(String::as_str));
    match netns {
        Some(_) => ip(&all),
        None => run("iptables", &all),
    }
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid in a name this module made (`tcl-<pid>-…`, `tcb<pid>…`), if any.
fn owner(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix(NETNS_PREFIX)
        .or_else(|| name.strip_prefix(LINK_PREFIX))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Removes what labs of dead processes left behind (a test killed with SIGKILL).
fn sweep() {
    let list = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    for line in list(&["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if owner(name).is_some_and(|pid| !pid_alive(pid)) {
            let _ = ip(&["netns", "del", name]);
        }
    }
    // Bridges and the host-side veth ends (`name@peer`).
    for line in list(&["-o", "link", "show"]).lines() {
        let name = line.split(':').nth(1).unwrap_or_default().trim();
        let name = name.split('@').next().unwrap_or_default();
        if owner(name).is_some_and(|pid| !pid_alive(pid)) {
            let _ = ip(&["link", "del", name]);
        }
    }
}

impl Lab {
    /// Whether labs can be built here: root, `ip` and `iptables`. `Err` says why not.
    pub fn available() -> Result<(), String> {
        if !nix_is_root() {
            return Err("network namespaces need root".into());
        }
        for tool in ["ip", "iptables"] {
            let found = Command::new(tool)
                .arg("-V")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok();
            if !found {
                return Err(format!(
                    "`{tool}` is not installed (apt install iproute2 iptables)"
                ));
            }
        }
        Ok(())
    }

    /// Builds a bridge and one namespace per name, addressed .10, .11, … in a subnet of this
    /// process's own. On any failure what was built is removed.
    pub fn create(names: &[&str]) -> io::Result<Self> {
        sweep();
        let pid = std::process::id();
        // A subnet per process: concurrent tests (one process each) do not share one.
        let subnet = [(100 + pid % 100) as u8, (pid / 100 % 256) as u8];
        let gateway = Ipv4Addr::new(10, subnet[0], subnet[1], 1);
        let mut lab = Lab {
            bridge: format!("{LINK_PREFIX}{pid}"),
            veths: Vec::new(),
            gateway,
            hosts: Vec::new(),
            forward: Vec::new(),
        };
        ip(&["link", "add", &lab.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", &lab.bridge])?;
        ip(&["link", "set", &lab.bridge, "up"])?;
        // A host firewall (Docker sets FORWARD to DROP) must not eat bridged traffic.
        for rule in [
            vec!["-i", &lab.bridge, "-o", &lab.bridge],
            vec!["-i", &lab.bridge],
            vec!["-o", &lab.bridge],
        ] {
            let mut rule: Vec<String> = std::iter::once("FORWARD")
                .chain(rule)
                .chain(["-j", "ACCEPT"])
                .map(str::to_owned)
                .collect();
            iptables(None, &[&["-I".to_owned()][..], &rule].concat())?;
            rule.insert(0, "-D".into());
            lab.forward.push(rule);
        }
        for (i, name) in names.iter().enumerate() {
            let addr = Ipv4Addr::new(10, subnet[0], subnet[1], 10 + i as u8);
            let netns = format!("{NETNS_PREFIX}{pid}-{name}");
            let outer = format!("{LINK_PREFIX}{pid}h{i}");
            let inner = format!("{LINK_PREFIX}{pid}n{i}");
            ip(&["netns", "add", &netns])?;
            lab.hosts.push(Host {
                name: (*name).to_owned(),
                netns: netns.clone(),
                addr,
            });
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            lab.veths.push(outer.clone());
            ip(&["link", "set", &inner, "netns", &netns])?;
            ip(&["link", "set", &outer, "master", &lab.bridge, "up"])?;
            let inside = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &netns, "ip"];
                all.extend(args);
                ip(&all)
            };
            inside(&["link", "set", &inner, "name", "eth0"])?;
            inside(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            inside(&["link", "set", "eth0", "up"])?;
            inside(&["link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    /// The host called `name`.
    ///
    /// # Panics
    /// If the lab has no such host (a bug in the caller).
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in the lab"))
    }

    /// Every host, in creation order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The bridge's own address, through which this process reaches the hosts.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// A command that runs `program` inside host `name`'s namespace.
    pub fn command(&self, name: &str, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.host(name).netns])
            .arg(program);
        command
    }

    /// Drops every packet between host `name` and the hosts `from` (both ways, by rules in
    /// `name`'s namespace) until the returned [`Cut`] heals or drops.
    pub fn cut(&self, name: &str, from: &[&str]) -> io::Result<Cut> {
        self.rules(name, from, &[("INPUT", "-s"), ("OUTPUT", "-d")], &[])
    }

    /// Drops what host `name` sends to the hosts `to`, but not what they send it: an
    /// asymmetric (one-way) cut.
    pub fn cut_one_way(&self, name: &str, to: &[&str]) -> io::Result<Cut> {
        self.rules(name, to, &[("OUTPUT", "-d")], &[])
    }

    /// Drops every `every`-th packet host `name` sends to each of the hosts `to` (iptables
    /// `statistic` in its deterministic `nth` mode, so a run repeats): a lossy link.
    pub fn lossy(&self, name: &str, to: &[&str], every: u32) -> io::Result<Cut> {
        let every = every.max(2).to_string();
        let matcher = [
            "-m",
            "statistic",
            "--mode",
            "nth",
            "--every",
            &every,
            "--packet",
            "0",
        ];
        self.rules(name, to, &[("OUTPUT", "-d")], &matcher)
    }

    /// Sends what host `name` sends to `to`:`port` over UDP to `relay` instead (a DNAT
    /// rule in `name`'s `nat` table; conntrack rewrites the replies back, so `name` still
    /// sees `to`:`port` answering). Only flows that begin after the rule are diverted:
    /// install it before the processes start talking.
    pub fn divert_udp(
        &self,
        name: &str,
        to: Ipv4Addr,
        port: u16,
        relay: std::net::SocketAddr,
    ) -> io::Result<Nat> {
        let rule: Vec<String> = [
            "OUTPUT",
            "-p",
            "udp",
            "-d",
            &to.to_string(),
            "--dport",
            &port.to_string(),
            "-j",
            "DNAT",
            "--to-destination",
            &relay.to_string(),
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        let netns = self.host(name).netns.clone();
        let table = ["-t".to_owned(), "nat".to_owned()];
        iptables(
            Some(&netns),
            &[&table[..], &["-A".to_owned()], &rule].concat(),
        )?;
        Ok(Nat {
            netns,
            rule: [&table[..], &["-D".to_owned()], &rule].concat(),
        })
    }

    /// Limits what host `name` sends to `kbit` kbit/s (a `tbf` queueing discipline on its
    /// interface; this kernel has no netem, tbf it has) until the [`Throttle`] drops.
    pub fn throttle(&self, name: &str, kbit: u32) -> io::Result<Throttle> {
        let netns = self.host(name).netns.clone();
        let rate = format!("{kbit}kbit");
        // A burst of a few full frames and half a second of queue: beyond that, drops.
        ip(&[
            "netns", "exec", &netns, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate",
            &rate, "burst", "16kb", "latency", "500ms",
        ])?;
        Ok(Throttle { netns })
    }

    /// One DROP rule per (chain, address flag) and peer in `name`'s namespace, with extra
    /// `matcher` arguments; all removed when the [`Cut`] drops.
    fn rules(
        &self,
        name: &str,
        peers: &[&str],
        chains: &[(&str, &str)],
        matcher: &[&str],
    ) -> io::Result<Cut> {
        let host = self.host(name);
        let mut cut = Cut {
            netns: host.netns.clone(),
            rules: Vec::new(),
        };
        for other in peers {
            let addr = self.host(other).addr.to_string();
            for (chain, flag) in chains {
                let rule: Vec<String> = [*chain, *flag, &addr]
                    .into_iter()
                    .chain(matcher.iter().copied())
                    .chain(["-j", "DROP"])
                    .map(str::to_owned)
                    .collect();
                iptables(Some(&cut.netns), &[&["-I".to_owned()][..], &rule].concat())?;
                cut.rules.push(rule);
            }
        }
        Ok(cut)
    }

    /// Cuts host `name` off from every other host of the lab (this process still reaches it).
    pub fn isolate(&self, name: &str) -> io::Result<Cut> {
        let others: Vec<&str> = self
            .hosts
            .iter()
            .map(|h| h.name.as_str())
            .filter(|h| *h != name)
            .collect();
        self.cut(name, &others)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for veth in &self.veths {
            let _ = ip(&["link", "del", veth]);
        }
        for host in &self.hosts {
            let _ = ip(&["netns", "del", &host.netns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
        for rule in &self.forward {
            let _ = iptables(None, rule);
        }
    }
}

/// Packet-drop rules inside one namespace; removed by [`Cut::heal`] or on drop.
#[derive(Debug)]
pub struct Cut {
    netns: String,
    rules: Vec<Vec<String>>,
}

impl Cut {
    /// Removes the rules: the hosts hear each other again.
    pub fn heal(self) {
        drop(self);
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        for rule in &self.rules {
            let _ = iptables(Some(&self.netns), &[&["-D".to_owned()][..], rule].concat());
        }
    }
}

/// A DNAT rule inside one namespace ([`Lab::divert_udp`]); removed on drop.
#[derive(Debug)]
pub struct Nat {
    netns: String,
    rule: Vec<String>,
}

impl Drop for Nat {
    fn drop(&mut self) {
        let _ = iptables(Some(&self.netns), &self.rule);
    }
}

/// A rate limit on a host's interface ([`Lab::throttle`]); removed on drop.
#[derive(Debug)]
pub struct Throttle {
    netns: String,
}

impl Drop for Throttle {
    fn drop(&mut self) {
        let _ = ip(&[
            "netns",
            "exec",
            &self.netns,
            "tc",
            "qdisc",
            "del",
            "dev",
            "eth0",
            "root",
        ]);
    }
}

fn nix_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_owners_pid_so_leftovers_can_be_swept() {
        assert_eq!(owner("tcl-4242-n1"), Some(4242));
        assert_eq!(owner("tcb4242h0"), Some(4242));
        assert_eq!(owner("docker0"), None);
        assert_eq!(owner("tcl-"), None);
    }
}
