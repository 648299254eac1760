//! dnsmasq (Debian's `dnsmasq-base`) run inside a test host's namespace:
//! the upstream DNS server the cluster DNS tests forward to, and the
//! comparison server of `cargo xtask bench dns` (dnsmasq was kube-dns's
//! cache layer). Killed on drop.

use crate::netns::Netns;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

pub struct Dnsmasq {
    child: Child,
}

impl Dnsmasq {
    /// dnsmasq on `listen`:53 in `ns`, with nothing but `args` configured
    /// (no /etc/resolv.conf, /etc/hosts or /etc/dnsmasq.conf), in the
    /// foreground, logging to stderr; returns once it has started.
    pub fn start(ns: &Netns, listen: &str, args: &[String]) -> Self {
        let mut child = ns
            .command("dnsmasq")
            .args(["--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--user=root", "--pid-file="])
            .args(["--bind-interfaces", &format!("--listen-address={listen}"), "--port=53", "--log-facility=-"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dnsmasq (cargo xtask deps installs dnsmasq-base)");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut said = Vec::new();
        let started = lines.by_ref().take(20).map_while(Result::ok).inspect(|l| said.push(l.clone())).any(|l| l.contains("started"));
        // Keep draining, so a chatty dnsmasq never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        assert!(started, "dnsmasq on {listen} did not start:\n{}", said.join("\n"));
        Dnsmasq { child }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
