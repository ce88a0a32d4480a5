//! Wakers that queue work for the worker's loop instead of running it.
//!
//! The `h2` crate wakes a task when its stream or connection can make
//! progress (a response arrived, flow-control window opened, frames were
//! queued for the socket). Each h2 connection and each session with an h2
//! stream owns one waker; waking it puts its task in the worker's queue
//! once, and the loop drains the queue after dispatching readiness events.
//! Everything runs on the worker's thread; the mutex is uncontended and
//! only there because `std::task::Wake` must be `Send + Sync`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

/// What a woken task asks the loop to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Poll the h2 connection with this key and serial.
    Conn { key: usize, serial: u64 },
    /// Drive the session with this key and generation.
    Session { key: usize, generation: u64 },
}

/// The worker's queue of woken tasks.
#[derive(Debug, Default)]
pub struct WakeQueue {
    queue: Mutex<VecDeque<Arc<TaskWaker>>>,
    /// The queue's length, read without the lock: the loop checks it every
    /// turn, and a worker with no h2 backend never takes the lock.
    len: AtomicUsize,
}

#[derive(Debug)]
struct TaskWaker {
    task: Task,
    queue: Arc<WakeQueue>,
    /// In the queue already: a second wake before the loop ran it is free.
    queued: AtomicBool,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            let mut queue = self.queue.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.push_back(Arc::clone(self));
            self.queue.len.store(queue.len(), Ordering::Release);
        }
    }
}

impl WakeQueue {
    pub fn new() -> Arc<WakeQueue> {
        Arc::new(WakeQueue::default())
    }

    /// A waker that queues `task` on `queue`.
    pub fn waker(queue: &Arc<WakeQueue>, task: Task) -> Waker {
        Waker::from(Arc::new(TaskWaker {
            task,
            queue: Arc::clone(queue),
            queued: AtomicBool::new(false),
        }))
    }

    /// The next woken task; its waker may queue it again from here on.
    pub fn pop(&self) -> Option<Task> {
        if self.is_empty() {
            return None;
        }
        let waker = {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let waker = queue.pop_front();
            self.len.store(queue.len(), Ordering::Release);
            waker?
        };
        waker.queued.store(false, Ordering::Release);
        Some(waker.task)
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_is_queued_once_until_popped() {
        let queue = WakeQueue::new();
        let task = Task::Session {
            key: 3,
            generation: 9,
        };
        let waker = WakeQueue::waker(&queue, task);
        waker.wake_by_ref();
        waker.wake_by_ref();
        assert_eq!(queue.pop(), Some(task));
        assert_eq!(queue.pop(), None);
        waker.wake();
        assert_eq!(queue.pop(), Some(task));
        assert!(queue.is_empty());
    }
}
