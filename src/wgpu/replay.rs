//! `Backend::replay` on wgpu: the dispatches of a repeated step, kept and re-encoded.
//!
//! wgpu has no reusable compute command buffers, but what makes recording an op slow on
//! the host is not the encoding itself: every op creates a uniform buffer and a bind
//! group and opens a compute pass (measured on the 2-core development machine: about
//! 50 µs per op, 12 ms for the 244 dispatches of a 24-layer decode step — a host-side
//! ceiling of ~80 tokens/s whatever the GPU). So the first call with a key runs the
//! closure as usual and also keeps each dispatch's pipeline, bind group and grid; later
//! calls with that key skip the closure and encode the kept dispatches into a single
//! compute pass (set pipeline, set bind group, dispatch: no allocation at all).
//!
//! That is exact because of the key's contract (`ReplayKey`): the same ops on the same
//! buffers with the same parameters, and the uniforms are part of the bind groups. What
//! would not replay — an allocation (a scratch buffer expected to start at zero), a
//! write, a download — marks the capture broken and the key then always runs directly.
//! Bind groups hold their buffers alive, so the cache is bounded (LRU of
//! [`MAX_REPLAYS`]) and [`Backend::forget_replays`](crate::Backend::forget_replays)
//! drops a model's entries when the model is dropped.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use super::{Pipeline, WgpuBackend, lock};
use crate::backend::ReplayKey;
use crate::error::Result;

/// Replays kept per backend (a model × a state × a batch each).
pub const MAX_REPLAYS: usize = 16;

/// One dispatch as it was recorded.
pub(super) struct Dispatch {
    pub pipeline: Arc<Pipeline>,
    pub bind_group: wgpu::BindGroup,
    pub groups: (u32, u32),
}

/// A key's dispatches, or `None` where the closure did something that cannot replay.
type Entry = (ReplayKey, Option<Arc<[Dispatch]>>);

struct Capture {
    thread: ThreadId,
    dispatches: Vec<Dispatch>,
    broken: bool,
}

/// The replay state of one [`WgpuBackend`].
pub(super) struct Replays {
    enabled: bool,
    capture: Mutex<Option<Capture>>,
    cache: Mutex<VecDeque<Entry>>,
}

impl Replays {
    pub(super) fn new(enabled: bool) -> Self {
        Replays {
            enabled,
            capture: Mutex::default(),
            cache: Mutex::default(),
        }
    }

    /// Keeps a dispatch just recorded, if this thread is capturing.
    pub(super) fn keep(&self, make: impl FnOnce() -> Dispatch) {
        let mut cap = lock(&self.capture);
        if let Some(c) = cap.as_mut()
            && c.thread == std::thread::current().id()
            && !c.broken
        {
            c.dispatches.push(make());
        }
    }

    /// Something that cannot be replayed happened: if this thread is capturing, the
    /// capture is given up (the ops still run directly this time and every time).
    pub(super) fn break_capture(&self) {
        let mut cap = lock(&self.capture);
        if let Some(c) = cap.as_mut()
            && c.thread == std::thread::current().id()
        {
            c.broken = true;
        }
    }

    fn capturing_here(&self) -> bool {
        lock(&self.capture)
            .as_ref()
            .is_some_and(|c| c.thread == std::thread::current().id())
    }
}

/// Ends this thread's capture if `record` panics (otherwise `replay_dispatches` takes
/// it), so the backend never stays "capturing".
struct EndCapture<'a>(&'a Replays);

impl Drop for EndCapture<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            lock(&self.0.capture).take();
        }
    }
}

impl WgpuBackend {
    /// `Backend::replay`: see the module docs.
    pub(super) fn replay_dispatches(
        &self,
        key: &ReplayKey,
        record: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        let r = &self.replays;
        if !r.enabled || r.capturing_here() {
            return record(); // off, or nested in a capture: part of the outer one
        }
        let found = {
            let mut cache = lock(&r.cache);
            cache.iter().position(|(k, _)| k == key).map(|i| {
                let entry = cache.remove(i).expect("index from position");
                let dispatches = entry.1.clone();
                cache.push_back(entry);
                dispatches
            })
        };
        match found {
            Some(Some(dispatches)) => return self.encode_all(&dispatches),
            Some(None) => return record(),
            None => {}
        }
        // One capture at a time: a second thread's replay simply runs directly.
        {
            let mut cap = lock(&r.capture);
            if cap.is_some() {
                drop(cap);
                return record();
            }
            *cap = Some(Capture {
                thread: std::thread::current().id(),
                dispatches: Vec::new(),
                broken: false,
            });
        }
        let recorded = {
            let _end = EndCapture(r);
            record()
        };
        let cap = lock(&r.capture).take();
        recorded?;
        let kept = cap.and_then(|c| (!c.broken).then(|| Arc::from(c.dispatches)));
        let mut cache = lock(&r.cache);
        if cache.len() == MAX_REPLAYS {
            cache.pop_front();
        }
        cache.push_back((*key, kept));
        Ok(())
    }

    /// Encodes kept dispatches into one compute pass of the pending encoder.
    fn encode_all(&self, dispatches: &[Dispatch]) -> Result<()> {
        {
            let mut enc = lock(&self.encoder);
            let enc = enc.get_or_insert_with(|| self.new_encoder());
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("replay"),
                timestamp_writes: None,
            });
            for d in dispatches {
                pass.set_pipeline(&d.pipeline.pipeline);
                pass.set_bind_group(0, &d.bind_group, &[]);
                pass.dispatch_workgroups(d.groups.0, d.groups.1, 1);
            }
            self.count_dispatches(dispatches.len() as u64);
        }
        self.check()
    }

    /// `Backend::forget_replays`: drops the entries whose key names `id`.
    pub(super) fn forget(&self, id: u64) {
        lock(&self.replays.cache).retain(|(k, _)| !k.names(id));
    }

    /// Decode steps (keys) whose dispatches are kept for replay right now.
    pub fn cached_replays(&self) -> usize {
        lock(&self.replays.cache)
            .iter()
            .filter(|(_, kept)| kept.is_some())
            .count()
    }
}
