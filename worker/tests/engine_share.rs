//! TensorRT engine folders shared through a real S3-compatible server (s3s-fs, started here on a
//! free port; `bash deploy/test-services.sh` installs it) and through the local store: what one
//! replica pushes, a new one of the same GPU kind pulls whole; other GPU kinds' engines stay put.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rapid_fleet::config::S3Config;
use rapid_fleet::storage::{LocalStore, ObjectStore, S3Store};
use rapid_worker::engine_share::{pull, push, Moved};

const H100: &str = "nvidia-h100-80gb-hbm3";

/// A cache as a replica leaves it after building: two engine folders of its GPU kind, one of
/// another kind, and a temporary file of a write that never finished.
fn built_cache(root: &Path) {
    let write = |relative: &str, bytes: &[u8]| {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    write(&format!("{H100}/unet-0123456789abcdef/TensorrtExecutionProvider_0.engine"), &[7u8; 3000]);
    write(&format!("{H100}/unet-0123456789abcdef/TensorrtExecutionProvider_0.timing"), b"timing");
    write(&format!("{H100}/vae_decoder-fedcba9876543210/TensorrtExecutionProvider_1.engine"), &[9u8; 500]);
    write(&format!("{H100}/vae_decoder-fedcba9876543210/.tmpAbC123"), b"half");
    write("nvidia-h200/unet-0123456789abcdef/TensorrtExecutionProvider_0.engine", b"h200");
}

fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                let relative = entry.path().strip_prefix(root).unwrap().display().to_string();
                found.push((relative, std::fs::read(entry.path()).unwrap()));
            }
        }
    }
    found.sort();
    found
}

async fn round_trip(store: &ObjectStore) {
    let scratch = tempfile::tempdir().unwrap();
    let (built, fresh) = (scratch.path().join("built"), scratch.path().join("fresh"));
    built_cache(&built);

    let pushed = push(store, &built, H100).await.unwrap();
    assert_eq!(pushed, Moved { files: 3, bytes: 3506 }, "the H100's three complete files, not the temporary one");
    assert_eq!(push(store, &built, H100).await.unwrap(), Moved::default(), "what the store has is not sent again");

    let pulled = pull(store, &fresh, H100).await.unwrap();
    assert_eq!(pulled, Moved { files: 3, bytes: 3506 });
    let mut expected: Vec<_> = files(&built).into_iter().filter(|(path, _)| path.starts_with(H100)).collect();
    expected.retain(|(path, _)| !path.contains(".tmp"));
    assert_eq!(files(&fresh), expected, "a new replica gets its GPU kind's engines byte for byte, nothing else");
    assert_eq!(pull(store, &fresh, H100).await.unwrap(), Moved::default(), "a complete cache pulls nothing");

    // A file cut short (a pull that died) is fetched again.
    let engine = fresh.join(format!("{H100}/unet-0123456789abcdef/TensorrtExecutionProvider_0.engine"));
    std::fs::write(&engine, [7u8; 10]).unwrap();
    assert_eq!(pull(store, &fresh, H100).await.unwrap(), Moved { files: 1, bytes: 3000 });
    assert_eq!(std::fs::read(&engine).unwrap(), vec![7u8; 3000]);
    assert_eq!(pull(store, &scratch.path().join("other"), "nvidia-a100").await.unwrap(), Moved::default());
}

#[tokio::test]
async fn engines_move_between_replicas_through_the_local_store() {
    let bucket = tempfile::tempdir().unwrap();
    round_trip(&ObjectStore::Local(LocalStore::new(bucket.path()))).await;
}

/// An s3s-fs server for one test, killed when dropped.
struct S3Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl S3Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let binary = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
            .map(|home| home.join("bin/s3s-fs"))
            .filter(|path| path.exists())
            .unwrap_or_else(|| PathBuf::from("s3s-fs"));
        let child = Command::new(&binary)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                "share",
                "--secret-key",
                "secret",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}; run `bash deploy/test-services.sh`", binary.display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port, _dir: dir }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

#[tokio::test]
async fn engines_move_between_replicas_through_s3() {
    let server = S3Server::start();
    let config = S3Config {
        endpoint: Some(format!("http://127.0.0.1:{}", server.port)),
        region: "us-east-1".into(),
        bucket: "engines".into(),
        path_style: true,
        access_key: "share".into(),
        secret_key: "secret".into(),
        create_bucket: true,
        presign_expiry_secs: 60,
    };
    let store = ObjectStore::S3(S3Store::connect(&config).await.unwrap());
    round_trip(&store).await;
}
