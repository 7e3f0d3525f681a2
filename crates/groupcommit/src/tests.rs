//! The writer against a recording committer: grouping, order, linger, deadlines,
//! bounds, close and a panicking committer.

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Commit(Vec<u32>),
    Alone(&'static str),
    Deadline,
    Finish,
}

struct Job {
    id: u32,
    weight: usize,
    done: oneshot::Sender<()>,
}

#[derive(Default)]
struct Recorder {
    log: Arc<Mutex<Vec<Event>>>,
    /// Linger this long when a group holds fewer than `enough_at` jobs.
    linger: Duration,
    enough_at: usize,
    /// After each commit, ask for `on_deadline` this much later.
    defer: Option<Duration>,
    due: Option<Instant>,
    panic_on: Option<u32>,
}

impl Recorder {
    fn record(&self, event: Event) {
        self.log.lock().expect("log lock").push(event);
    }
}

impl Committer for Recorder {
    type Job = Job;

    fn weight(&self, job: &Job) -> usize {
        job.weight
    }

    fn commit(&mut self, group: Vec<Job>) {
        if group.iter().any(|j| Some(j.id) == self.panic_on) {
            panic!("the committer fails on purpose");
        }
        self.record(Event::Commit(group.iter().map(|j| j.id).collect()));
        if let Some(defer) = self.defer {
            self.due.get_or_insert_with(|| Instant::now() + defer);
        }
        for job in group {
            let _ = job.done.send(());
        }
    }

    fn linger(&mut self, group: &[Job]) -> Duration {
        if group.len() < self.enough_at {
            self.linger
        } else {
            Duration::ZERO
        }
    }

    fn enough(&self, group: &[Job]) -> bool {
        group.len() >= self.enough_at
    }

    fn deadline(&self) -> Option<Instant> {
        self.due
    }

    fn on_deadline(&mut self) {
        self.due = None;
        self.record(Event::Deadline);
    }

    fn finish(&mut self) {
        self.record(Event::Finish);
    }
}

fn options(queue: usize, max_group_weight: usize) -> Options {
    Options {
        name: "test-writer".into(),
        queue,
        max_group_weight,
    }
}

fn spawn(recorder: Recorder, queue: usize, cap: usize) -> (Arc<Writer<Recorder>>, Log) {
    let log = Log(Arc::clone(&recorder.log));
    let writer = Writer::spawn(recorder, options(queue, cap)).expect("spawn writer");
    (Arc::new(writer), log)
}

struct Log(Arc<Mutex<Vec<Event>>>);

impl Log {
    fn events(&self) -> Vec<Event> {
        self.0.lock().expect("log lock").clone()
    }
}

/// Queues a job and returns what its commit will answer on.
async fn submit(writer: &Writer<Recorder>, id: u32, weight: usize) -> oneshot::Receiver<()> {
    let (done, committed) = oneshot::channel();
    if writer.submit(Job { id, weight, done }).await.is_err() {
        panic!("submit of job {id} refused");
    }
    committed
}

/// Occupies the writer thread until the returned sender is used (or dropped), so the
/// test can queue items behind it; returns once the thread is inside the closure.
async fn block(writer: &Arc<Writer<Recorder>>) -> std_mpsc::Sender<()> {
    let (release, gate) = std_mpsc::channel::<()>();
    let (entered_tx, entered) = oneshot::channel();
    let writer = Arc::clone(writer);
    tokio::spawn(async move {
        writer
            .call(move |_| {
                let _ = entered_tx.send(());
                let _ = gate.recv();
            })
            .await
    });
    entered
        .await
        .expect("the writer thread ran the blocking closure");
    release
}

async fn committed(answers: Vec<oneshot::Receiver<()>>) {
    for answer in answers {
        tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .expect("committed in time")
            .expect("answered");
    }
}

#[tokio::test]
async fn queued_jobs_are_grouped_up_to_the_weight_cap() {
    // (job weights, cap, expected groups)
    type Case = (&'static [usize], usize, &'static [&'static [u32]]);
    let cases: &[Case] = &[
        (&[3; 10], 7, &[&[0, 1, 2], &[3, 4, 5], &[6, 7, 8], &[9]]),
        (&[1; 5], 100, &[&[0, 1, 2, 3, 4]]),
        (&[50, 1, 1], 10, &[&[0], &[1, 2]]),
        (&[1, 1, 1], 1, &[&[0], &[1], &[2]]),
        (&[0, 0, 0], 1, &[&[0, 1, 2]]),
    ];
    for (weights, cap, expected) in cases {
        let (writer, log) = spawn(Recorder::default(), 64, *cap);
        let release = block(&writer).await;
        let mut answers = Vec::new();
        for (id, &weight) in (0..).zip(weights.iter()) {
            answers.push(submit(&writer, id, weight).await);
        }
        drop(release);
        committed(answers).await;
        let groups: Vec<Vec<u32>> = log
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Commit(ids) => Some(ids),
                _ => None,
            })
            .collect();
        let expected: Vec<Vec<u32>> = expected.iter().map(|g| g.to_vec()).collect();
        assert_eq!(groups, expected, "weights {weights:?} cap {cap}");
    }
}

#[tokio::test]
async fn closures_run_alone_in_arrival_order() {
    let (writer, log) = spawn(Recorder::default(), 64, 100);
    let release = block(&writer).await;
    let a = submit(&writer, 0, 1).await;
    let b = submit(&writer, 1, 1).await;
    let marked = {
        let writer = Arc::clone(&writer);
        let log = Arc::clone(&log.0);
        tokio::spawn(async move {
            writer
                .call(move |_| {
                    log.lock().expect("log lock").push(Event::Alone("between"));
                    7
                })
                .await
        })
    };
    // The closure must be queued before the next job for the order to mean anything.
    while writer.shared.permits.available_permits() > 61 {
        tokio::task::yield_now().await;
    }
    let c = submit(&writer, 2, 1).await;
    drop(release);
    committed(vec![a, b, c]).await;
    assert_eq!(marked.await.expect("call task").expect("call answered"), 7);
    assert_eq!(
        log.events(),
        [
            Event::Commit(vec![0, 1]),
            Event::Alone("between"),
            Event::Commit(vec![2])
        ]
    );
}

#[tokio::test]
async fn lingering_gathers_late_jobs_into_one_group() {
    for (linger, expected_groups) in [(Duration::from_secs(5), 1usize), (Duration::ZERO, 3)] {
        let recorder = Recorder {
            linger,
            enough_at: 3,
            ..Recorder::default()
        };
        let (writer, log) = spawn(recorder, 64, 100);
        let started = Instant::now();
        let mut answers = vec![submit(&writer, 0, 1).await];
        for id in 1..3 {
            tokio::time::sleep(Duration::from_millis(30)).await;
            answers.push(submit(&writer, id, 1).await);
        }
        committed(answers).await;
        let commits = log
            .events()
            .iter()
            .filter(|e| matches!(e, Event::Commit(_)))
            .count();
        assert_eq!(commits, expected_groups, "linger {linger:?}");
        // `enough` cut the 5 s linger short.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "linger {linger:?}"
        );
    }
}

#[tokio::test]
async fn the_deadline_fires_when_no_job_comes() {
    let recorder = Recorder {
        defer: Some(Duration::from_millis(40)),
        ..Recorder::default()
    };
    let (writer, log) = spawn(recorder, 64, 100);
    let started = Instant::now();
    committed(vec![submit(&writer, 0, 1).await]).await;
    let give_up = Instant::now() + Duration::from_secs(10);
    while !log.events().contains(&Event::Deadline) {
        assert!(Instant::now() < give_up, "on_deadline never ran");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(40));
    assert_eq!(log.events(), [Event::Commit(vec![0]), Event::Deadline]);
}

#[tokio::test]
async fn a_stream_of_closures_does_not_starve_the_deadline() {
    let recorder = Recorder {
        defer: Some(Duration::from_millis(20)),
        ..Recorder::default()
    };
    let (writer, log) = spawn(recorder, 64, 100);
    committed(vec![submit(&writer, 0, 1).await]).await;
    let give_up = Instant::now() + Duration::from_secs(10);
    // Every closure arrives well before the deadline, so the channel never goes idle.
    while !log.events().contains(&Event::Deadline) {
        assert!(Instant::now() < give_up, "on_deadline starved");
        writer
            .call(|_| std::thread::sleep(Duration::from_millis(2)))
            .await
            .expect("call answered");
    }
}

#[tokio::test]
async fn close_commits_what_is_queued_then_refuses_work() {
    let (writer, log) = spawn(Recorder::default(), 64, 2);
    let release = block(&writer).await;
    let mut answers = Vec::new();
    for id in 0..5 {
        answers.push(submit(&writer, id, 1).await);
    }
    let closing = {
        let writer = Arc::clone(&writer);
        tokio::spawn(async move { writer.close().await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!closing.is_finished(), "close waits for the queued jobs");
    let (done, _committed) = oneshot::channel();
    match writer
        .submit(Job {
            id: 99,
            weight: 1,
            done,
        })
        .await
    {
        Err(Stopped(job)) => assert_eq!(job.id, 99, "the refused job comes back"),
        Ok(()) => panic!("a closing writer queued a job"),
    }
    drop(release);
    tokio::time::timeout(Duration::from_secs(10), closing)
        .await
        .expect("close returned")
        .expect("close task");
    committed(answers).await;
    assert_eq!(
        log.events(),
        [
            Event::Commit(vec![0, 1]),
            Event::Commit(vec![2, 3]),
            Event::Commit(vec![4]),
            Event::Finish
        ]
    );
    assert!(writer.call(|_| ()).await.is_err(), "call after close");
    writer.close().await; // idempotent, and immediate once stopped
    let give_up = Instant::now() + Duration::from_secs(10);
    while writer.is_running() {
        assert!(Instant::now() < give_up, "the thread never exited");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_channel_is_bounded_and_a_cancelled_submit_queues_nothing() {
    let (writer, log) = spawn(Recorder::default(), 2, 100);
    let release = block(&writer).await;
    let a = submit(&writer, 0, 1).await;
    let b = submit(&writer, 1, 1).await;
    let (done, _never) = oneshot::channel();
    let third = tokio::time::timeout(
        Duration::from_millis(50),
        writer.submit(Job {
            id: 2,
            weight: 1,
            done,
        }),
    )
    .await;
    assert!(third.is_err(), "a third submit waits for room");
    drop(release);
    committed(vec![a, b]).await;
    let d = submit(&writer, 3, 1).await;
    committed(vec![d]).await;
    assert_eq!(
        log.events(),
        [Event::Commit(vec![0, 1]), Event::Commit(vec![3])]
    );
}

#[tokio::test]
async fn a_panicking_committer_fails_callers_instead_of_hanging_them() {
    let recorder = Recorder {
        panic_on: Some(1),
        ..Recorder::default()
    };
    let (writer, _log) = spawn(recorder, 64, 100);
    committed(vec![submit(&writer, 0, 1).await]).await;
    let (done, answer) = oneshot::channel();
    let queued = writer.submit(Job {
        id: 1,
        weight: 1,
        done,
    });
    assert!(queued.await.is_ok(), "queued before the panic");
    let outcome = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("the reply is dropped, not left hanging");
    assert!(outcome.is_err(), "a job lost to a panic is not answered Ok");
    let give_up = Instant::now() + Duration::from_secs(10);
    while writer.is_running() {
        assert!(Instant::now() < give_up, "the thread outlived its panic");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (done, _never) = oneshot::channel();
    let late = writer.submit(Job {
        id: 2,
        weight: 1,
        done,
    });
    assert!(late.await.is_err(), "a dead writer refuses jobs");
    assert!(writer.call(|_| ()).await.is_err());
}

#[test]
fn dropping_the_writer_commits_the_queue_and_finishes() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let recorder = Recorder::default();
    let log = Log(Arc::clone(&recorder.log));
    let writer = Writer::spawn(recorder, options(64, 100)).expect("spawn writer");
    let answers = runtime.block_on(async {
        let mut answers = Vec::new();
        for id in 0..3 {
            answers.push(submit(&writer, id, 1).await);
        }
        answers
    });
    drop(writer);
    let events = log.events();
    assert_eq!(events.last(), Some(&Event::Finish), "{events:?}");
    let ids: Vec<u32> = events
        .iter()
        .flat_map(|e| match e {
            Event::Commit(ids) => ids.clone(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(ids, [0, 1, 2]);
    runtime.block_on(committed(answers));
}
