//! Kernel-level faults on loopback with iptables: packets to or from ports or addresses
//! dropped until healed, and the rules removed on drop even when a test fails.

use std::io;
use std::process::Command;

/// Packets dropped with iptables (a kernel-level partition on loopback); healed on drop.
pub struct Isolation {
    rules: Vec<Vec<String>>,
}

impl Isolation {
    fn iptables(action: &str, rule: &[String]) -> io::Result<()> {
        let status = Command::new("iptables").arg(action).args(rule).status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "iptables {action} {rule:?}: {status}"
            )))
        }
    }

    /// Heals the partition.
    pub fn heal(mut self) {
        self.remove();
    }

    fn remove(&mut self) {
        for rule in self.rules.drain(..) {
            let _ = Self::iptables("-D", &rule);
        }
    }
}

impl Drop for Isolation {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Drops every `proto` packet to or from `ports` on this host until healed (needs root and
/// iptables). `what` tags the rules so a stray one is recognisable.
pub fn drop_ports(proto: &str, ports: &[u16], what: &str) -> io::Result<Isolation> {
    let matches: Vec<(&str, String)> = ports
        .iter()
        .flat_map(|p| [("--dport", p.to_string()), ("--sport", p.to_string())])
        .collect();
    drop_matching(proto, &matches, what)
}

/// Drops every `proto` packet from or to `addr` (a loopback address such as 127.0.0.2
/// that one process binds) until healed.
pub fn drop_address(proto: &str, addr: std::net::IpAddr, what: &str) -> io::Result<Isolation> {
    let addr = addr.to_string();
    drop_matching(proto, &[("-s", addr.clone()), ("-d", addr)], what)
}

/// One INPUT rule per `(flag, value)` match, each dropping `proto`.
fn drop_matching(proto: &str, matches: &[(&str, String)], what: &str) -> io::Result<Isolation> {
    let tag = format!("tether-{}-{what}", std::process::id());
    let mut isolation = Isolation { rules: Vec::new() };
    for (flag, value) in matches {
        let rule: Vec<String> = [
            "INPUT",
            "-p",
            proto,
            flag,
            value,
            "-m",
            "comment",
            "--comment",
            &tag,
            "-j",
            "DROP",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        Isolation::iptables("-I", &rule)?;
        isolation.rules.push(rule);
    }
    Ok(isolation)
}
