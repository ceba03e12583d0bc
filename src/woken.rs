//! Futures on one task that are polled only when their own waker was
//! woken: [`join`] for a connection's reader and writer, [`OnWake`] for the
//! rare branches of a `select!` that runs on every delivery.
//!
//! A connection's reader and writer share one task (a second task would
//! cost every idle connection its own allocation). `tokio::join!` polls
//! both futures whenever the task wakes, so each delivery woke the writer
//! *and* re-polled the whole reader (its timers, its notifications and a
//! read attempt on the socket): `perf` put that idle reader at 16 % of the
//! server's CPU in the steady fan-out benchmark. Here each future gets a
//! waker of its own that marks it ready before waking the task, and only
//! marked futures are polled.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use futures_util::task::{ArcWake, AtomicWaker};

/// One side's wake-up: marks the side ready, then wakes the joining task.
struct Side {
    ready: AtomicBool,
    task: AtomicWaker,
}

impl Side {
    /// A side that is ready at first (every future is polled once).
    fn new() -> Arc<Side> {
        Arc::new(Side {
            ready: AtomicBool::new(true),
            task: AtomicWaker::new(),
        })
    }

    /// Whether the side was woken since the last call (and clears that).
    fn take_ready(&self) -> bool {
        self.ready.swap(false, Ordering::AcqRel)
    }
}

impl ArcWake for Side {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.ready.store(true, Ordering::Release);
        arc_self.task.wake();
    }
}

pin_project_lite::pin_project! {
    /// A future polled only after its own waker was woken; polling it
    /// otherwise costs an atomic swap. For `select!` branches that rarely
    /// fire (a close, a shutdown) beside one that fires on every delivery
    /// (a `tokio::sync::Notified` locks its `Notify` each time it is
    /// polled), and for each side of [`join`].
    pub struct OnWake<F: Future> {
        #[pin]
        inner: F,
        // Set once `inner` completed: it is not polled again.
        done: bool,
        side: Arc<Side>,
        waker: Waker,
    }
}

/// Wraps `inner` so that it is polled only when it was woken.
pub fn on_wake<F: Future>(inner: F) -> OnWake<F> {
    let side = Side::new();
    OnWake {
        inner,
        done: false,
        waker: futures_util::task::waker(side.clone()),
        side,
    }
}

impl<F: Future> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if *this.done {
            return Poll::Pending;
        }
        // The task's waker is registered on every poll, before the flag
        // is taken: a wake-up takes the registered waker, so one that came
        // between a poll's taking of the flag and its end (its store seen,
        // its wake not yet) would otherwise leave nothing registered, and
        // the next wake-up of this side would wake nobody. A connection's
        // reader then slept until its writer was woken: a client that sent
        // a request and got no delivery waited forever (one in 1,000
        // Socket.IO subscribers under load). `register` does not clone a
        // waker that wakes the same task.
        this.side.task.register(cx.waker());
        if !this.side.take_ready() {
            return Poll::Pending;
        }
        let value = std::task::ready!(this.inner.poll(&mut Context::from_waker(this.waker)));
        *this.done = true;
        Poll::Ready(value)
    }
}

pin_project_lite::pin_project! {
    /// The future of [`join`]. A struct, not an `async fn`: an async
    /// fn would store both (large) futures twice, as its arguments and as
    /// the pinned locals they move into.
    pub struct JoinWoken<A: Future, B: Future> {
        #[pin]
        a: OnWake<A>,
        #[pin]
        b: OnWake<B>,
        out_a: Option<A::Output>,
        out_b: Option<B::Output>,
    }
}

/// Runs `a` and `b` to completion on the current task and returns both
/// outputs, polling each only after its own waker was woken.
pub fn join<A: Future, B: Future>(a: A, b: B) -> JoinWoken<A, B> {
    JoinWoken {
        a: on_wake(a),
        b: on_wake(b),
        out_a: None,
        out_b: None,
    }
}

impl<A: Future, B: Future> Future for JoinWoken<A, B> {
    type Output = (A::Output, B::Output);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.out_a.is_none()
            && let Poll::Ready(value) = this.a.poll(cx)
        {
            *this.out_a = Some(value);
        }
        if this.out_b.is_none()
            && let Poll::Ready(value) = this.b.poll(cx)
        {
            *this.out_b = Some(value);
        }
        if this.out_a.is_some()
            && this.out_b.is_some()
            && let (Some(a), Some(b)) = (this.out_a.take(), this.out_b.take())
        {
            return Poll::Ready((a, b));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Counts how often the inner future is polled.
    async fn counted<F: Future>(polls: &AtomicUsize, f: F) -> F::Output {
        let mut f = pin!(f);
        std::future::poll_fn(|cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            f.as_mut().poll(cx)
        })
        .await
    }

    /// Polls `f` once.
    async fn poll_once<F: Future>(mut f: Pin<&mut F>) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx))).await
    }

    #[tokio::test]
    async fn both_outputs_are_returned() {
        let (a, b) = join(async { 1 }, async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            "two"
        })
        .await;
        assert_eq!((a, b), (1, "two"));
    }

    #[tokio::test]
    async fn a_wake_up_polls_only_the_woken_future() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let reader_polls = AtomicUsize::new(0);
        let writer_polls = AtomicUsize::new(0);
        let feeder = tokio::spawn(async move {
            for i in 0..100 {
                tx.send(i).expect("send");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // Dropping tx ends the writer; then the reader is told to stop.
            drop(tx);
            tokio::time::sleep(Duration::from_millis(5)).await;
            let _ = stop_tx.send(());
        });
        let (received, ()) = join(
            counted(&writer_polls, async {
                let mut n = 0;
                while rx.recv().await.is_some() {
                    n += 1;
                }
                n
            }),
            counted(&reader_polls, async {
                let _ = stop_rx.await;
            }),
        )
        .await;
        feeder.await.expect("feeder");
        assert_eq!(received, 100);
        // The writer was polled for each item; the reader once at the start
        // and once when told to stop, not once per item.
        assert!(writer_polls.load(Ordering::Relaxed) >= 100);
        assert!(
            reader_polls.load(Ordering::Relaxed) <= 3,
            "reader polled {} times",
            reader_polls.load(Ordering::Relaxed)
        );
    }

    /// A waker that counts its wake-ups.
    struct CountingWaker(AtomicUsize);

    impl ArcWake for CountingWaker {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The interleaving that lost wake-ups: a side's wake-up marks it
    /// ready, a poll takes the mark, then the wake-up wakes the task
    /// (taking the registered waker), and a spurious poll follows. A later
    /// wake-up of the side must still wake the task.
    #[test]
    fn a_wake_up_racing_a_poll_leaves_the_task_registered() {
        let task = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let task_waker = futures_util::task::waker(task.clone());
        let mut cx = Context::from_waker(&task_waker);
        let mut side = std::pin::pin!(on_wake(std::future::pending::<()>()));
        assert!(side.as_mut().poll(&mut cx).is_pending());
        let inner_waker = side.waker.clone();
        let shared = side.side.clone();
        // The first half of a wake-up: the mark.
        shared.ready.store(true, Ordering::Release);
        assert!(side.as_mut().poll(&mut cx).is_pending());
        // The second half: the task is woken, and polled for nothing.
        shared.task.wake();
        assert!(side.as_mut().poll(&mut cx).is_pending());
        let before = task.0.load(Ordering::SeqCst);
        // The side's next wake-up (its socket became readable).
        inner_waker.wake_by_ref();
        assert_eq!(
            task.0.load(Ordering::SeqCst),
            before + 1,
            "the wake-up reached no task"
        );
    }

    #[tokio::test]
    async fn on_wake_polls_its_future_only_after_a_wake_up() {
        let notify = tokio::sync::Notify::new();
        let polls = AtomicUsize::new(0);
        let mut waiting = std::pin::pin!(on_wake(counted(&polls, notify.notified())));
        assert!(poll_once(waiting.as_mut()).await.is_pending());
        // A select that wakes the task over and over, as the pump's does
        // for every delivery: `waiting` is polled each time, its future not.
        for _ in 0..50 {
            tokio::select! {
                _ = &mut waiting => unreachable!("not notified yet"),
                _ = tokio::task::yield_now() => {}
            }
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1, "polled once, to register");
        notify.notify_waiters();
        waiting.as_mut().await;
        assert_eq!(polls.load(Ordering::Relaxed), 2);
        // Finished: polling again neither polls the inner future nor ends.
        let again = poll_once(waiting.as_mut()).await;
        assert!(again.is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }
}
