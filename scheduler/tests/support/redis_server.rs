//! A Redis server of a test's own, with the persistence the fleet needs (append-only file, fsync
//! every second), so the test can restart it without touching the machine's Redis, which keeps
//! nothing on disk.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub struct PrivateRedis {
    dir: tempfile::TempDir,
    port: u16,
    server: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let mut redis = Self { dir: tempfile::tempdir().unwrap(), port: free_port(), server: None };
        redis.start_server();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// SIGTERM (Redis flushes its append-only file and exits), then the same server on the same
    /// folder, which loads the file again.
    pub fn restart(&mut self) {
        if let Some(mut server) = self.server.take() {
            super::signal(&server, "TERM");
            server.wait().unwrap();
        }
        self.start_server();
    }

    fn start_server(&mut self) {
        let server = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        self.server = Some(server);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the private Redis did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.kill().ok();
            server.wait().ok();
        }
    }
}
