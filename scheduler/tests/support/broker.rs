//! A RabbitMQ node of a test's own, on free ports with its own data folder, so the test can stop
//! and start the broker without disturbing the other tests, which share the machine's node.
//! Needs the `rabbitmq-server` package (which provides the machine's node); the node is stopped
//! when the value is dropped.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub struct PrivateBroker {
    dir: tempfile::TempDir,
    node: String,
    port: u16,
}

impl PrivateBroker {
    pub fn start() -> Self {
        Self::start_with_cookie(&format!("rapid-test-cookie-{}", free_port()))
    }

    /// `size` nodes joined into one cluster (node 0 first); they share an Erlang cookie.
    pub fn cluster(size: usize) -> Vec<Self> {
        let cookie = format!("rapid-test-cookie-{}", free_port());
        let nodes: Vec<_> = (0..size).map(|_| Self::start_with_cookie(&cookie)).collect();
        for node in &nodes[1..] {
            node.ctl(&["stop_app"]);
            node.ctl(&["join_cluster", &nodes[0].node]);
            node.start_app();
        }
        nodes
    }

    fn start_with_cookie(cookie: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Erlang reads the cookie from `$HOME/.erlang.cookie` and refuses one others may read.
        let cookie_file = dir.path().join(".erlang.cookie");
        std::fs::write(&cookie_file, cookie).unwrap();
        std::fs::set_permissions(&cookie_file, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
        let port = free_port();
        let node = format!("rapid-test-{port}@localhost");
        std::fs::write(dir.path().join("rabbitmq.conf"), format!("listeners.tcp.local = 127.0.0.1:{port}\n")).unwrap();
        // An empty environment file, so the machine's rabbitmq-env.conf (its node name) is not read.
        std::fs::write(dir.path().join("rabbitmq-env.conf"), "").unwrap();
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").unwrap();
        let broker = Self { dir, node, port };
        let status = broker
            .command("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_CONFIG_FILE", broker.dir.path().join("rabbitmq.conf"))
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("RABBITMQ_MNESIA_BASE", broker.dir.path().join("mnesia"))
            .env("RABBITMQ_LOG_BASE", broker.dir.path().join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", broker.dir.path().join("enabled_plugins"))
            .status()
            .expect("rabbitmq-server runs (apt-get install rabbitmq-server)");
        assert!(status.success(), "rabbitmq-server -detached failed: {status}");
        broker.await_startup();
        broker
    }

    /// `-detached` returns before the node is known to epmd, and `await_startup` fails at once
    /// for a node it cannot reach yet: ask again until it answers.
    fn await_startup(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let output = self.rabbitmqctl(&["await_startup", "--timeout", "60"]);
            if output.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the private RabbitMQ node did not start: {}\n{}",
                String::from_utf8_lossy(&output.stderr),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Stops the RabbitMQ application (every connection drops; the node and its durable queues stay).
    pub fn stop_app(&self) {
        self.ctl(&["stop_app"]);
    }

    /// Stops the whole node, as a machine that went away.
    pub fn stop(&self) {
        self.ctl(&["stop"]);
    }

    pub fn start_app(&self) {
        self.ctl(&["start_app"]);
        self.await_startup();
    }

    fn rabbitmqctl(&self, args: &[&str]) -> std::process::Output {
        self.command("/usr/lib/rabbitmq/bin/rabbitmqctl").arg("-n").arg(&self.node).args(args).output().unwrap()
    }

    fn ctl(&self, args: &[&str]) {
        let output = self.rabbitmqctl(args);
        assert!(
            output.status.success(),
            "rabbitmqctl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
    }

    /// The node's commands share one Erlang cookie through `HOME`.
    fn command(&self, program: impl AsRef<Path>) -> Command {
        let mut command = Command::new(program.as_ref());
        command
            .env("HOME", self.dir.path())
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.path().join("rabbitmq-env.conf"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .stdin(Stdio::null());
        command
    }

    fn log(&self) -> String {
        let path = self.dir.path().join("log").join(format!("{}.log", self.node));
        std::fs::read_to_string(&path).unwrap_or_else(|e| format!("(no log at {}: {e})", path.display()))
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        // A node stopped by the test already answers nothing; that is fine.
        if !self.rabbitmqctl(&["stop"]).status.success() && self.rabbitmqctl(&["ping"]).status.success() {
            eprintln!("could not stop the private RabbitMQ node {}", self.node);
        }
        // Let the node release its files before the folder is removed.
        std::thread::sleep(Duration::from_millis(200));
    }
}
