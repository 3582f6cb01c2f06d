//! The campaign's network: one Linux network namespace per node, each joined by a veth
//! pair to a bridge in the host namespace, where the driver (the clients) sits. Faults
//! are nftables rules in a node's namespace (drops on its input, so senders see plain
//! loss, not errors) and a token-bucket qdisc for a slow link. Everything is created
//! under a per-run prefix and deleted on drop; traffic goes only to addresses inside
//! these namespaces.
//!
//! This kernel has no `sch_netem`, so there is no fixed added delay: a slow link is a
//! `tbf` rate limit whose queue delays packets under load, and loss is nftables'
//! `numgen random`.

use std::process::Command;

use anyhow::{Context, bail};

pub struct Net {
    pub prefix: String,
    /// The /24 the nodes live in: `10.{octet}.{subnet}.{i+1}`; the driver is `.254`.
    pub octet: u8,
    pub subnet: u8,
    pub n: usize,
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!("{} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The same, in node `i`'s namespace.
fn in_ns(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    run(&all)
}

impl Net {
    /// Create the bridge and `n` namespaces in `10.77.{subnet}.0/24`. Root only.
    pub fn create(prefix: &str, subnet: u8, n: usize) -> anyhow::Result<Net> {
        Self::create_in(prefix, 77, subnet, n)
    }

    /// [`Net::create`] in `10.{octet}.{subnet}.0/24` (the end-to-end tests use their own
    /// octet, so they can run while a campaign does).
    pub fn create_in(prefix: &str, octet: u8, subnet: u8, n: usize) -> anyhow::Result<Net> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("network namespaces need root");
        }
        let net = Net { prefix: prefix.into(), octet, subnet, n };
        net.destroy(); // leftovers of a run that was killed
        remove_orphans(prefix);
        let br = net.bridge();
        run(&["ip", "link", "add", &br, "type", "bridge"])?;
        run(&["ip", "addr", "add", &format!("{}/24", net.driver_ip()), "dev", &br])?;
        run(&["ip", "link", "set", &br, "up"])?;
        for i in 0..n {
            let (ns, veth) = (net.ns(i), format!("{prefix}v{i}"));
            run(&["ip", "netns", "add", &ns])?;
            run(&["ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            run(&["ip", "link", "set", &veth, "master", &br, "up"])?;
            run(&["ip", "-n", &ns, "addr", "add", &format!("{}/24", net.ip(i)), "dev", "eth0"])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            in_ns(&ns, &["nft", "add", "table", "inet", "chaos"])?;
            in_ns(&ns, &["nft", "add", "chain", "inet", "chaos", "input", "{ type filter hook input priority 0; }"])?;
        }
        Ok(net)
    }

    pub fn bridge(&self) -> String {
        format!("{}br", self.prefix)
    }

    pub fn ns(&self, i: usize) -> String {
        format!("{}{}", self.prefix, i + 1)
    }

    pub fn ip(&self, i: usize) -> String {
        format!("10.{}.{}.{}", self.octet, self.subnet, i + 1)
    }

    pub fn driver_ip(&self) -> String {
        format!("10.{}.{}.254", self.octet, self.subnet)
    }

    /// Drop everything node `to` receives from node `from` (one direction).
    pub fn block(&self, from: usize, to: usize) -> anyhow::Result<()> {
        let from = self.ip(from);
        in_ns(&self.ns(to), &["nft", "add", "rule", "inet", "chaos", "input", "ip", "saddr", &from, "drop"])
    }

    /// Make node `to` drop the TCP segments it receives from the nodes `from`, and nothing
    /// else: its earlier rules are replaced in one nftables transaction, so no packet
    /// passes in between. Their peer connections (Raft, the grid, forwarding) fail while
    /// gossip (UDP) still passes.
    #[allow(dead_code)] // the campaign's faults cut whole links; the end-to-end tests use this
    pub fn drop_tcp_from(&self, to: usize, from: &[usize]) -> anyhow::Result<()> {
        self.tcp_from(to, from, "drop")
    }

    /// [`Net::drop_tcp_from`], but a connection attempt is answered with a reset, so the
    /// sender knows at once instead of waiting out its connect timeout.
    #[allow(dead_code)] // as above
    pub fn refuse_tcp_from(&self, to: usize, from: &[usize]) -> anyhow::Result<()> {
        self.tcp_from(to, from, "reject with tcp reset")
    }

    fn tcp_from(&self, to: usize, from: &[usize], verdict: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let mut script = String::from("flush chain inet chaos input\n");
        for &f in from {
            script += &format!("add rule inet chaos input ip saddr {} meta l4proto tcp {verdict}\n", self.ip(f));
        }
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(to), "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running nft")?;
        child.stdin.take().context("nft's stdin")?.write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("nft -f failed on {}: {}", self.ns(to), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    /// Drop `percent` of what node `i` receives from the other nodes.
    pub fn lossy(&self, i: usize, percent: u64) -> anyhow::Result<()> {
        let peers = format!("{}-{}", self.ip(0), self.ip(self.n - 1));
        let rule = ["ip", "saddr", &peers, "numgen", "random", "mod", "100", "<", &percent.to_string(), "drop"];
        let mut args = vec!["nft", "add", "rule", "inet", "chaos", "input"];
        args.extend_from_slice(&rule);
        in_ns(&self.ns(i), &args)
    }

    /// Limit what node `i` sends to `kbit` kbit/s, queueing up to 300 ms.
    pub fn slow(&self, i: usize, kbit: u64) -> anyhow::Result<()> {
        let rate = format!("{kbit}kbit");
        in_ns(
            &self.ns(i),
            &["tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", &rate, "burst", "16kbit", "latency", "300ms"],
        )
    }

    /// Remove every fault from every node.
    pub fn heal(&self) -> anyhow::Result<()> {
        for i in 0..self.n {
            in_ns(&self.ns(i), &["nft", "flush", "chain", "inet", "chaos", "input"])?;
            let _ = in_ns(&self.ns(i), &["tc", "qdisc", "del", "dev", "eth0", "root"]);
        }
        Ok(())
    }

    fn destroy(&self) {
        for i in 0..self.n {
            let _ = run(&["ip", "netns", "del", &self.ns(i)]);
            let _ = run(&["ip", "link", "del", &format!("{}v{i}", self.prefix)]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge()]);
    }
}

/// Namespaces of campaigns that were killed (`kill -9` leaves them): removed when no
/// other campaign is running.
fn remove_orphans(mine: &str) {
    let me = std::process::id().to_string();
    let others = std::fs::read_dir("/proc").into_iter().flatten().flatten().any(|e| {
        let pid = e.file_name().to_string_lossy().into_owned();
        pid != me && std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "nanogrid-chaos")
    });
    if others {
        return;
    }
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with("ngc") && !name.starts_with(mine) {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
    let Ok(out) = Command::new("ip").args(["-br", "link"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // Bridges (`ngcNNNbr`) and host ends of veth pairs (`ngcNNNvI@ifK`).
        let name = line.split_whitespace().next().unwrap_or("").split('@').next().unwrap_or("");
        if name.starts_with("ngc") && !name.starts_with(mine) {
            let _ = run(&["ip", "link", "del", name]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.destroy();
    }
}
