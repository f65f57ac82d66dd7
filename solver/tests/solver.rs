//! The solver on fakes (see `fakes/`): scheduling, dedup across stages, first failure,
//! cancellation and cache-miss reasons, without root, mounts or a sandbox.

mod fakes;

use fakes::{drain, Graph, Harness, Seen};
use rbuild_ops::BuildDefinition;
use rbuild_solver::{Event, SolveError, SolveOptions};
use std::time::{Duration, Instant};

/// `a` in stage `base`, then `b` (stage `left`) and `c` (stage `right`) both on `a`, and the target
/// `left` + `COPY --link --from=right`: `a` is reached from two stages.
fn diamond(b: &str, c: &str) -> BuildDefinition {
    let mut g = Graph::default();
    let s = g.scratch();
    let a = g.run("base", 1, "a", s);
    let b = g.run("left", 2, b, a);
    let c = g.run("right", 2, c, a);
    let m = g.merge(b, c);
    g.layer(a).layer(b).layer(m);
    g.build(m)
}

fn seen(h: &Harness, what: Seen) -> Duration {
    let t = h.exec.at(&what);
    t.unwrap_or_else(|| panic!("{what:?} never happened: {:?}", h.exec.log()))
}

/// When step `name` started and finished.
fn ran(h: &Harness, name: &str) -> (Duration, Duration) {
    (
        seen(h, Seen::Started(name.into())),
        seen(h, Seen::Finished(name.into())),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_steps_run_at_once_after_their_inputs() {
    let h = Harness::new();
    let (solver, _rx) = h.solver(SolveOptions::default());
    let r = solver
        .solve(diamond("b sleep=300", "c sleep=300"))
        .await
        .unwrap();
    assert_eq!((r.steps_run, r.steps_cached), (3, 0));
    let a_done = seen(&h, Seen::Finished("a".into()));
    let (b0, b1) = ran(&h, "b");
    let (c0, c1) = ran(&h, "c");
    // Dependents start only once their input is done...
    assert!(a_done <= b0 && a_done <= c0, "{:?}", h.exec.log());
    // ...and the two independent ones overlap.
    assert!(
        b0 < c1 && c0 < b1,
        "b and c ran one after the other: {:?}",
        h.exec.log()
    );
    // The image has the three layers, in history order.
    assert_eq!(r.config.rootfs.diff_ids.len(), 3);
    assert!(
        h.snaps.uncommitted().is_empty(),
        "{:?}",
        h.snaps.uncommitted()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_bounds_how_many_steps_run_at_once() {
    let h = Harness::new();
    let (solver, _rx) = h.solver(SolveOptions {
        jobs: Some(1),
        ..Default::default()
    });
    solver
        .solve(diamond("b sleep=150", "c sleep=150"))
        .await
        .unwrap();
    let (b0, b1) = ran(&h, "b");
    let (c0, c1) = ran(&h, "c");
    assert!(
        b1 <= c0 || c1 <= b0,
        "overlap with --jobs 1: {:?}",
        h.exec.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_reached_from_two_stages_runs_once() {
    let h = Harness::new();
    let (solver, rx) = h.solver(SolveOptions::default());
    let r = solver
        .solve(diamond("b sleep=50", "c sleep=50"))
        .await
        .unwrap();
    assert_eq!(h.exec.starts("a"), 1, "{:?}", h.exec.log());
    assert_eq!(r.steps_run, 3);
    let started: Vec<String> = drain(&rx)
        .into_iter()
        .filter_map(|e| match e {
            Event::Started { vertex } => Some(vertex.name),
            _ => None,
        })
        .collect();
    assert_eq!(
        started.iter().filter(|n| n.ends_with("RUN a")).count(),
        1,
        "{started:?}"
    );

    // A second build of the same graph on the same store runs nothing and gives the same image.
    let (again, _rx) = h.solver(SolveOptions::default());
    let r2 = again
        .solve(diamond("b sleep=50", "c sleep=50"))
        .await
        .unwrap();
    assert_eq!((r2.steps_run, r2.steps_cached), (0, 3));
    assert_eq!(r2.manifest, r.manifest);
    assert_eq!(h.exec.starts("a"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_failure_is_reported_and_the_rest_cancelled() {
    let h = Harness::new();
    let (solver, rx) = h.solver(SolveOptions::default());
    let t = Instant::now();
    let err = solver
        .solve(diamond("b sleep=50 out=boom exit=3", "c sleep=10000"))
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    match &err {
        SolveError::Exec {
            instruction,
            exit_code,
            tail,
            ..
        } => {
            assert_eq!(instruction, "RUN b sleep=50 out=boom exit=3");
            assert_eq!(*exit_code, Some(3));
            assert_eq!(tail, &vec!["boom".to_string()]);
        }
        e => panic!("expected b's exit, got {e:?}"),
    }
    seen(&h, Seen::Cancelled("c".into()));
    let events = drain(&rx);
    let failed: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Failed { vertex, .. } => Some(vertex.name.as_str()),
            _ => None,
        })
        .collect();
    let cancelled: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Cancelled { vertex } => Some(vertex.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(failed, ["[left 2/9] RUN b sleep=50 out=boom exit=3"]);
    assert_eq!(cancelled, ["[right 2/9] RUN c sleep=10000"]);
    // Nothing of the failed or cancelled steps is left behind or recorded.
    assert!(
        h.snaps.uncommitted().is_empty(),
        "{:?}",
        h.snaps.uncommitted()
    );
    assert_eq!(h.snaps.committed().len(), 1, "{:?}", h.snaps.committed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_running_step_and_starts_no_other() {
    let h = Harness::new();
    let mut g = Graph::default();
    let s = g.scratch();
    let a = g.run("app", 1, "a sleep=10000", s);
    let b = g.run("app", 2, "b", a);
    g.layer(a).layer(b);
    let def = g.build(b);
    let (solver, _rx) = h.solver(SolveOptions::default());
    let task = tokio::spawn(solver.clone().solve(def));
    let t = Instant::now();
    while h.exec.at(&Seen::Started("a".into())).is_none() {
        assert!(t.elapsed() < Duration::from_secs(10), "a never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    solver.cancel();
    let res = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the solve did not stop after cancel")
        .unwrap();
    assert!(matches!(res, Err(SolveError::Cancelled)), "{res:?}");
    seen(&h, Seen::Cancelled("a".into()));
    assert_eq!(h.exec.starts("b"), 0);
    assert!(
        h.snaps.uncommitted().is_empty(),
        "{:?}",
        h.snaps.uncommitted()
    );
    assert!(h.snaps.committed().is_empty(), "{:?}", h.snaps.committed());
}

/// The reasons of the cache-miss events of one solve, by step name.
async fn misses(h: &Harness, def: BuildDefinition) -> Vec<(String, String)> {
    let (solver, rx) = h.solver(SolveOptions::default());
    solver.solve(def).await.unwrap();
    drain(&rx)
        .into_iter()
        .filter_map(|e| match e {
            Event::CacheMiss { vertex, reason, .. } => Some((vertex.name, reason)),
            _ => None,
        })
        .collect()
}

fn chain(b: &str) -> BuildDefinition {
    chain_with(b, false)
}

/// `a`, `b`, `c` in one stage; `no_cache`: `b` ignores the cache.
fn chain_with(b: &str, no_cache: bool) -> BuildDefinition {
    let mut g = Graph::default();
    let s = g.scratch();
    let a = g.run("app", 1, "a", s);
    let b = g.run("app", 2, b, a);
    if no_cache {
        g.no_cache(b);
    }
    let c = g.run("app", 3, "c", b);
    g.layer(a).layer(b).layer(c);
    g.build(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_says_why() {
    let h = Harness::new();
    let first = misses(&h, chain("b")).await;
    let never = "no earlier build of this step".to_string();
    assert_eq!(
        first,
        [
            ("[app 1/9] RUN a".to_string(), never.clone()),
            ("[app 2/9] RUN b".to_string(), never.clone()),
            ("[app 3/9] RUN c".to_string(), never),
        ]
    );
    // b changed: a is cached, b says what changed, c says its parent did.
    let second = misses(&h, chain("b out=x")).await;
    assert_eq!(
        second,
        [
            (
                "[app 2/9] RUN b out=x".to_string(),
                "instruction changed (was: RUN b)".to_string()
            ),
            (
                "[app 3/9] RUN c".to_string(),
                "parent step 2 changed: [app 2/9] RUN b out=x".to_string()
            ),
        ]
    );
    // Nothing changed: no miss.
    assert_eq!(misses(&h, chain("b out=x")).await, []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_without_cache_reruns_and_so_do_its_dependents() {
    let h = Harness::new();
    misses(&h, chain("b")).await;
    assert_eq!(
        misses(&h, chain_with("b", true)).await,
        [
            (
                "[app 2/9] RUN b".to_string(),
                "cache disabled for this step (--no-cache)".to_string()
            ),
            (
                "[app 3/9] RUN c".to_string(),
                "parent step re-runs with the cache disabled: [app 2/9] RUN b".to_string()
            ),
        ]
    );
    assert_eq!(
        (h.exec.starts("a"), h.exec.starts("b"), h.exec.starts("c")),
        (1, 2, 2)
    );
}
