//! The scheduler's one task: keeps the lease, starts due jobs while it leads, records
//! how runs end, and shuts down in order.
//!
//! Time: interval jobs are due at a tokio `Instant` (monotonic); cron jobs at a UTC
//! wall-clock time read from the [`Clock`]. The loop sleeps until the earliest of the
//! due times, the next lease renewal and the lease's expiry, never longer than
//! [`MAX_SLEEP`], so a stepped wall clock is noticed within a minute.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::OptionFuture;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::run::{self, Finished};
use super::{Board, Entry, SchedulerOptions, StopReport};
use crate::lease::{LeaseError, Leases};
use crate::metrics;
use crate::schedule::Plan;
use crate::status::{LastRun, Outcome};
use crate::text;

/// The longest the loop sleeps without looking at the wall clock again.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// When a job is next due.
#[derive(Debug, Clone, Copy)]
enum Due {
    /// An interval job: a point on the monotonic clock.
    At(Instant),
    /// A cron job: a wall-clock time.
    Wall(OffsetDateTime),
}

/// A run in progress.
#[derive(Debug, Clone, Copy)]
struct Running {
    started: Instant,
    started_at: OffsetDateTime,
}

/// The engine's own view of one job (the board holds what status shows).
#[derive(Debug, Default)]
struct Slot {
    due: Option<Due>,
    running: Option<Running>,
    /// A fire time came during the current run: run once more as soon as it ends.
    catch_up: bool,
}

/// What woke the loop.
enum Event {
    Stop(Duration),
    Finished(Option<Result<(Id, Finished), JoinError>>),
    Lease(LeaseAnswer),
    Tick,
}

/// A lease call's answer, with when it was sent (the lease runs from then at the latest).
struct LeaseAnswer {
    sent: Instant,
    result: Result<bool, LeaseError>,
}

type LeaseCall = Pin<Box<dyn Future<Output = LeaseAnswer> + Send>>;

pub(crate) struct Engine {
    entries: Vec<Entry>,
    slots: Vec<Slot>,
    board: Arc<Board>,
    leases: Arc<dyn Leases>,
    options: SchedulerOptions,
    renew_every: Duration,
    stop_rx: watch::Receiver<Option<Duration>>,
    /// Parent of every run's cancellation: fired at shutdown.
    shutdown: CancellationToken,
    /// Child of `shutdown` for runs started during the current leadership: fired when
    /// the lease is lost, replaced when it is won again.
    leadership: CancellationToken,
    leader: bool,
    /// Until when the lease is surely ours: the send time of the last granted call plus
    /// the TTL (the backend started the TTL no earlier than that).
    lease_valid_until: Option<Instant>,
    next_lease_call: Instant,
    lease_call: Option<LeaseCall>,
    runs: JoinSet<Finished>,
    run_ids: HashMap<Id, usize>,
}

impl Engine {
    pub(crate) fn new(
        entries: Vec<Entry>,
        board: Arc<Board>,
        leases: Arc<dyn Leases>,
        options: SchedulerOptions,
        stop_rx: watch::Receiver<Option<Duration>>,
    ) -> Engine {
        let shutdown = CancellationToken::new();
        let leadership = shutdown.child_token();
        let renew_every = options.lease_ttl / 3;
        Engine {
            slots: entries.iter().map(|_| Slot::default()).collect(),
            entries,
            board,
            leases,
            options,
            renew_every,
            stop_rx,
            shutdown,
            leadership,
            leader: false,
            lease_valid_until: None,
            next_lease_call: Instant::now(),
            lease_call: None,
            runs: JoinSet::new(),
            run_ids: HashMap::new(),
        }
    }

    pub(crate) async fn run(mut self) -> StopReport {
        metrics::set_leader(false);
        // Know whether we lead before planning, so `run_at_start` jobs run at start.
        let first = self.lease_call_future().await;
        self.on_lease_answer(first);
        self.plan_all();
        loop {
            self.check_lease_expiry();
            if self.lease_call.is_none() && Instant::now() >= self.next_lease_call {
                self.lease_call = Some(self.lease_call_future());
            }
            self.start_due_jobs();
            match self.next_event().await {
                Event::Stop(deadline) => return self.shut_down(deadline).await,
                Event::Finished(Some(joined)) => self.on_finished(joined),
                Event::Finished(None) | Event::Tick => {}
                Event::Lease(answer) => {
                    self.lease_call = None;
                    self.on_lease_answer(answer);
                }
            }
        }
    }

    async fn next_event(&mut self) -> Event {
        let wake = self.next_wake();
        let lease_call = OptionFuture::from(self.lease_call.as_mut());
        let has_runs = !self.runs.is_empty();
        tokio::select! {
            biased;
            changed = self.stop_rx.changed() => match changed {
                Ok(()) => match *self.stop_rx.borrow_and_update() {
                    Some(deadline) => Event::Stop(deadline),
                    None => Event::Tick,
                },
                // Every handle is gone: nobody can wait for the jobs any more.
                Err(_) => Event::Stop(Duration::ZERO),
            },
            joined = self.runs.join_next_with_id(), if has_runs => Event::Finished(joined),
            Some(answer) = lease_call => Event::Lease(answer),
            () = tokio::time::sleep_until(wake) => Event::Tick,
        }
    }

    // ---- leadership ----

    fn lease_call_future(&self) -> LeaseCall {
        let leases = Arc::clone(&self.leases);
        let name = self.options.lease_name.clone();
        let holder = self.options.holder.clone();
        let ttl = self.options.lease_ttl;
        let limit = self.renew_every;
        Box::pin(async move {
            let sent = Instant::now();
            // A hung backend must not hold the renewal past the point where the lease
            // could lapse unnoticed.
            let result =
                match tokio::time::timeout(limit, leases.try_acquire(&name, &holder, ttl)).await {
                    Ok(result) => result,
                    Err(_) => Err(LeaseError::Unavailable(format!(
                        "no answer within {}",
                        text::duration(limit)
                    ))),
                };
            LeaseAnswer { sent, result }
        })
    }

    fn on_lease_answer(&mut self, answer: LeaseAnswer) {
        self.next_lease_call = answer.sent + self.renew_every;
        match answer.result {
            Ok(true) => {
                self.lease_valid_until = Some(answer.sent + self.options.lease_ttl);
                self.set_leader(true, "lease granted");
            }
            Ok(false) => {
                self.lease_valid_until = None;
                self.set_leader(false, "another process holds the lease");
            }
            Err(e) => {
                // We may still hold the lease: keep leading until it would have
                // expired, and retry at the usual pace meanwhile.
                tracing::warn!(error = %e, leader = self.leader, "scheduler lease call failed");
                self.check_lease_expiry();
            }
        }
    }

    fn check_lease_expiry(&mut self) {
        if self.leader && self.lease_valid_until.is_none_or(|t| Instant::now() >= t) {
            self.lease_valid_until = None;
            self.set_leader(false, "the lease expired before it could be renewed");
        }
    }

    fn set_leader(&mut self, leader: bool, why: &str) {
        if leader == self.leader {
            return;
        }
        self.leader = leader;
        self.board.leader.store(leader, Ordering::Relaxed);
        metrics::set_leader(leader);
        if leader {
            tracing::info!(holder = %self.options.holder, why, "scheduler leads: running jobs");
            if self.leadership.is_cancelled() {
                self.leadership = self.shutdown.child_token();
            }
        } else {
            if self.shutdown.is_cancelled() {
                tracing::info!(holder = %self.options.holder, why, "scheduler no longer leads");
            } else {
                tracing::warn!(holder = %self.options.holder, why, "scheduler no longer leads: cancelling running jobs");
            }
            self.leadership.cancel();
            for slot in &mut self.slots {
                slot.catch_up = false;
            }
        }
    }

    // ---- planning ----

    fn plan_all(&mut self) {
        for index in 0..self.entries.len() {
            let entry = &self.entries[index];
            if !entry.options.enabled {
                continue;
            }
            let due = if entry.options.run_at_start {
                Some(Due::At(Instant::now()))
            } else {
                self.next_due_after_now(index)
            };
            self.set_due(index, due);
        }
    }

    /// The first fire time after now, counting an interval from now.
    fn next_due_after_now(&self, index: usize) -> Option<Due> {
        match &self.entries[index].plan {
            Plan::Every(period) => Some(Due::At(Instant::now() + *period)),
            plan @ Plan::Cron(_) => self.next_cron(index, plan),
        }
    }

    /// The fire time after `due`, which has just passed: an interval counts from `due`
    /// (no drift), unless that is already past too (the process stalled), in which case
    /// it counts from now rather than firing a burst.
    fn next_due_after(&self, index: usize, due: Due) -> Option<Due> {
        match (&self.entries[index].plan, due) {
            (Plan::Every(period), Due::At(at)) => {
                let next = at + *period;
                let now = Instant::now();
                Some(Due::At(if next > now { next } else { now + *period }))
            }
            // Cron: the first fire time after now, so a stall skips rather than bursts.
            _ => self.next_due_after_now(index),
        }
    }

    fn next_cron(&self, index: usize, plan: &Plan) -> Option<Due> {
        let next = plan.next_after(self.options.clock.now_utc());
        if next.is_none() {
            tracing::error!(job = %self.entries[index].name, "cron schedule has no next fire time; the job will not run again");
        }
        next.map(Due::Wall)
    }

    fn set_due(&mut self, index: usize, due: Option<Due>) {
        self.slots[index].due = due;
        let next_run = due.map(|d| self.wall_time_of(d));
        self.board.update(index, |s| s.next_run = next_run);
    }

    fn wall_time_of(&self, due: Due) -> OffsetDateTime {
        match due {
            Due::Wall(t) => t,
            Due::At(at) => {
                let ahead = at.saturating_duration_since(Instant::now());
                let now = self.options.clock.now_utc();
                time::Duration::try_from(ahead)
                    .ok()
                    .and_then(|d| now.checked_add(d))
                    .unwrap_or(now)
            }
        }
    }

    /// The monotonic instant at which `due` comes, as far as the clock tells now.
    fn instant_of(&self, due: Due) -> Instant {
        match due {
            Due::At(at) => at,
            Due::Wall(t) => {
                let ahead = t - self.options.clock.now_utc();
                let ahead = Duration::try_from(ahead).unwrap_or(Duration::ZERO);
                Instant::now() + ahead.min(MAX_SLEEP)
            }
        }
    }

    fn is_due(&self, due: Due) -> bool {
        match due {
            Due::At(at) => Instant::now() >= at,
            Due::Wall(t) => self.options.clock.now_utc() >= t,
        }
    }

    fn next_wake(&self) -> Instant {
        let mut wake = Instant::now() + MAX_SLEEP;
        if self.lease_call.is_none() {
            wake = wake.min(self.next_lease_call);
        }
        if let (true, Some(until)) = (self.leader, self.lease_valid_until) {
            wake = wake.min(until);
        }
        // While a follower awaits a lease answer, due jobs wait for it (it wakes the
        // loop), and a past due time must not make the loop spin.
        if self.awaiting_lease() {
            return wake;
        }
        for slot in &self.slots {
            if let Some(due) = slot.due {
                wake = wake.min(self.instant_of(due));
            }
        }
        wake
    }

    // ---- running ----

    /// A follower waiting for a lease answer holds its due jobs until the answer comes,
    /// so a process that is just taking over runs the job that fell due meanwhile.
    fn awaiting_lease(&self) -> bool {
        !self.leader && self.lease_call.is_some()
    }

    fn start_due_jobs(&mut self) {
        if self.awaiting_lease() {
            return;
        }
        for index in 0..self.slots.len() {
            let Some(due) = self.slots[index].due else {
                continue;
            };
            if !self.is_due(due) {
                continue;
            }
            if self.slots[index].running.is_some() {
                if self.leader {
                    // Never overlap: note it, and run once more when this run ends.
                    self.slots[index].catch_up = true;
                    self.board.update(index, |s| s.missed += 1);
                    ::metrics::counter!(metrics::JOB_MISSED, "job" => self.entries[index].name.to_string())
                        .increment(1);
                    tracing::warn!(job = %self.entries[index].name, "fire time came while the previous run is still going");
                }
            } else if self.leader {
                self.start_run(index);
            }
            // Followers move on too, so their status shows when the leader runs it.
            let next = self.next_due_after(index, due);
            self.set_due(index, next);
        }
    }

    fn start_run(&mut self, index: usize) {
        let entry = &self.entries[index];
        let cancel = self.leadership.child_token();
        let running = Running {
            started: Instant::now(),
            started_at: self.options.clock.now_utc(),
        };
        let work = run::execute(
            Arc::clone(&entry.name),
            Arc::clone(&entry.job),
            cancel,
            entry.options.timeout,
            running.started_at,
        );
        let handle = self.runs.spawn(work);
        self.run_ids.insert(handle.id(), index);
        self.slots[index].running = Some(running);
        self.board.update(index, |s| s.running = true);
    }

    fn on_finished(&mut self, joined: Result<(Id, Finished), JoinError>) {
        let (id, finished) = match joined {
            Ok(done) => done,
            Err(e) => {
                // `run::execute` catches the job's panics, so only an abort lands here,
                // and aborts happen at shutdown, which does not come through here.
                tracing::error!(error = %e, "job task ended abnormally");
                let Some(index) = self.run_ids.remove(&e.id()) else {
                    return;
                };
                let message = format!("job task ended abnormally: {e}");
                self.record_end(index, Outcome::Failed, message);
                return;
            }
        };
        let Some(index) = self.run_ids.remove(&id) else {
            return;
        };
        self.record(index, &finished);
        if std::mem::take(&mut self.slots[index].catch_up)
            && self.leader
            && !self.shutdown.is_cancelled()
        {
            self.start_run(index);
            let next = self.next_due_after_now(index);
            self.set_due(index, next);
        }
    }

    /// Records a run that ended without a [`Finished`] (dropped or aborted).
    fn record_end(&mut self, index: usize, outcome: Outcome, message: String) {
        let Some(running) = self.slots[index].running else {
            return;
        };
        let finished = Finished {
            started_at: running.started_at,
            duration: running.started.elapsed(),
            outcome,
            message,
        };
        self.record(index, &finished);
    }

    fn record(&mut self, index: usize, finished: &Finished) {
        self.slots[index].running = None;
        let job = self.entries[index].name.to_string();
        let last_run = LastRun {
            started_at: finished.started_at,
            duration_ms: u64::try_from(finished.duration.as_millis()).unwrap_or(u64::MAX),
            outcome: finished.outcome,
            message: finished.message.clone(),
        };
        self.board.update(index, |s| {
            s.running = false;
            s.runs += 1;
            if finished.outcome.is_failure() {
                s.failures += 1;
            }
            s.last_run = Some(last_run);
        });
        ::metrics::counter!(metrics::JOB_RUNS, "job" => job.clone(), "outcome" => finished.outcome.as_str())
            .increment(1);
        ::metrics::histogram!(metrics::JOB_DURATION_SECONDS, "job" => job.clone())
            .record(finished.duration.as_secs_f64());
        if finished.outcome == Outcome::Ok {
            let end = self.options.clock.now_utc();
            ::metrics::gauge!(metrics::JOB_LAST_SUCCESS, "job" => job)
                .set(end.unix_timestamp_nanos() as f64 / 1e9);
        }
    }

    // ---- shutdown ----

    async fn shut_down(mut self, deadline: Duration) -> StopReport {
        tracing::info!(
            running = self.runs.len(),
            deadline = %text::duration(deadline),
            "scheduler stopping"
        );
        self.shutdown.cancel();
        self.lease_call = None;
        let limit = Instant::now() + deadline;
        while !self.runs.is_empty() {
            tokio::select! {
                joined = self.runs.join_next_with_id() => match joined {
                    Some(joined) => self.on_finished(joined),
                    None => break,
                },
                () = tokio::time::sleep_until(limit) => break,
            }
        }
        let mut dropped = Vec::new();
        for index in 0..self.slots.len() {
            if self.slots[index].running.is_some() {
                let message = format!(
                    "dropped: still running when the shutdown deadline of {} passed",
                    text::duration(deadline)
                );
                tracing::warn!(job = %self.entries[index].name, "{message}");
                self.record_end(index, Outcome::Cancelled, message);
                dropped.push(self.entries[index].name.to_string());
            }
            self.set_due(index, None);
        }
        // Dropping the set aborts what is left; nothing waits for a job that ignores
        // both cancellation and the deadline.
        self.runs.abort_all();
        if self.leader {
            let release = self
                .leases
                .release(&self.options.lease_name, &self.options.holder);
            match tokio::time::timeout(self.renew_every, release).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not release the scheduler lease; it will expire")
                }
                Err(_) => tracing::warn!("releasing the scheduler lease timed out; it will expire"),
            }
        }
        self.set_leader(false, "stopped");
        StopReport { dropped }
    }
}
