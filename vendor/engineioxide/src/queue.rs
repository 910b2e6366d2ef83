//! tsunagi's patch: the socket's outgoing queue.
//!
//! Upstream uses `tokio::sync::mpsc::channel(max_buffer_size)`. tokio's channel stores its values in
//! linked blocks of 32 slots, allocates the first block when the channel is created and keeps up to
//! two blocks for reuse: with `PacketBuf` (~170 bytes) that is 5.4 KiB per idle socket, 10.8 KiB once
//! a burst (a join in a big room) has gone through — the largest share of an idle socket's memory.
//!
//! This queue has the same contract as the bounded channel as the socket uses it (a fixed bound,
//! `try_send`/`try_reserve` failing with `Full` or `Closed`, FIFO order, `close` letting the
//! receiver drain what is queued, cancel-safe `recv`), but its storage is a `VecDeque` allocated on
//! the first packet and released whenever it has drained: an idle socket holds none.
//!
//! It also holds the socket's volatile slot (upstream: a `tokio::sync::watch` channel of its own,
//! ~0.5 KiB per socket): the latest volatile value, overwritten by the next, received after
//! everything queued and at most once.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use tokio::sync::{Notify, mpsc::error::TrySendError};

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    /// Places promised to permits not yet used.
    reserved: usize,
    /// The receiver closed (or went away): nothing new is accepted.
    closed: bool,
    rx_waker: Option<Waker>,
    /// `Sender::send` calls waiting for a place (rare: the websocket upgrade's last Noop).
    send_waiters: usize,
    /// The latest volatile value not yet received.
    volatile: Option<T>,
}

#[derive(Debug)]
struct Shared<T> {
    bound: usize,
    state: Mutex<State<T>>,
    /// Wakes `Sender::closed` waiters.
    closed: Notify,
    /// Wakes `Sender::send` waiters when a place frees up.
    space: Notify,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // a panic while holding this lock cannot leave the state half-updated: recover it
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, value: T, from_permit: bool) {
        let waker = {
            let mut st = self.lock();
            if from_permit {
                st.reserved -= 1;
            }
            st.items.push_back(value);
            st.rx_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn close(&self) {
        let waker = {
            let mut st = self.lock();
            st.closed = true;
            st.rx_waker.take()
        };
        self.closed.notify_waiters();
        self.space.notify_waiters();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A bounded FIFO queue of `bound` places; see the module's documentation.
pub(crate) fn channel<T>(bound: usize) -> (Sender<T>, Receiver<T>) {
    assert!(bound > 0, "the queue needs at least one place");
    let shared = Arc::new(Shared {
        bound,
        state: Mutex::new(State {
            items: VecDeque::new(),
            reserved: 0,
            closed: false,
            rx_waker: None,
            send_waiters: 0,
            volatile: None,
        }),
        closed: Notify::new(),
        space: Notify::new(),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// The sending half.
#[derive(Debug)]
pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving half; closing or dropping it makes every later send fail with `Closed`.
#[derive(Debug)]
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// A place promised in the queue: `send` never fails; dropping it gives the place back.
pub(crate) struct Permit<'a, T> {
    shared: &'a Shared<T>,
    used: bool,
}

impl<T> Sender<T> {
    pub(crate) fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let waker = {
            let mut st = self.shared.lock();
            if st.closed {
                return Err(TrySendError::Closed(value));
            }
            if st.items.len() + st.reserved >= self.shared.bound {
                return Err(TrySendError::Full(value));
            }
            st.items.push_back(value);
            st.rx_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    pub(crate) fn try_reserve(&self) -> Result<Permit<'_, T>, TrySendError<()>> {
        let mut st = self.shared.lock();
        if st.closed {
            return Err(TrySendError::Closed(()));
        }
        if st.items.len() + st.reserved >= self.shared.bound {
            return Err(TrySendError::Full(()));
        }
        st.reserved += 1;
        Ok(Permit {
            shared: &self.shared,
            used: false,
        })
    }

    /// Waits for a place, then sends; fails only once the receiver has closed.
    pub(crate) async fn send(&self, value: T) -> Result<(), T> {
        loop {
            let space = self.shared.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            match self.try_reserve() {
                Ok(permit) => {
                    permit.send(value);
                    return Ok(());
                }
                Err(TrySendError::Closed(())) => return Err(value),
                Err(TrySendError::Full(())) => {}
            }
            self.shared.lock().send_waiters += 1;
            // decremented whether the wait ends or is cancelled
            let _waiting = Waiting(&self.shared);
            space.await;
        }
    }

    /// Replaces the volatile slot's value; `false` (dropped) once the receiver has closed.
    pub(crate) fn send_volatile(&self, value: T) -> bool {
        let waker = {
            let mut st = self.shared.lock();
            if st.closed {
                return false;
            }
            st.volatile = Some(value);
            st.rx_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Resolves once the receiver has closed or gone away.
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.shared.closed.notified();
            tokio::pin!(notified);
            // registered before the check, so a close between the two is not missed
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }
}

struct Waiting<'a, T>(&'a Shared<T>);

impl<T> Drop for Waiting<'_, T> {
    fn drop(&mut self) {
        self.0.lock().send_waiters -= 1;
    }
}

impl<T> Permit<'_, T> {
    pub(crate) fn send(mut self, value: T) {
        self.used = true;
        // a permitted send is accepted even after a close, as with tokio's channel: the receiver
        // still drains it
        self.shared.push(value, true);
    }
}

impl<T> Drop for Permit<'_, T> {
    fn drop(&mut self) {
        if !self.used {
            self.shared.lock().reserved -= 1;
        }
    }
}

/// Why `try_recv` returned nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TryRecvError {
    Empty,
    Disconnected,
}

impl<T> Receiver<T> {
    /// The next value; `None` once closed and drained (no permit outstanding).
    #[cfg(any(test, feature = "__test_harness"))]
    pub(crate) async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    #[cfg(any(test, feature = "__test_harness"))]
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut st = self.shared.lock();
        if let Some(v) = self.pop(&mut st) {
            return Poll::Ready(Some(v));
        }
        if st.closed && st.reserved == 0 {
            return Poll::Ready(None);
        }
        match &mut st.rx_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next queued value, else the volatile one; `None` once closed and drained (a volatile
    /// value left at the close is dropped).
    pub(crate) fn poll_recv_or_volatile(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut st = self.shared.lock();
        if let Some(v) = self.pop(&mut st) {
            return Poll::Ready(Some(v));
        }
        if st.closed && st.reserved == 0 {
            st.volatile = None;
            return Poll::Ready(None);
        }
        if let Some(v) = st.volatile.take() {
            return Poll::Ready(Some(v));
        }
        match &mut st.rx_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    pub(crate) fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut st = self.shared.lock();
        match self.pop(&mut st) {
            Some(v) => Ok(v),
            None if st.closed && st.reserved == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Refuses every later send; what is queued can still be received.
    pub(crate) fn close(&mut self) {
        self.shared.close();
    }

    fn pop(&self, st: &mut State<T>) -> Option<T> {
        let v = st.items.pop_front()?;
        if st.items.is_empty() {
            // drained: give the memory back (4 places of `PacketBuf` are ~0.5 KiB an idle socket
            // would keep). The writer drains everything queued per wake-up, so this is one
            // allocation per batch written, not per packet.
            st.items = VecDeque::new();
        }
        if st.send_waiters > 0 {
            self.shared.space.notify_waiters();
        }
        Some(v)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_fifo_with_permits() {
        let (tx, mut rx) = channel::<u32>(2);
        tx.try_send(1).unwrap();
        let p = tx.try_reserve().unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Full(()))));
        p.send(2);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(tx.try_reserve().unwrap());
        tx.try_send(4).unwrap();
        tx.try_send(5).unwrap();
        assert_eq!(rx.recv().await, Some(4));
    }

    #[tokio::test]
    async fn close_refuses_new_sends_and_drains_the_rest() {
        let (tx, mut rx) = channel::<u32>(8);
        tx.try_send(1).unwrap();
        let p = tx.try_reserve().unwrap();
        rx.close();
        assert!(tx.is_closed());
        tx.closed().await;
        assert!(matches!(tx.try_send(2), Err(TrySendError::Closed(2))));
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        p.send(3);
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.recv().await, None);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[tokio::test]
    async fn a_waiting_receiver_and_closed_waiter_are_woken() {
        let (tx, mut rx) = channel::<u32>(8);
        let tx = Arc::new(tx);
        let sender = tx.clone();
        let recv = tokio::spawn(async move {
            let v = rx.recv().await;
            rx.close();
            v
        });
        tokio::task::yield_now().await;
        sender.try_send(7).unwrap();
        assert_eq!(recv.await.unwrap(), Some(7));
        tx.closed().await;
    }

    #[tokio::test]
    async fn send_waits_for_a_place() {
        let (tx, mut rx) = channel::<u32>(1);
        let tx = Arc::new(tx);
        tx.try_send(1).unwrap();
        let sender = tx.clone();
        let waiting = tokio::spawn(async move { sender.send(2).await });
        tokio::task::yield_now().await;
        assert_eq!(rx.recv().await, Some(1));
        waiting.await.unwrap().unwrap();
        assert_eq!(rx.recv().await, Some(2));
        tx.try_send(3).unwrap();
        let sender = tx.clone();
        let refused = tokio::spawn(async move { sender.send(4).await });
        tokio::task::yield_now().await;
        rx.close();
        assert_eq!(refused.await.unwrap(), Err(4));
    }

    #[tokio::test]
    async fn a_drained_queue_releases_its_memory() {
        let (tx, mut rx) = channel::<u32>(128);
        tx.try_send(0).unwrap();
        assert_eq!(rx.recv().await, Some(0));
        assert_eq!(rx.shared.lock().items.capacity(), 0);
        for n in 0..100 {
            tx.try_send(n).unwrap();
        }
        for n in 0..100 {
            assert_eq!(rx.recv().await, Some(n));
        }
        assert_eq!(rx.shared.lock().items.capacity(), 0);
    }

    #[tokio::test]
    async fn the_volatile_slot_keeps_the_latest_after_the_queue_and_once() {
        let (tx, mut rx) = channel::<u32>(4);
        assert!(tx.send_volatile(10));
        assert!(tx.send_volatile(11));
        tx.try_send(1).unwrap();
        assert_eq!(next(&mut rx).await, Some(1));
        assert_eq!(next(&mut rx).await, Some(11));
        // nothing more: pending until a value comes
        let waiting = tokio::spawn(async move { (next(&mut rx).await, rx) });
        tokio::task::yield_now().await;
        assert!(tx.send_volatile(12));
        let (v, mut rx) = waiting.await.unwrap();
        assert_eq!(v, Some(12));
        rx.close();
        assert!(!tx.send_volatile(13));
        assert_eq!(next(&mut rx).await, None);
    }

    async fn next(rx: &mut Receiver<u32>) -> Option<u32> {
        std::future::poll_fn(|cx| rx.poll_recv_or_volatile(cx)).await
    }
}
