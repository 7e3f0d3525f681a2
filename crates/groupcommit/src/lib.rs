//! Group commit on a dedicated writer thread: many callers, one transaction, one fsync.
//!
//! A [`Writer`] owns a [`Committer`] (the state of the thread: a database connection,
//! caches, pending acks…) on a thread of its own. Callers hand it jobs through a bounded
//! channel and await their answers (each job carries its own reply). The thread:
//!
//! 1. blocks for the first item;
//! 2. gathers whatever else is queued into one group, up to a weight cap
//!    ([`Options::max_group_weight`], weights from [`Committer::weight`]);
//! 3. optionally lingers a little for more jobs ([`Committer::linger`]): right after a
//!    commit answered its callers, the next group would otherwise hold only the few that
//!    came back first, and every small group pays a whole fsync;
//! 4. hands the group to [`Committer::commit`], which writes it in one transaction and
//!    answers the callers.
//!
//! Besides groupable jobs it runs closures alone ([`Writer::call`]) without breaking
//! arrival order: a closure met while gathering waits until the group before it is
//! committed. A deadline ([`Committer::deadline`] / [`Committer::on_deadline`]) lets the
//! committer flush work it deferred (the bus coalesces acks this way) when no job comes.
//! [`Writer::close`] stops accepting work, commits everything already queued, calls
//! [`Committer::finish`] and stops the thread.
//!
//! The channel is bounded by permits: a caller takes one before queueing and the thread
//! hands it back as it takes the item, so at most [`Options::queue`] items wait and a
//! caller past that waits (asynchronously) instead of growing memory.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Semaphore};

/// The state a [`Writer`] thread owns, and what it does with a group of jobs.
///
/// Every method runs on the writer thread, one at a time, so the state needs no locks.
pub trait Committer: Send + 'static {
    /// One unit of work that may share a commit with others. It carries whatever the
    /// caller needs to be answered (usually a `oneshot::Sender`).
    type Job: Send + 'static;

    /// How much of [`Options::max_group_weight`] this job uses: 1 to cap groups by job
    /// count, a row count to cap them by rows.
    fn weight(&self, _job: &Self::Job) -> usize {
        1
    }

    /// Commits one group (in arrival order, never empty) and answers its callers. A
    /// committer that defers work (see [`Committer::deadline`]) should fold whatever is
    /// due into this commit rather than wait for `on_deadline`.
    fn commit(&mut self, group: Vec<Self::Job>);

    /// How long to wait for more jobs once the queue has run dry and `group` is not yet
    /// at the weight cap. Asked once per group; zero (the default) commits at once.
    fn linger(&mut self, _group: &[Self::Job]) -> Duration {
        Duration::ZERO
    }

    /// Whether a lingering group has gathered enough to commit before its linger ends.
    /// Asked after each job that arrives while lingering.
    fn enough(&self, _group: &[Self::Job]) -> bool {
        false
    }

    /// When [`Committer::on_deadline`] must run even if no job arrives (deferred work
    /// waiting to be flushed); `None` (the default) waits for jobs indefinitely.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// Runs when the deadline has passed: flush the deferred work.
    fn on_deadline(&mut self) {}

    /// Runs once after the last job, before the state is dropped: make deferred work
    /// durable if it still matters.
    fn finish(&mut self) {}
}

/// Settings of a [`Writer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Name of the thread (shown by `top -H`, debuggers and panics).
    pub name: String,
    /// Items (jobs and closures) that may wait in the channel; callers past it wait.
    pub queue: usize,
    /// A group stops growing once its jobs weigh this much (it always holds one job,
    /// however heavy).
    pub max_group_weight: usize,
}

/// The writer thread is gone (closed, or its committer panicked): nothing was queued.
/// Holds back what the caller handed over.
pub struct Stopped<T>(pub T);

impl<T> fmt::Debug for Stopped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Stopped(..)")
    }
}

impl<T> fmt::Display for Stopped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the writer thread has stopped")
    }
}

impl<T> std::error::Error for Stopped<T> {}

/// A closure run alone on the writer thread.
type Alone<C> = Box<dyn FnOnce(&mut C) + Send>;

/// What travels on the channel.
enum Item<C: Committer> {
    Job(C::Job),
    Alone(Alone<C>),
    /// Stop taking work, drain what is queued, then answer (if anyone waits).
    Close(Option<oneshot::Sender<()>>),
}

/// State shared by the handle and the thread.
struct Shared {
    /// Bounds the channel: one permit per queued job or closure.
    permits: Semaphore,
    /// Set by `close`: new submissions fail fast instead of queueing behind the drain.
    closing: AtomicBool,
}

/// Handle to a writer thread; see the crate documentation.
///
/// Dropping it closes the writer (queued jobs are still committed) and waits for the
/// thread to exit, which takes at most the commits still queued: drop it off async
/// worker threads, or [`Writer::close`] it first.
pub struct Writer<C: Committer> {
    shared: Arc<Shared>,
    items: Sender<Item<C>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<C: Committer> Writer<C> {
    /// Starts the thread that owns `committer`.
    pub fn spawn(committer: C, options: Options) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            permits: Semaphore::new(options.queue.clamp(1, Semaphore::MAX_PERMITS)),
            closing: AtomicBool::new(false),
        });
        let (items, receiver) = mpsc::channel();
        let thread = Thread {
            committer,
            items: receiver,
            shared: Arc::clone(&shared),
            max_weight: options.max_group_weight.max(1),
            held: None,
            draining: false,
            unreturned: 0,
        };
        let handle = std::thread::Builder::new()
            .name(options.name)
            .spawn(move || thread.run())?;
        Ok(Self {
            shared,
            items,
            thread: Mutex::new(Some(handle)),
        })
    }

    /// Queues a job for the next group, waiting for room in the channel if it is full.
    /// `Ok` means queued, not committed: the job's own reply says when it is. Cancelling
    /// the future before it returns leaves nothing queued.
    pub async fn submit(&self, job: C::Job) -> Result<(), Stopped<C::Job>> {
        self.send(Item::Job(job)).await.map_err(|item| match item {
            Item::Job(job) => Stopped(job),
            _ => unreachable!("send hands back the item it was given"),
        })
    }

    /// Runs `f` alone on the writer thread (after everything queued before it) and
    /// returns what it returns.
    pub async fn call<R, F>(&self, f: F) -> Result<R, Stopped<()>>
    where
        R: Send + 'static,
        F: FnOnce(&mut C) -> R + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let task: Alone<C> = Box::new(move |committer| {
            // The caller may have stopped waiting; the work is done either way.
            let _ = reply.send(f(committer));
        });
        self.send(Item::Alone(task))
            .await
            .map_err(|_| Stopped(()))?;
        answer.await.map_err(|_| Stopped(()))
    }

    async fn send(&self, item: Item<C>) -> Result<(), Item<C>> {
        if self.shared.closing.load(Ordering::SeqCst) {
            return Err(item);
        }
        let Ok(permit) = self.shared.permits.acquire().await else {
            return Err(item);
        };
        self.items.send(item).map_err(|returned| returned.0)?;
        // The thread hands the permit back when it takes the item off the channel.
        permit.forget();
        Ok(())
    }

    /// Stops accepting work (new submissions get [`Stopped`]), waits until everything
    /// already queued is committed, [`Committer::finish`] has run and the state is
    /// dropped. Idempotent; returns at once if the thread is already gone.
    pub async fn close(&self) {
        let (done, finished) = oneshot::channel();
        if self.begin_close(Some(done)) {
            // An error only means the thread exited (or died) without answering.
            let _ = finished.await;
        }
    }

    /// Marks the writer closing and queues the close marker; false if the thread is gone.
    fn begin_close(&self, done: Option<oneshot::Sender<()>>) -> bool {
        self.shared.closing.store(true, Ordering::SeqCst);
        // Wakes callers waiting for a permit: they fail with `Stopped` instead of waiting.
        self.shared.permits.close();
        self.items.send(Item::Close(done)).is_ok()
    }

    /// Whether the thread is still running (false once closed, or if the committer
    /// panicked).
    pub fn is_running(&self) -> bool {
        self.thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|thread| !thread.is_finished())
    }
}

impl<C: Committer> Drop for Writer<C> {
    fn drop(&mut self) {
        self.begin_close(None);
        let thread = self
            .thread
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            // A panic in the committer was already reported by the panic hook; the
            // callers it stranded got `Stopped` or a dropped reply.
            let _ = thread.join();
        }
    }
}

/// What the thread does next.
enum Next<C: Committer> {
    Item(Item<C>),
    Deadline,
    Done,
}

/// The writer thread's side.
struct Thread<C: Committer> {
    committer: C,
    items: Receiver<Item<C>>,
    shared: Arc<Shared>,
    max_weight: usize,
    /// A closure or close marker met while gathering: it runs after that group.
    held: Option<Item<C>>,
    /// Closing: take what is queued without blocking, then stop.
    draining: bool,
    /// Items taken off the channel whose permits are not handed back yet: they go back
    /// in one call per group, not one per item (each call takes the semaphore's lock,
    /// which publishers contend for).
    unreturned: usize,
}

impl<C: Committer> Thread<C> {
    fn run(mut self) {
        let mut closers = Vec::new();
        loop {
            let item = match self.held.take() {
                Some(item) => item,
                None => match self.next() {
                    Next::Item(item) => item,
                    Next::Deadline => {
                        self.committer.on_deadline();
                        continue;
                    }
                    Next::Done => break,
                },
            };
            match item {
                Item::Job(first) => {
                    let group = self.gather(first);
                    self.return_permits();
                    self.committer.commit(group);
                }
                Item::Alone(task) => {
                    self.return_permits();
                    task(&mut self.committer)
                }
                Item::Close(done) => {
                    self.draining = true;
                    closers.extend(done);
                }
            }
            // A steady stream of jobs must not starve deferred work: the deadline is
            // honoured between items too (a committer that folded it into the commit
            // has already cleared it).
            if !self.draining
                && self
                    .committer
                    .deadline()
                    .is_some_and(|at| at <= Instant::now())
            {
                self.committer.on_deadline();
            }
        }
        let Thread {
            mut committer,
            items,
            ..
        } = self;
        committer.finish();
        drop(committer);
        // From here on a late submission fails with `Stopped` instead of queueing.
        drop(items);
        for done in closers {
            let _ = done.send(());
        }
    }

    /// Counts an item taken off the channel; its permit goes back with
    /// [`Thread::return_permits`].
    fn took(&mut self, item: Item<C>) -> Item<C> {
        if !matches!(item, Item::Close(_)) {
            self.unreturned += 1;
        }
        item
    }

    /// Hands back the permits of the items taken so far, making room for callers.
    fn return_permits(&mut self) {
        if self.unreturned > 0 {
            self.shared
                .permits
                .add_permits(std::mem::take(&mut self.unreturned));
        }
    }

    fn next(&mut self) -> Next<C> {
        if self.draining {
            return match self.items.try_recv() {
                Ok(item) => Next::Item(self.took(item)),
                Err(_) => Next::Done,
            };
        }
        match self.committer.deadline() {
            None => match self.items.recv() {
                Ok(item) => Next::Item(self.took(item)),
                Err(_) => Next::Done,
            },
            Some(at) => match self
                .items
                .recv_timeout(at.saturating_duration_since(Instant::now()))
            {
                Ok(item) => Next::Item(self.took(item)),
                Err(RecvTimeoutError::Timeout) => Next::Deadline,
                Err(RecvTimeoutError::Disconnected) => Next::Done,
            },
        }
    }

    /// Collects one group: the first job, everything queued behind it up to the weight
    /// cap, then whatever arrives while the committer wants to linger.
    fn gather(&mut self, first: C::Job) -> Vec<C::Job> {
        let mut weight = self.committer.weight(&first);
        let mut group = vec![first];
        while weight < self.max_weight {
            match self.items.try_recv() {
                Ok(item) => {
                    if !self.join(item, &mut group, &mut weight) {
                        return group;
                    }
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if weight >= self.max_weight || self.draining {
            return group;
        }
        // The callers this group waits for may need room in the channel to arrive.
        self.return_permits();
        let linger = self.committer.linger(&group);
        if linger.is_zero() {
            return group;
        }
        let until = Instant::now() + linger;
        while weight < self.max_weight && !self.committer.enough(&group) {
            match self
                .items
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                Ok(item) => {
                    if !self.join(item, &mut group, &mut weight) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        group
    }

    /// Adds a job to the group; any other item is held for after the group, and ends it.
    fn join(&mut self, item: Item<C>, group: &mut Vec<C::Job>, weight: &mut usize) -> bool {
        match self.took(item) {
            Item::Job(job) => {
                *weight = weight.saturating_add(self.committer.weight(&job));
                group.push(job);
                true
            }
            other => {
                self.held = Some(other);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests;
