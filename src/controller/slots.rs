//! The reconcile slots (`--concurrency`): how many Canaries reconcile at once.
//!
//! Slots are handed out first come, first served within two lanes, and an analysis tick
//! that is due goes before every other reconcile. Ticks come at most once per interval
//! per Canary, so their load is bounded by the Canaries in analysis; the other
//! reconciles come in bursts (a thousand targets changed by one commit, a thousand
//! Deployments rolling out) and would otherwise make every tick queued behind them late.
//!
//! kube-runtime's own limit is not used: it keeps the requests that fall due while
//! every slot is busy in a hash set and picks among them in hash order, which under
//! sustained load starves some Canaries.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use tokio::sync::oneshot;

/// Which queue a reconcile waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// An analysis tick whose time has come: served first.
    Tick,
    /// Everything else: detections, initialisation, promotions, watch events.
    Other,
}

impl Lane {
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Tick => "tick",
            Lane::Other => "other",
        }
    }
}

#[derive(Debug)]
struct State {
    free: usize,
    closed: bool,
    ticks: VecDeque<oneshot::Sender<Slot>>,
    others: VecDeque<oneshot::Sender<Slot>>,
}

/// A fixed number of slots, shared by clones.
#[derive(Clone, Debug)]
pub struct Slots {
    state: Arc<Mutex<State>>,
}

/// A taken slot; dropping it hands it to the next waiter (ticks first).
#[derive(Debug)]
pub struct Slot {
    /// `None` once disarmed: a slot that could not be handed over is not released twice.
    state: Option<Arc<Mutex<State>>>,
}

impl Slots {
    pub fn new(slots: usize) -> Self {
        Slots {
            state: Arc::new(Mutex::new(State {
                free: slots,
                closed: false,
                ticks: VecDeque::new(),
                others: VecDeque::new(),
            })),
        }
    }

    /// Waits for a slot in `lane`; `None` once the slots are closed (on SIGTERM: what
    /// waits is left to the next leader).
    pub async fn take(&self, lane: Lane) -> Option<Slot> {
        let waiting = {
            let mut state = self.state.lock().expect("slots");
            if state.closed {
                return None;
            }
            if state.free > 0 {
                state.free -= 1;
                return Some(Slot {
                    state: Some(self.state.clone()),
                });
            }
            let (send, receive) = oneshot::channel();
            match lane {
                Lane::Tick => state.ticks.push_back(send),
                Lane::Other => state.others.push_back(send),
            }
            receive
        };
        // A slot sent to a waiter that has gone (its reconcile was dropped) is dropped
        // with the channel, which hands it on.
        waiting.await.ok()
    }

    /// Refuses every waiting and later `take`; slots already taken are kept until dropped.
    pub fn close(&self) {
        let mut state = self.state.lock().expect("slots");
        state.closed = true;
        state.ticks.clear();
        state.others.clear();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        loop {
            let next = {
                let mut locked = state.lock().expect("slots");
                match locked
                    .ticks
                    .pop_front()
                    .or_else(|| locked.others.pop_front())
                {
                    Some(next) => next,
                    None => {
                        locked.free += 1;
                        return;
                    }
                }
            };
            match next.send(Slot {
                state: Some(state.clone()),
            }) {
                Ok(()) => return,
                // That waiter gave up: disarm the returned slot and try the next one.
                Err(mut slot) => slot.state = None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Spawns a task that takes a slot in `lane`, records `name` once it has it and
    /// gives it back (which lets the next waiter in).
    fn waiter(
        slots: &Slots,
        lane: Lane,
        name: &'static str,
        order: &Arc<Mutex<Vec<&'static str>>>,
    ) -> tokio::task::JoinHandle<bool> {
        let (slots, order) = (slots.clone(), order.clone());
        tokio::spawn(async move {
            let slot = slots.take(lane).await;
            order.lock().unwrap().push(name);
            slot.is_some()
        })
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn a_due_tick_goes_before_reconciles_that_waited_longer_and_each_lane_is_first_come_first_served()
     {
        let slots = Slots::new(1);
        let held = slots.take(Lane::Other).await.expect("a free slot");
        let order = Arc::default();
        let mut tasks = Vec::new();
        for (lane, name) in [
            (Lane::Other, "other 1"),
            (Lane::Other, "other 2"),
            (Lane::Tick, "tick 1"),
            (Lane::Other, "other 3"),
            (Lane::Tick, "tick 2"),
        ] {
            tasks.push(waiter(&slots, lane, name, &order));
            settle().await;
        }
        assert!(order.lock().unwrap().is_empty(), "the only slot is held");
        drop(held);
        for task in tasks {
            assert!(task.await.unwrap(), "every waiter got a slot");
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["tick 1", "tick 2", "other 1", "other 2", "other 3"]
        );
    }

    #[tokio::test]
    async fn no_more_reconciles_run_at_once_than_there_are_slots() {
        let slots = Slots::new(3);
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let (slots, running, most) = (slots.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    let lane = if i % 3 == 0 { Lane::Tick } else { Lane::Other };
                    let _slot = slots.take(lane).await.expect("not closed");
                    let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(slots.state.lock().unwrap().free, 3, "every slot came back");
    }

    #[tokio::test]
    async fn a_slot_handed_to_a_reconcile_that_gave_up_goes_to_the_next_one() {
        let slots = Slots::new(1);
        let held = slots.take(Lane::Other).await.expect("a free slot");
        let gave_up = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.take(Lane::Tick).await })
        };
        settle().await;
        let order = Arc::default();
        let next = waiter(&slots, Lane::Other, "next", &order);
        settle().await;
        gave_up.abort();
        let _ = gave_up.await;
        drop(held);
        let got = tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("the next waiter got the slot")
            .unwrap();
        assert!(got);
        assert_eq!(*order.lock().unwrap(), ["next"]);
        assert_eq!(slots.state.lock().unwrap().free, 1, "and gave it back");
    }

    #[tokio::test]
    async fn closed_slots_turn_away_waiting_and_later_reconciles() {
        let slots = Slots::new(1);
        let held = slots.take(Lane::Other).await.expect("a free slot");
        let waiting = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.take(Lane::Tick).await })
        };
        settle().await;
        slots.close();
        assert!(waiting.await.unwrap().is_none());
        assert!(slots.take(Lane::Other).await.is_none());
        drop(held);
    }
}
