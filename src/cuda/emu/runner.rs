//! The Rust end of the runner process (`runner.cpp`): device memory lives in the
//! process, requests and replies are length-prefixed messages over its stdin/stdout.
//! A process of its own keeps a kernel's crash, AddressSanitizer report or endless loop
//! out of the test binary: each becomes a typed error carrying the runner's stderr.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

fn dev(why: String) -> Error {
    Error::Device {
        backend: super::BACKEND,
        why,
    }
}

struct Proc {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// Set once the process is gone: every later request fails with it.
    dead: Option<String>,
}

/// One runner process.
pub struct Runner {
    proc: Mutex<Proc>,
    log: PathBuf,
}

/// One pushed kernel argument.
pub enum Arg {
    Value(Vec<u8>),
    /// A buffer id and its element size (0: any, for the dummy).
    Buffer(u64, u32),
}

/// A launch request.
pub struct LaunchReq<'a> {
    pub kernel: &'a str,
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_bytes: u32,
    pub schedule: u32,
    pub seed: u64,
    pub timeout_s: u32,
    pub args: &'a [Arg],
}

impl Runner {
    pub fn spawn(exe: &Path, log_dir: &Path) -> Result<Runner> {
        static N: AtomicU64 = AtomicU64::new(0);
        let _ = std::fs::create_dir_all(log_dir);
        let log = log_dir.join(format!(
            "runner-{}-{}.log",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let err = std::fs::File::create(&log).map_err(|e| Error::Io {
            file: log.display().to_string(),
            source: e,
        })?;
        let mut child = Command::new(exe)
            .env("ASAN_OPTIONS", "detect_leaks=0:halt_on_error=1")
            .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| dev(format!("cannot start {}: {e}", exe.display())))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(dev("runner pipes missing".into()));
        };
        Ok(Runner {
            proc: Mutex::new(Proc {
                child,
                stdin,
                stdout,
                dead: None,
            }),
            log,
        })
    }

    /// Sends one message, returns the reply's status and body.
    fn request(&self, msg: &[u8]) -> Result<(u8, Vec<u8>)> {
        let mut p = self
            .proc
            .lock()
            .map_err(|_| dev("runner lock poisoned".into()))?;
        if let Some(why) = &p.dead {
            return Err(dev(why.clone()));
        }
        let io = (|| -> std::io::Result<Vec<u8>> {
            p.stdin.write_all(&(msg.len() as u64).to_le_bytes())?;
            p.stdin.write_all(msg)?;
            p.stdin.flush()?;
            let mut len = [0u8; 8];
            p.stdout.read_exact(&mut len)?;
            let mut body = vec![0u8; u64::from_le_bytes(len) as usize];
            p.stdout.read_exact(&mut body)?;
            Ok(body)
        })();
        match io {
            Ok(body) if !body.is_empty() => Ok((body[0], body[1..].to_vec())),
            _ => {
                let status = p.child.wait().map(|s| s.to_string()).unwrap_or_default();
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: String = {
                    let chars: Vec<char> = log.chars().collect();
                    chars[chars.len().saturating_sub(6000)..].iter().collect()
                };
                let why = format!(
                    "the CPU execution model's runner died ({status}); its stderr ({}):\n{tail}",
                    self.log.display()
                );
                p.dead = Some(why.clone());
                Err(dev(why))
            }
        }
    }

    fn ok(&self, msg: &[u8]) -> Result<Vec<u8>> {
        match self.request(msg)? {
            (0, body) => Ok(body),
            (_, body) => Err(dev(String::from_utf8_lossy(&body).into_owned())),
        }
    }

    pub fn alloc(&self, id: u64, bytes: usize, data: &[u8]) -> Result<()> {
        let mut m = vec![1u8];
        m.extend(id.to_le_bytes());
        m.extend((bytes as u64).to_le_bytes());
        m.extend_from_slice(data);
        self.ok(&m).map(drop)
    }

    pub fn write(&self, id: u64, data: &[u8]) -> Result<()> {
        let mut m = vec![2u8];
        m.extend(id.to_le_bytes());
        m.extend_from_slice(data);
        self.ok(&m).map(drop)
    }

    pub fn read(&self, id: u64) -> Result<Vec<u8>> {
        let mut m = vec![3u8];
        m.extend(id.to_le_bytes());
        self.ok(&m)
    }

    pub fn free(&self, id: u64) {
        let mut m = vec![4u8];
        m.extend(id.to_le_bytes());
        let _ = self.request(&m);
    }

    /// Runs a launch; returns the static shared memory one block used.
    pub fn launch(&self, l: &LaunchReq<'_>) -> Result<u64> {
        let mut m = vec![5u8];
        m.extend((l.kernel.len() as u32).to_le_bytes());
        m.extend_from_slice(l.kernel.as_bytes());
        for v in [
            l.grid.0, l.grid.1, l.grid.2, l.block.0, l.block.1, l.block.2,
        ] {
            m.extend(v.to_le_bytes());
        }
        m.extend(l.shared_bytes.to_le_bytes());
        m.extend(l.schedule.to_le_bytes());
        m.extend(l.seed.to_le_bytes());
        m.extend(l.timeout_s.to_le_bytes());
        m.extend((l.args.len() as u32).to_le_bytes());
        for a in l.args {
            match a {
                Arg::Value(v) => {
                    m.push(0);
                    m.extend((v.len() as u32).to_le_bytes());
                    m.extend_from_slice(v);
                }
                Arg::Buffer(id, elem) => {
                    m.push(1);
                    m.extend(id.to_le_bytes());
                    m.extend(elem.to_le_bytes());
                }
            }
        }
        let body = self
            .ok(&m)
            .map_err(|e| dev(format!("launch of {}: {e}", l.kernel)))?;
        let mut b = [0u8; 8];
        b.copy_from_slice(body.get(..8).unwrap_or(&[0; 8]));
        Ok(u64::from_le_bytes(b))
    }

    /// The runner's entry points and param-struct layouts, one per line.
    pub fn info(&self) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.ok(&[6u8])?).into_owned())
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Ok(p) = self.proc.get_mut() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
