use super::*;

/// A device with `work` turns of work queued, that records calls.
struct Script {
    work: u32,
    armed: bool,
    arms: u32,
    sleeps: u32,
    ticks: u32,
    wake_with: u32,
    yield_on_sleep: bool,
    done_after_sleeps: u32,
}

impl Device for Script {
    type Error = ();
    fn turn(&mut self) -> Result<Turn, ()> {
        if self.work > 0 {
            self.work -= 1;
            return Ok(Turn::Busy);
        }
        if self.sleeps >= self.done_after_sleeps {
            return Ok(Turn::Done);
        }
        Ok(Turn::Idle)
    }
    fn arm(&mut self, on: bool) -> Result<(), ()> {
        self.armed = on;
        self.arms += on as u32;
        Ok(())
    }
    fn has_work(&mut self) -> Result<bool, ()> {
        Ok(self.work > 0)
    }
    fn tick(&mut self, _: Instant) -> Result<(), ()> {
        self.ticks += 1;
        Ok(())
    }
    fn sleep(&mut self, _: Duration) -> Result<Slept, ()> {
        assert!(self.armed, "slept with notifications disarmed");
        self.sleeps += 1;
        self.work += self.wake_with;
        Ok(if self.yield_on_sleep {
            Slept::Yield
        } else {
            Slept::Woke
        })
    }
}

fn script() -> Script {
    Script {
        work: 10,
        armed: false,
        arms: 0,
        sleeps: 0,
        ticks: 0,
        wake_with: 5,
        yield_on_sleep: false,
        done_after_sleeps: 2,
    }
}

#[test]
fn sleep_policy_arms_before_every_sleep_and_disarms_after() {
    let mut d = script();
    assert_eq!(WaitLoop::new(Wait::Sleep).run(&mut d), Ok(Exit::Done));
    assert_eq!(d.sleeps, 2);
    assert_eq!(d.arms, 2);
    assert!(!d.armed, "busy again after a wake-up: disarmed");
}

#[test]
fn yielding_device_returns_armed() {
    let mut d = Script {
        yield_on_sleep: true,
        ..script()
    };
    assert_eq!(WaitLoop::new(Wait::Sleep).run(&mut d), Ok(Exit::Yielded));
    assert!(d.armed, "the event loop sleeps next: notifications stay on");
    assert_eq!(d.work, 5);
}

#[test]
fn recheck_finds_work_published_before_rearm() {
    struct Late(bool, u32);
    impl Device for Late {
        type Error = ();
        fn turn(&mut self) -> Result<Turn, ()> {
            Ok(if self.1 > 0 { Turn::Done } else { Turn::Idle })
        }
        fn arm(&mut self, on: bool) -> Result<(), ()> {
            self.0 = on;
            Ok(())
        }
        fn has_work(&mut self) -> Result<bool, ()> {
            // The peer published just before our re-enable.
            self.1 += 1;
            Ok(true)
        }
        fn tick(&mut self, _: Instant) -> Result<(), ()> {
            Ok(())
        }
        fn sleep(&mut self, _: Duration) -> Result<Slept, ()> {
            panic!("slept although the re-check found work");
        }
    }
    let mut d = Late(false, 0);
    assert_eq!(WaitLoop::new(Wait::Sleep).run(&mut d), Ok(Exit::Done));
}

#[test]
fn adaptive_loop_counts_spin_hits_and_sleeps() {
    // Idle turns until the budget passes, then a sleep that brings work.
    let mut d = script();
    let mut w = WaitLoop::calibrated(Wait::Adaptive, MIN_SPIN);
    assert_eq!(w.run(&mut d), Ok(Exit::Done));
    assert_eq!(w.counters().sleeps, 2);
    assert_eq!(d.sleeps, 2);
}

#[test]
fn a_spin_hit_is_counted_after_the_turn_that_follows_it() {
    // Cycles of idle turns then one busy turn, well within a spin
    // budget: each busy turn ends a spin hit, counted at the next clock
    // read (or when the device is done), never a sleep.
    struct Hits {
        turns: u32,
        busy_seen: u32,
    }
    impl Device for Hits {
        type Error = ();
        fn turn(&mut self) -> Result<Turn, ()> {
            self.turns += 1;
            if self.busy_seen == 5 {
                return Ok(Turn::Done);
            }
            Ok(if self.turns.is_multiple_of(20) {
                self.busy_seen += 1;
                Turn::Busy
            } else {
                Turn::Idle
            })
        }
        fn arm(&mut self, _: bool) -> Result<(), ()> {
            Ok(())
        }
        fn has_work(&mut self) -> Result<bool, ()> {
            Ok(false)
        }
        fn tick(&mut self, _: Instant) -> Result<(), ()> {
            Ok(())
        }
        fn sleep(&mut self, _: Duration) -> Result<Slept, ()> {
            panic!("slept within the spin budget");
        }
    }
    let mut d = Hits {
        turns: 0,
        busy_seen: 0,
    };
    let mut w = WaitLoop::calibrated(Wait::Adaptive, Duration::from_secs(1));
    assert_eq!(w.run(&mut d), Ok(Exit::Done));
    assert_eq!(w.counters().spin_hits, 5);
    assert_eq!(w.counters().sleeps, 0);
}

#[test]
fn spin_policy_never_sleeps_and_still_ticks() {
    let mut d = Script {
        work: 0,
        done_after_sleeps: 1,
        ..script()
    };
    // Spin until a tick has happened, then finish via a scripted flag.
    struct Spin(Script, Instant);
    impl Device for Spin {
        type Error = ();
        fn turn(&mut self) -> Result<Turn, ()> {
            Ok(if self.0.ticks > 0 {
                Turn::Done
            } else {
                Turn::Idle
            })
        }
        fn arm(&mut self, on: bool) -> Result<(), ()> {
            self.0.arm(on)
        }
        fn has_work(&mut self) -> Result<bool, ()> {
            Ok(false)
        }
        fn tick(&mut self, now: Instant) -> Result<(), ()> {
            self.1 = now;
            self.0.tick(now)
        }
        fn sleep(&mut self, _: Duration) -> Result<Slept, ()> {
            panic!("spin slept");
        }
    }
    let mut s = Spin(
        std::mem::replace(
            &mut d,
            Script {
                work: 0,
                ..script()
            },
        ),
        Instant::now(),
    );
    assert_eq!(WaitLoop::new(Wait::Spin).run(&mut s), Ok(Exit::Done));
    assert_eq!(s.0.ticks, 1);
    assert_eq!(s.0.arms, 0);
}
