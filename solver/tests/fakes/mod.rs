//! In-memory fakes for the solver's seam: snapshots as plain directories (copied, never mounted)
//! and an executor that plays a tiny script instead of running a command. Nothing here needs
//! root; the content store is the real one on a temporary directory.

use rbuild_oci::ImageConfig;
use rbuild_ops::{
    BuildDefinition, BuildGraph, ExecOp, HistoryStep, ImageTarget, MergeOp, Op, Source, Span,
    Vertex, VertexId, VertexMeta,
};
use rbuild_sandbox::{Cancel, ExitKind, OutputStream, RunOutcome, RunSpec};
use rbuild_snapshotter::{Changes, MountSpec};
use rbuild_solver::{Event, EventSink, Executor, Parts, Snapshots, SolveOptions, Solver};
use rbuild_store::Store;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

struct Snap {
    dir: PathBuf,
    parent: Option<String>,
    committed: bool,
    /// A view shares its parent's dir.
    view: bool,
}

/// Snapshots as directories: `prepare` copies the parent's tree, `commit` renames, `mount` hands
/// out the directory itself.
pub struct FakeSnapshots {
    root: PathBuf,
    snaps: Mutex<HashMap<String, Snap>>,
    next: AtomicU64,
}

impl FakeSnapshots {
    pub fn new(root: &Path) -> Self {
        std::fs::create_dir_all(root).unwrap();
        FakeSnapshots {
            root: root.to_path_buf(),
            snaps: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        }
    }

    /// Names of the committed snapshots.
    pub fn committed(&self) -> Vec<String> {
        let s = self.snaps.lock().unwrap();
        let mut v: Vec<String> = s
            .iter()
            .filter(|(_, x)| x.committed)
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }

    /// Keys of snapshots left active or viewed (a leak once a solve has returned).
    pub fn uncommitted(&self) -> Vec<String> {
        let s = self.snaps.lock().unwrap();
        s.iter()
            .filter(|(_, x)| !x.committed)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn committed_dir(&self, s: &HashMap<String, Snap>, name: &str) -> Result<PathBuf, String> {
        match s.get(name) {
            Some(x) if x.committed => Ok(x.dir.clone()),
            Some(_) => Err(format!("{name} is not committed")),
            None => Err(format!("{name} does not exist")),
        }
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let t = e.file_type()?;
        if t.is_dir() {
            copy_tree(&src, &dst)?;
        } else if t.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

fn bind(dir: &Path) -> Vec<MountSpec> {
    vec![MountSpec {
        kind: MountSpec::BIND.to_string(),
        source: dir.to_path_buf(),
        options: vec![],
    }]
}

impl Snapshots for FakeSnapshots {
    fn exists(&self, name: &str) -> bool {
        self.snaps.lock().unwrap().contains_key(name)
    }
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<MountSpec>, String> {
        let mut s = self.snaps.lock().unwrap();
        if s.contains_key(key) {
            return Err(format!("{key} exists"));
        }
        let dir = self
            .root
            .join(self.next.fetch_add(1, Ordering::SeqCst).to_string());
        match parent {
            Some(p) => copy_tree(&self.committed_dir(&s, p)?, &dir).map_err(|e| e.to_string())?,
            None => std::fs::create_dir(&dir).map_err(|e| e.to_string())?,
        }
        s.insert(
            key.to_string(),
            Snap {
                dir: dir.clone(),
                parent: parent.map(str::to_string),
                committed: false,
                view: false,
            },
        );
        Ok(bind(&dir))
    }
    fn view(&self, key: &str, parent: &str) -> Result<Vec<MountSpec>, String> {
        let mut s = self.snaps.lock().unwrap();
        if s.contains_key(key) {
            return Err(format!("{key} exists"));
        }
        let dir = self.committed_dir(&s, parent)?;
        s.insert(
            key.to_string(),
            Snap {
                dir: dir.clone(),
                parent: Some(parent.to_string()),
                committed: false,
                view: true,
            },
        );
        Ok(bind(&dir))
    }
    fn commit(&self, name: &str, key: &str) -> Result<(), String> {
        let mut s = self.snaps.lock().unwrap();
        match s.get(key) {
            Some(x) if !x.committed && !x.view => {}
            Some(_) => return Err(format!("{key} is not active")),
            None => return Err(format!("{key} does not exist")),
        }
        let mut x = s.remove(key).unwrap();
        match s.get(name) {
            // Committed first by someone else: theirs stays, ours goes.
            Some(existing) if existing.committed => {
                let _ = std::fs::remove_dir_all(&x.dir);
                return Ok(());
            }
            Some(_) => {
                s.insert(key.to_string(), x);
                return Err(format!("{name} exists and is not committed"));
            }
            None => {}
        }
        x.committed = true;
        s.insert(name.to_string(), x);
        Ok(())
    }
    fn remove(&self, key_or_name: &str) -> Result<(), String> {
        let mut s = self.snaps.lock().unwrap();
        if s.values()
            .any(|x| x.parent.as_deref() == Some(key_or_name) && x.view)
        {
            return Err(format!("{key_or_name} has views"));
        }
        let x = s
            .remove(key_or_name)
            .ok_or_else(|| format!("{key_or_name} does not exist"))?;
        if !x.view {
            let _ = std::fs::remove_dir_all(&x.dir);
        }
        Ok(())
    }
    fn upper_dir(&self, key: &str) -> Result<PathBuf, String> {
        let s = self.snaps.lock().unwrap();
        s.get(key)
            .map(|x| x.dir.clone())
            .ok_or_else(|| format!("{key} does not exist"))
    }
    fn changes(&self, key: &str) -> Result<Changes, String> {
        let s = self.snaps.lock().unwrap();
        let x = s.get(key).ok_or_else(|| format!("{key} does not exist"))?;
        let parent = match &x.parent {
            Some(p) => Some(self.committed_dir(&s, p)?),
            None => None,
        };
        Ok(Changes::Tree {
            tree: x.dir.clone(),
            parent,
        })
    }
    fn layer_chain(&self, name: &str) -> Result<Vec<PathBuf>, String> {
        let s = self.snaps.lock().unwrap();
        Ok(vec![self.committed_dir(&s, name)?])
    }
    fn mount(&self, specs: &[MountSpec], _target: &Path) -> Result<PathBuf, String> {
        match specs {
            [one] if one.kind == MountSpec::BIND => Ok(one.source.clone()),
            _ => Err(format!("the fake mounts one bind, not {specs:?}")),
        }
    }
    fn unmount(&self, _target: &Path) -> Result<(), String> {
        Ok(())
    }
}

/// What the fake executor saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Started(String),
    Finished(String),
    Cancelled(String),
}

/// Plays `args` as a script instead of running them: `args[0]` names the step (and a file of that
/// name is written into the rootfs, so every step has a layer); then `sleep=MS` (stops early when
/// cancelled), `out=TEXT` (a line on stdout), `exit=N`.
pub struct FakeExecutor {
    epoch: Instant,
    pub log: Mutex<Vec<(Duration, Seen)>>,
}

impl FakeExecutor {
    pub fn new() -> Self {
        FakeExecutor {
            epoch: Instant::now(),
            log: Mutex::new(Vec::new()),
        }
    }

    fn note(&self, s: Seen) {
        self.log.lock().unwrap().push((self.epoch.elapsed(), s));
    }

    /// When `what` happened, if it did.
    pub fn at(&self, what: &Seen) -> Option<Duration> {
        let log = self.log.lock().unwrap();
        log.iter().find(|(_, s)| s == what).map(|(t, _)| *t)
    }

    /// A copy of the log.
    pub fn log(&self) -> Vec<(Duration, Seen)> {
        self.log.lock().unwrap().clone()
    }

    /// How many times step `name` started.
    pub fn starts(&self, name: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(_, s)| *s == Seen::Started(name.to_string()))
            .count()
    }
}

impl Executor for FakeExecutor {
    fn run(
        &self,
        spec: &RunSpec,
        on_output: &mut dyn FnMut(OutputStream, &[u8]),
        cancel: &Cancel,
    ) -> Result<RunOutcome, String> {
        let name = spec.args[0].clone();
        self.note(Seen::Started(name.clone()));
        std::fs::write(spec.rootfs.join(&name), name.as_bytes()).map_err(|e| e.to_string())?;
        let mut code = 0;
        for a in &spec.args[1..] {
            let (verb, val) = a.split_once('=').unwrap_or((a, ""));
            match verb {
                "sleep" => {
                    let until = Instant::now() + Duration::from_millis(val.parse().unwrap());
                    while Instant::now() < until {
                        if cancel.is_cancelled() {
                            self.note(Seen::Cancelled(name.clone()));
                            return Ok(RunOutcome {
                                status: ExitKind::Signaled(9),
                                pids_limit_hit: false,
                            });
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                "out" => on_output(OutputStream::Stdout, format!("{val}\n").as_bytes()),
                "exit" => code = val.parse().unwrap(),
                _ => return Err(format!("fake executor: unknown verb {a}")),
            }
        }
        self.note(Seen::Finished(name));
        Ok(RunOutcome {
            status: ExitKind::Exited(code),
            pids_limit_hit: false,
        })
    }
}

/// A build graph made by hand: RUN steps on scratch, in named stages.
#[derive(Default)]
pub struct Graph {
    pub g: BuildGraph,
    history: Vec<HistoryStep>,
}

impl Graph {
    pub fn scratch(&mut self) -> VertexId {
        self.g.add(
            Vertex {
                op: Op::Source(Source::Scratch),
                meta: VertexMeta {
                    name: "scratch".into(),
                    ..Default::default()
                },
            },
            &[],
        )
    }

    /// `RUN <script>` in `stage` on `input`; `script` as the fake executor reads it.
    pub fn run(&mut self, stage: &str, step: u32, script: &str, input: VertexId) -> VertexId {
        let args: Vec<String> = script.split(' ').map(str::to_string).collect();
        let instruction = format!("RUN {script}");
        self.g.add(
            Vertex {
                op: Op::Exec(ExecOp {
                    args,
                    env: vec![],
                    cwd: "/".into(),
                    user: String::new(),
                    network: Default::default(),
                    security: Default::default(),
                    mounts: vec![],
                    unkeyed_env: vec![],
                    platform: None,
                }),
                meta: VertexMeta {
                    name: format!("[{stage} {step}/9] {instruction}"),
                    span: Some(Span {
                        start_line: step,
                        start_col: 1,
                        end_line: step,
                        end_col: 1,
                    }),
                    stage_name: Some(stage.into()),
                    instruction,
                    ..Default::default()
                },
            },
            &[input],
        )
    }

    /// `COPY --link --from=<diff's stage>` onto `base`: `base`'s filesystem plus `diff`'s layer.
    pub fn merge(&mut self, base: VertexId, diff: VertexId) -> VertexId {
        self.g.add(
            Vertex {
                op: Op::Merge(MergeOp {}),
                meta: VertexMeta {
                    name: "merge".into(),
                    ..Default::default()
                },
            },
            &[base, diff],
        )
    }

    /// `--no-cache-filter` for `v`: never reuse a record for it.
    pub fn no_cache(&mut self, v: VertexId) -> &mut Self {
        self.g.graph[v].meta.ignore_cache = true;
        self
    }

    /// Name `v` in the target's history (in order): each layer of the image must be named.
    pub fn layer(&mut self, v: VertexId) -> &mut Self {
        self.history.push(HistoryStep {
            created_by: self.g.vertex(v).meta.instruction.clone(),
            comment: None,
            vertex: Some(v),
        });
        self
    }

    pub fn build(self, root: VertexId) -> BuildDefinition {
        BuildDefinition {
            graph: self.g,
            target: ImageTarget {
                root,
                config: ImageConfig::default(),
                history: self.history,
            },
            source: None,
        }
    }
}

/// A store, fake snapshots and a fake executor under one temporary directory; solvers on them
/// share their state, as builds on one store do.
pub struct Harness {
    _dir: tempfile::TempDir,
    pub store: Arc<Store>,
    pub snaps: Arc<FakeSnapshots>,
    pub exec: Arc<FakeExecutor>,
}

impl Harness {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("store")).unwrap());
        let snaps = Arc::new(FakeSnapshots::new(&dir.path().join("snapshots")));
        Harness {
            _dir: dir,
            store,
            snaps,
            exec: Arc::new(FakeExecutor::new()),
        }
    }

    /// A solver on this harness's parts, and the receiving end of its events.
    pub fn solver(&self, opts: SolveOptions) -> (Arc<Solver>, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel();
        let (etx, erx) = mpsc::channel();
        // Strip the timestamps.
        std::thread::spawn(move || {
            for (_, e) in rx {
                if etx.send(e).is_err() {
                    break;
                }
            }
        });
        let parts = Parts {
            store: self.store.clone(),
            snapshots: self.snaps.clone(),
            executor: self.exec.clone(),
            images: Arc::new(rbuild_solver::LocalImages(self.store.clone())),
        };
        (
            Arc::new(Solver::with_parts(parts, EventSink::new(tx), opts)),
            erx,
        )
    }
}

/// Every event sent so far (the solver is done or dropped).
pub fn drain(rx: &mpsc::Receiver<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(e) = rx.recv_timeout(Duration::from_millis(200)) {
        out.push(e);
    }
    out
}
