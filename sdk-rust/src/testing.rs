//! A native harness for plugin tests: run a [`Trigger`] or a [`Task`] in an ordinary `cargo test`,
//! without a server or a WebAssembly build, against a fake host: a clock the test moves, an
//! in-memory object store with the server's key rules and limits, captured log lines, the
//! operator's configuration, an HTTP handler the test supplies, and a fire desk that answers like
//! the server (a run id, the earlier run of an idempotency key, or a refusal).
//!
//! It owns the host's side of the plugin calls when the SDK is built for anything but wasm32;
//! it must not change what the plugin-facing functions mean, only who answers them.
//!
//! The host is per thread (plugins keep their state in `thread_local!`s, and `cargo test` runs
//! each test on its own thread): a harness made with `new` starts a fresh host for its thread;
//! make one harness per test.
//!
//! ```no_run
//! # #[cfg(any())] mod hidden {
//! use std::time::Duration;
//! use gofer_sdk::testing::TriggerHarness;
//!
//! let mut trigger = TriggerHarness::<Hourly>::new();
//! trigger.subscribe("s1", &[("minute", "5")]).unwrap();
//! let fired = trigger.advance(Duration::from_secs(3600));
//! assert_eq!(fired.len(), 1);
//! # }
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Mutex;
use std::time::Duration;

use crate::plugin::{
    ExternalEvent, ExternalResponse, Fire, FireOutcome, Info, Kind, LogLevel, Pairs, Task, Trigger,
    http,
};

/// Where the harness's clock starts: 2026-01-01T00:00:00Z.
pub const DEFAULT_START_MILLIS: u64 = 1_767_225_600_000;

/// What an HTTP handler answers for a request.
pub type HttpHandler = Box<dyn FnMut(&http::Request) -> Result<http::Response, http::Error>>;

/// A fire the plugin sent (from `wake`, an outside event or `fire_now`) and the harness's answer.
#[derive(Debug, Clone)]
pub struct Fired {
    pub fire: Fire,
    pub outcome: FireOutcome,
    /// The harness's clock when it was sent.
    pub at_millis: u64,
}

impl Fired {
    /// The run variables as a map, for easy assertions.
    pub fn variables(&self) -> BTreeMap<String, String> {
        self.fire.variables.iter().cloned().collect()
    }

    /// Whether a run was started by this fire (not a duplicate, not refused).
    pub fn started(&self) -> bool {
        matches!(self.outcome, FireOutcome::Started(_))
    }
}

/// The host a plugin sees under test: one per thread.
pub(crate) struct World {
    now_millis: u64,
    config: Pairs,
    logs: Vec<(LogLevel, String)>,
    objects: BTreeMap<String, (u64, Vec<u8>)>,
    object_order: u64,
    object_limit: usize,
    object_max_bytes: usize,
    http: Option<HttpHandler>,
    subscriptions: BTreeSet<String>,
    refusals: BTreeMap<String, String>,
    idempotency: BTreeMap<String, u64>,
    next_run: u64,
    fired: Vec<Fired>,
}

impl World {
    fn new(now_millis: u64) -> Self {
        Self {
            now_millis,
            config: Vec::new(),
            logs: Vec::new(),
            objects: BTreeMap::new(),
            object_order: 0,
            object_limit: 1000,
            object_max_bytes: 1024 * 1024,
            http: None,
            subscriptions: BTreeSet::new(),
            refusals: BTreeMap::new(),
            idempotency: BTreeMap::new(),
            next_run: 1,
            fired: Vec::new(),
        }
    }
}

thread_local! {
    static WORLD: RefCell<World> = RefCell::new(World::new(DEFAULT_START_MILLIS));
}

fn with_world<R>(f: impl FnOnce(&mut World) -> R) -> R {
    WORLD.with(|world| f(&mut world.borrow_mut()))
}

/// The host's answers to the plugin-facing functions of [`crate::plugin`], natively.
pub(crate) mod world {
    use super::{Fired, with_world};
    use crate::plugin::{Fire, FireOutcome, LogLevel, Pairs, http};

    /// The server's rule for object keys.
    fn key_problem(key: &str) -> Option<String> {
        (key.is_empty() || key.len() > 256 || key.chars().any(char::is_control))
            .then(|| format!("invalid object key {key:?}: use 1 to 256 printable characters"))
    }

    pub fn object_get(key: &str) -> Result<Option<Vec<u8>>, String> {
        if let Some(problem) = key_problem(key) {
            return Err(problem);
        }
        Ok(with_world(|world| {
            world.objects.get(key).map(|(_, value)| value.clone())
        }))
    }

    pub fn object_put(key: &str, value: &[u8]) -> Result<(), String> {
        if let Some(problem) = key_problem(key) {
            return Err(problem);
        }
        with_world(|world| {
            if value.len() > world.object_max_bytes {
                return Err(format!(
                    "the object is larger than the limit of {} KiB",
                    world.object_max_bytes / 1024
                ));
            }
            if !world.objects.contains_key(key) && world.objects.len() >= world.object_limit {
                return Err(format!(
                    "the plugin already keeps {} objects, its limit; delete some first",
                    world.object_limit
                ));
            }
            world.object_order += 1;
            let order = world
                .objects
                .get(key)
                .map_or(world.object_order, |(order, _)| *order);
            world
                .objects
                .insert(key.to_string(), (order, value.to_vec()));
            Ok(())
        })
    }

    pub fn object_delete(key: &str) -> Result<(), String> {
        if let Some(problem) = key_problem(key) {
            return Err(problem);
        }
        with_world(|world| world.objects.remove(key));
        Ok(())
    }

    pub fn object_keys() -> Result<Vec<String>, String> {
        Ok(with_world(|world| {
            let mut keys: Vec<_> = world
                .objects
                .iter()
                .map(|(key, (order, _))| (*order, key.clone()))
                .collect();
            keys.sort();
            keys.into_iter().map(|(_, key)| key).collect()
        }))
    }

    pub fn log(level: LogLevel, message: &str) {
        with_world(|world| world.logs.push((level, message.to_string())));
    }

    pub fn now_millis() -> u64 {
        with_world(|world| world.now_millis)
    }

    pub fn config() -> Pairs {
        with_world(|world| world.config.clone())
    }

    pub fn fire(fire: Fire) -> FireOutcome {
        with_world(|world| {
            let outcome = if let Some(reason) = world.refusals.get(&fire.subscription) {
                FireOutcome::Refused(reason.clone())
            } else if !world.subscriptions.contains(&fire.subscription) {
                FireOutcome::Refused(format!(
                    "subscription '{}' is not subscribed",
                    fire.subscription
                ))
            } else if let Some(run) = fire
                .idempotency_key
                .as_ref()
                .and_then(|key| world.idempotency.get(key))
            {
                FireOutcome::Duplicate(*run)
            } else {
                let run = world.next_run;
                world.next_run += 1;
                if let Some(key) = &fire.idempotency_key {
                    world.idempotency.insert(key.clone(), run);
                }
                FireOutcome::Started(run)
            };
            world.fired.push(Fired {
                fire,
                outcome: outcome.clone(),
                at_millis: world.now_millis,
            });
            outcome
        })
    }

    pub fn http(request: &http::Request) -> Result<http::Response, http::Error> {
        // The handler is taken out while it runs, so that it may itself use the harness's host.
        let handler = with_world(|world| world.http.take());
        let Some(mut handler) = handler else {
            return Err(http::Error::Failed(format!(
                "'{}' is not a granted host (no HTTP handler in this test: \
                 set one with the harness's on_http)",
                request.url
            )));
        };
        let answer = handler(request);
        with_world(|world| {
            if world.http.is_none() {
                world.http = Some(handler);
            }
        });
        answer
    }
}

/// What the harness's host holds, shared by both harnesses.
#[derive(Debug)]
pub struct Host(());

impl Host {
    /// The harness's clock, in epoch milliseconds.
    pub fn now_millis(&self) -> u64 {
        world::now_millis()
    }

    /// The log lines the plugin wrote with [`crate::plugin::log`], oldest first.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        with_world(|world| world.logs.clone())
    }

    /// Whether a log line contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        with_world(|world| world.logs.iter().any(|(_, line)| line.contains(text)))
    }

    /// The plugin's objects.
    pub fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        with_world(|world| {
            world
                .objects
                .iter()
                .map(|(key, (_, value))| (key.clone(), value.clone()))
                .collect()
        })
    }

    /// Stores an object as if the plugin had (e.g. what a previous instance left).
    pub fn put_object(&self, key: &str, value: &[u8]) -> Result<(), String> {
        world::object_put(key, value)
    }

    /// Every fire so far, with its outcome, oldest first.
    pub fn fired(&self) -> Vec<Fired> {
        with_world(|world| world.fired.clone())
    }

    fn configure(&self, f: impl FnOnce(&mut World)) {
        with_world(f);
    }
}

fn pairs(settings: &[(&str, &str)]) -> Pairs {
    settings
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// Serialises what tasks read from the process environment: `cargo test` runs tests on several
/// threads of one process.
static ENVIRONMENT: Mutex<()> = Mutex::new(());

/// Runs a [`Trigger`] as the server would: subscribe, wake at the times it asks for as the clock
/// moves, outside events; its fires are answered and kept.
pub struct TriggerHarness<T: Trigger> {
    host: Host,
    next_wake: Option<u64>,
    info: Info,
    plugin: PhantomData<T>,
}

impl<T: Trigger> fmt::Debug for TriggerHarness<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TriggerHarness")
            .field("plugin", &self.info.name)
            .field("now_millis", &self.host.now_millis())
            .field("next_wake", &self.next_wake)
            .finish()
    }
}

impl<T: Trigger> TriggerHarness<T> {
    /// A fresh host for this thread, its clock at [`DEFAULT_START_MILLIS`]. Panics if the plugin
    /// does not describe itself as a trigger, as the server would refuse it.
    pub fn new() -> Self {
        Self::starting_at(DEFAULT_START_MILLIS)
    }

    /// A fresh host for this thread, its clock at `now_millis`.
    pub fn starting_at(now_millis: u64) -> Self {
        WORLD.with(|world| *world.borrow_mut() = World::new(now_millis));
        let info = T::info();
        assert_eq!(
            info.kind,
            Kind::Trigger,
            "plugin '{}' describes itself as a task, not a trigger",
            info.name
        );
        Self {
            host: Host(()),
            next_wake: None,
            info,
            plugin: PhantomData,
        }
    }

    /// What the plugin's `info` said.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// The operator's configuration of the plugin (`[plugins.config.<name>]`).
    pub fn config(self, config: &[(&str, &str)]) -> Self {
        let config = pairs(config);
        self.host.configure(|world| world.config = config);
        self
    }

    /// Answers the plugin's outgoing HTTP requests (without one, every request is refused as to
    /// a host not granted).
    pub fn on_http(
        self,
        handler: impl FnMut(&http::Request) -> Result<http::Response, http::Error> + 'static,
    ) -> Self {
        self.host
            .configure(|world| world.http = Some(Box::new(handler)));
        self
    }

    /// At most this many objects of at most `max_bytes` each (the server's defaults: 1000 and
    /// 1 MiB).
    pub fn object_limits(self, limit: usize, max_bytes: usize) -> Self {
        self.host.configure(|world| {
            world.object_limit = limit;
            world.object_max_bytes = max_bytes;
        });
        self
    }

    /// The fake host: clock, logs, objects, fires.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// When the plugin asked to be woken next.
    pub fn next_wake(&self) -> Option<u64> {
        self.next_wake
    }

    /// Subscribes `subscription` with the user's `settings`; the plugin's error as is.
    pub fn subscribe(
        &mut self,
        subscription: &str,
        settings: &[(&str, &str)],
    ) -> Result<(), String> {
        let next = T::subscribe(
            subscription.to_string(),
            pairs(settings),
            self.host.now_millis(),
        )?;
        self.host.configure(|world| {
            world.subscriptions.insert(subscription.to_string());
        });
        if let Some(next) = next {
            self.next_wake = Some(self.next_wake.map_or(next, |current| current.min(next)));
        }
        Ok(())
    }

    /// Unsubscribes `subscription`; its later fires are refused.
    pub fn unsubscribe(&mut self, subscription: &str) {
        T::unsubscribe(subscription.to_string());
        self.host.configure(|world| {
            world.subscriptions.remove(subscription);
        });
    }

    /// Makes the server refuse the subscription's fires with `reason` (as for a disabled
    /// subscription or a paused pipeline).
    pub fn refuse_fires(&mut self, subscription: &str, reason: &str) {
        let (subscription, reason) = (subscription.to_string(), reason.to_string());
        self.host.configure(|world| {
            world.refusals.insert(subscription, reason);
        });
    }

    /// Moves the clock forward by `by`, waking the plugin at each time it asked for on the way
    /// (and at the end if it asked for a time already past). Returns what was fired meanwhile.
    pub fn advance(&mut self, by: Duration) -> Vec<Fired> {
        let already = self.host.fired().len();
        let until = self.host.now_millis() + by.as_millis() as u64;
        while let Some(at) = self.next_wake.filter(|at| *at <= until) {
            let at = at.max(self.host.now_millis());
            self.host.configure(|world| world.now_millis = at);
            self.wake_now();
        }
        self.host.configure(|world| world.now_millis = until);
        self.host.fired().split_off(already)
    }

    /// Moves the clock forward by `by` without waking the plugin, as when the server was down;
    /// follow with [`Self::wake_now`] for the late wake.
    pub fn advance_without_waking(&mut self, by: Duration) {
        let until = self.host.now_millis() + by.as_millis() as u64;
        self.host.configure(|world| world.now_millis = until);
    }

    /// Wakes the plugin now, whatever it asked for; returns what it fired.
    pub fn wake_now(&mut self) -> Vec<Fired> {
        let already = self.host.fired().len();
        let result = T::wake(self.host.now_millis());
        self.next_wake = result.next_wake;
        for fire in result.fires {
            world::fire(fire);
        }
        self.host.fired().split_off(already)
    }

    /// Sends an outside event; its fires are delivered and its response returned.
    pub fn external_event(&mut self, event: ExternalEvent) -> ExternalResponse {
        let response = T::external_event(event);
        for fire in response.fires.clone() {
            world::fire(fire);
        }
        response
    }
}

impl<T: Trigger> Default for TriggerHarness<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// An [`ExternalEvent`] to send through [`TriggerHarness::external_event`]: a `POST` of `body`
/// to the plugin's endpoint with no headers; change the fields as needed.
pub fn external_event(body: &[u8]) -> ExternalEvent {
    ExternalEvent {
        method: "POST".into(),
        path: String::new(),
        query: String::new(),
        remote_address: "127.0.0.1:40000".into(),
        headers: Vec::new(),
        body: body.to_vec(),
    }
}

/// What a task's run came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    /// The exit code, or the error the task failed with.
    pub result: Result<u8, String>,
}

/// Runs a [`Task`] as the server would: its variables as the process environment (set for the
/// call, then restored; calls are serialised across the test process).
pub struct TaskHarness<T: Task> {
    host: Host,
    info: Info,
    plugin: PhantomData<T>,
}

impl<T: Task> fmt::Debug for TaskHarness<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHarness")
            .field("plugin", &self.info.name)
            .finish()
    }
}

impl<T: Task> TaskHarness<T> {
    /// A fresh host for this thread. Panics if the plugin does not describe itself as a task.
    pub fn new() -> Self {
        WORLD.with(|world| *world.borrow_mut() = World::new(DEFAULT_START_MILLIS));
        let info = T::info();
        assert_eq!(
            info.kind,
            Kind::Task,
            "plugin '{}' describes itself as a trigger, not a task",
            info.name
        );
        Self {
            host: Host(()),
            info,
            plugin: PhantomData,
        }
    }

    /// What the plugin's `info` said.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// The operator's configuration of the plugin (`[plugins.config.<name>]`).
    pub fn config(self, config: &[(&str, &str)]) -> Self {
        let config = pairs(config);
        self.host.configure(|world| world.config = config);
        self
    }

    /// Answers the plugin's outgoing HTTP requests.
    pub fn on_http(
        self,
        handler: impl FnMut(&http::Request) -> Result<http::Response, http::Error> + 'static,
    ) -> Self {
        self.host
            .configure(|world| world.http = Some(Box::new(handler)));
        self
    }

    /// The fake host: clock, logs, objects.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Runs the task with `settings`, its variables `variables` in the environment.
    pub fn run(&mut self, settings: &[(&str, &str)], variables: &[(&str, &str)]) -> TaskOutcome {
        let _serialised = ENVIRONMENT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let saved: Vec<_> = variables
            .iter()
            .map(|(key, _)| (key.to_string(), std::env::var_os(key)))
            .collect();
        for (key, value) in variables {
            set_environment(key, Some(value.as_ref()));
        }
        let result = T::run(pairs(settings));
        for (key, value) in saved {
            set_environment(&key, value.as_deref());
        }
        TaskOutcome { result }
    }
}

impl<T: Task> Default for TaskHarness<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Sets or removes one environment variable.
#[allow(unsafe_code)]
fn set_environment(key: &str, value: Option<&std::ffi::OsStr>) {
    // SAFETY: only under the ENVIRONMENT lock, which every harness run holds; a test that reads
    // or writes the environment on another thread meanwhile is outside what the harness offers.
    unsafe {
        match value {
            Some(value) => std::env::set_var(key, value),
            None => std::env::remove_var(key),
        }
    }
}
