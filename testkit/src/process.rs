//! Server processes: spawned so that they die with the test process, in
//! directories under one per-process root that is removed at exit.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::StartError;

/// Processes to kill at exit (shared servers are never dropped).
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static ROOT: OnceLock<PathBuf> = OnceLock::new();

/// The per-process directory all servers live under.
pub fn root() -> &'static Path {
    ROOT.get_or_init(|| {
        let base = std::env::temp_dir();
        remove_stale_roots(&base);
        let root = base.join(format!("millrace-test-{}", std::process::id()));
        std::fs::create_dir_all(&root).expect("cannot create the test root directory");
        extern "C" fn at_exit() {
            cleanup();
        }
        // SAFETY: registering a plain extern "C" function with atexit.
        unsafe { libc::atexit(at_exit) };
        root
    })
}

/// Kills what is still running and removes the root; runs at exit.
fn cleanup() {
    let pids: Vec<u32> = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
    for pid in pids {
        // SAFETY: signalling a pid we started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    if let Some(root) = ROOT.get() {
        let _ = std::fs::remove_dir_all(root);
    }
}

/// Roots left by test processes that were killed outright.
fn remove_stale_roots(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("millrace-test-")).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other test (or test process) uses, valid as a Kafka topic, an
/// InfluxDB database and a Kubernetes namespace: `prefix-<pid>-<n>-<rand>`.
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}-{:04x}", std::process::id(), rand::random::<u16>())
}

/// A fresh directory under the root.
pub fn new_dir(prefix: &str) -> std::io::Result<PathBuf> {
    let dir = root().join(unique_name(prefix));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    // A port is only checked free here; a server binds it seconds later (a
    // JVM's start). Meanwhile a port from the kernel's ephemeral range can be
    // taken as the local port of any outgoing connection, or handed to another
    // test by bind(0) (seen: a node of a 3-node Kafka cluster exiting at start
    // while other tests ran clients and brokers). So ports come from below the
    // ephemeral range, which the kernel never picks by itself, and none is
    // given out twice in this process.
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    let (low, high) = (ephemeral_low.saturating_sub(12_000).max(1024), ephemeral_low);
    for _ in 0..10_000 {
        let port = rand::random_range(low..high);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}")
}

pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// A running server process; killed on drop.
pub struct Server {
    name: String,
    command: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// Starts `program args..`, logging to `log`. The child gets SIGKILL
    /// when the thread that spawned it exits, so a killed test leaves nothing.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: PathBuf) -> Result<Self, StartError> {
        let mut server = Self {
            name: name.to_string(),
            command: std::iter::once(program.display().to_string()).chain(args.iter().cloned()).collect(),
            log,
            child: None,
        };
        server.start()?;
        Ok(server)
    }

    pub fn start(&mut self) -> Result<(), StartError> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = Command::new(&self.command[0]);
        cmd.args(&self.command[1..]).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs in pre_exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| StartError::Failed(format!("cannot start {}: {e}", self.name)))?;
        LIVE.lock().unwrap_or_else(|p| p.into_inner()).push(child.id());
        self.child = Some(child);
        Ok(())
    }

    /// Stops the process as an operator would: SIGTERM, and SIGKILL if it
    /// has not exited after 10 s. Its files stay until the server is dropped.
    pub fn stop(&mut self) {
        self.stop_within(Duration::from_secs(10));
    }

    /// SIGTERM, then SIGKILL after `grace`. True if it exited by itself.
    pub fn stop_within(&mut self, grace: Duration) -> bool {
        self.terminate();
        let clean = self.wait_exit(Instant::now() + grace);
        self.kill();
        clean
    }

    /// Sends SIGTERM and returns at once.
    pub fn terminate(&self) {
        if let Some(child) = self.child.as_ref() {
            // SAFETY: signalling a child we started and have not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
    }

    /// Waits until the process has exited or `deadline` passes; true if it
    /// is not running (any more).
    pub fn wait_exit(&mut self, deadline: Instant) -> bool {
        loop {
            match self.child.as_mut() {
                None => return true,
                Some(c) => {
                    if let Ok(Some(_)) = c.try_wait() {
                        return true;
                    }
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process at once (a crash). Its files stay.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            LIVE.lock().unwrap_or_else(|p| p.into_inner()).retain(|p| *p != child.id());
        }
    }

    /// Polls `ready` until it holds, failing with the log's tail when the
    /// process exits or `timeout` passes.
    pub fn wait_until(&mut self, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<(), StartError> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(StartError::Failed(format!("{} exited with {status} while starting:\n{}", self.name, self.log_tail())));
                }
            }
            if Instant::now() > deadline {
                return Err(StartError::Failed(format!("{} did not become ready in {timeout:?}:\n{}", self.name, self.log_tail())));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A server's directory, removed on drop.
pub struct Dir(pub PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `f` on a thread that lives as long as the process, so that servers
/// it spawns (with PDEATHSIG) outlive the test thread that asked for them.
pub fn on_keeper_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::sync::mpsc;
    type Job = Box<dyn FnOnce() + Send>;
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let sender = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("millrace-testkit-keeper".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
                loop {
                    std::thread::park();
                }
            })
            .expect("cannot spawn the keeper thread");
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    sender
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(Box::new(move || {
            let _ = tx.send(f());
        }))
        .expect("keeper thread is gone");
    rx.recv().expect("keeper thread dropped a job")
}
