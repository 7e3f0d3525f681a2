//! Where a buffered transfer waits for its client: in memory while all buffered transfers
//! of the router together hold at most `buffer_memory_bytes`, then in an unnamed
//! temporary file under the spill directory (removed by the OS when closed, so a crash
//! leaves nothing behind). A transfer that spilled keeps all its bytes in the file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

/// A buffered transfer's bytes, ready for the client.
#[derive(Debug)]
pub enum BufferedBody {
    Memory(Bytes),
    /// Spilled: `len` bytes from the start of `file`, positioned at 0.
    File {
        file: tokio::fs::File,
        len: u64,
    },
}

impl BufferedBody {
    pub fn len(&self) -> u64 {
        match self {
            BufferedBody::Memory(bytes) => bytes.len() as u64,
            BufferedBody::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bytes held in memory by every spool of a router (the `vigia_relay_buffered_bytes`
/// gauge), released when the spool or its body is dropped.
#[derive(Debug, Default)]
pub struct MemoryGauge(AtomicU64);

impl MemoryGauge {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Claims `n` bytes if the total stays within `limit`.
    fn try_add(&self, n: u64, limit: u64) -> bool {
        let claimed = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|total| *total <= limit)
            });
        match claimed {
            Ok(before) => {
                metrics::gauge!("vigia_relay_buffered_bytes").set((before + n) as f64);
                true
            }
            Err(_) => false,
        }
    }

    fn sub(&self, n: u64) {
        let now = self.0.fetch_sub(n, Ordering::Relaxed) - n;
        metrics::gauge!("vigia_relay_buffered_bytes").set(now as f64);
    }
}

/// A claim on the memory gauge, given back on drop.
#[derive(Debug)]
pub(crate) struct MemoryHold {
    gauge: Arc<MemoryGauge>,
    bytes: u64,
}

impl MemoryHold {
    /// Grows the claim by `n` if the router's total stays within `limit`.
    fn try_grow(&mut self, n: u64, limit: u64) -> bool {
        let granted = self.gauge.try_add(n, limit);
        if granted {
            self.bytes += n;
        }
        granted
    }

    fn release(&mut self) {
        self.gauge.sub(self.bytes);
        self.bytes = 0;
    }
}

impl Drop for MemoryHold {
    fn drop(&mut self) {
        self.release();
    }
}

/// A buffered body and its claim on memory, released when this is dropped (so the web
/// layer keeps it while it sends the body).
#[derive(Debug)]
pub struct Buffered {
    pub body: BufferedBody,
    _hold: MemoryHold,
}

/// Gathers one buffered transfer.
pub(crate) struct Spool {
    /// What ALL spools of the router may hold in memory together.
    memory_limit: u64,
    dir: PathBuf,
    memory: BytesMut,
    file: Option<tokio::fs::File>,
    len: u64,
    hold: MemoryHold,
}

impl Spool {
    pub fn new(memory_limit: usize, dir: &Path, gauge: Arc<MemoryGauge>) -> Self {
        Self {
            memory_limit: memory_limit as u64,
            dir: dir.to_owned(),
            memory: BytesMut::new(),
            file: None,
            len: 0,
            hold: MemoryHold { gauge, bytes: 0 },
        }
    }

    pub async fn push(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.len += chunk.len() as u64;
        if self.file.is_none() && self.hold.try_grow(chunk.len() as u64, self.memory_limit) {
            self.memory.extend_from_slice(chunk);
            return Ok(());
        }
        if self.file.is_none() {
            let dir = self.dir.clone();
            let file = tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir))
                .await
                .map_err(std::io::Error::other)??;
            let mut file = tokio::fs::File::from_std(file);
            file.write_all(&self.memory).await?;
            self.memory = BytesMut::new();
            self.hold.release();
            self.file = Some(file);
        }
        let file = self.file.as_mut().expect("opened above");
        file.write_all(chunk).await
    }

    pub async fn finish(self) -> std::io::Result<Buffered> {
        let body = match self.file {
            None => BufferedBody::Memory(self.memory.freeze()),
            Some(mut file) => {
                file.flush().await?;
                file.seek(std::io::SeekFrom::Start(0)).await?;
                BufferedBody::File {
                    file,
                    len: self.len,
                }
            }
        };
        Ok(Buffered {
            body,
            _hold: self.hold,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn spills_past_the_memory_limit_and_gives_memory_back() {
        let dir = tempfile::tempdir().unwrap();
        let gauge = Arc::new(MemoryGauge::default());
        let mut small = Spool::new(10, dir.path(), gauge.clone());
        small.push(b"hello").await.unwrap();
        small.push(b"world").await.unwrap();
        assert_eq!(gauge.get(), 10);
        let buffered = small.finish().await.unwrap();
        assert!(matches!(&buffered.body, BufferedBody::Memory(b) if &b[..] == b"helloworld"));
        drop(buffered);
        assert_eq!(gauge.get(), 0);

        let mut big = Spool::new(10, dir.path(), gauge.clone());
        big.push(b"hello").await.unwrap();
        big.push(b"world!").await.unwrap();
        assert_eq!(gauge.get(), 0, "spilled: nothing held in memory");
        big.push(b" more").await.unwrap();
        let mut buffered = big.finish().await.unwrap();
        assert_eq!(buffered.body.len(), 16);
        match &mut buffered.body {
            BufferedBody::File { file, len } => {
                let mut text = String::new();
                file.read_to_string(&mut text).await.unwrap();
                assert_eq!((text.as_str(), *len), ("helloworld! more", 16));
            }
            other => panic!("expected a spilled body, got {other:?}"),
        }
        drop(buffered);

        // The memory limit is shared: a second transfer spills while the first holds it.
        let mut first = Spool::new(10, dir.path(), gauge.clone());
        first.push(b"123456").await.unwrap();
        let mut second = Spool::new(10, dir.path(), gauge.clone());
        second.push(b"abcdef").await.unwrap();
        assert_eq!(gauge.get(), 6, "only the first holds memory");
        let (first, second) = (
            first.finish().await.unwrap(),
            second.finish().await.unwrap(),
        );
        assert!(matches!(first.body, BufferedBody::Memory(_)));
        assert!(matches!(second.body, BufferedBody::File { len: 6, .. }));
        drop(first);
        assert_eq!(gauge.get(), 0);
        drop(second);

        // The temporary file has no name: the spill directory stays empty.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
