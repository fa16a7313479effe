//! Read-backs that await instead of blocking: what the browser needs.
//!
//! On WebGPU the callback of `map_async` runs only once JavaScript's event loop gets
//! control back, so a thread that blocks waiting for it (as `Backend::download` does
//! natively with `Device::poll`) waits forever. [`WgpuBackend::download_async`] returns
//! a future instead: the callback completes a one-shot slot and wakes whoever awaits it
//! (on wasm32, `wasm-bindgen-futures` turns that into a promise continuation).
//!
//! Natively the same future is used, after a blocking `poll` that runs the callback, so
//! the async path is exercised by the native tests too (`tests/model_async.rs`). Both
//! `download` and `download_async` share the staging copy ([`WgpuBackend::stage_download`])
//! and the read of the mapped bytes ([`WgpuBackend::read_staged`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::{WgpuBackend, WgpuBuffer, device_err, lock};
use crate::error::Result;
use crate::tensor::HostVec;

/// The result of one `map_async` callback, and who to wake when it arrives.
struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

/// A one-shot future completed by a callback (the map callback of a staging buffer).
struct OneShot<T>(Arc<Mutex<Slot<T>>>);

impl<T> OneShot<T> {
    fn new() -> Self {
        OneShot(Arc::new(Mutex::new(Slot {
            value: None,
            waker: None,
        })))
    }

    /// The completing side, moved into the callback.
    fn sender(&self) -> impl FnOnce(T) + Send + 'static
    where
        T: Send + 'static,
    {
        let slot = Arc::clone(&self.0);
        move |v| {
            let waker = {
                let mut s = lock(&slot);
                s.value = Some(v);
                s.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

impl<T> Future for OneShot<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut s = lock(&self.0);
        match s.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl WgpuBackend {
    /// Submits the pending work and a copy of `buf` into a new mappable staging buffer.
    pub(super) fn stage_download(&self, buf: &WgpuBuffer) -> Result<wgpu::Buffer> {
        self.replays.break_capture();
        let size = buf.buf.size();
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("download"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("download"),
            });
        enc.copy_buffer_to_buffer(&buf.buf, 0, &staging, 0, size);
        self.submit(Some(enc))?;
        Ok(staging)
    }

    /// The logical bytes of `buf` from its mapped staging copy, then unmaps it.
    pub(super) fn read_staged(&self, staging: &wgpu::Buffer, buf: &WgpuBuffer) -> Result<HostVec> {
        let data = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| device_err(format!("get_mapped_range: {e}")))?;
            HostVec::from_bytes(buf.dtype, &view[..buf.bytes() as usize])
        };
        staging.unmap();
        self.check()?;
        Ok(data)
    }

    /// [`Backend::download`](crate::Backend::download) without blocking: waits for all
    /// queued work and copies `buf` back, as a future. The read-back to use in the
    /// browser (where `download` is an error); natively it gives the same bytes.
    pub async fn download_async(&self, buf: &WgpuBuffer) -> Result<HostVec> {
        let staging = self.stage_download(buf)?;
        let mapped = OneShot::new();
        let done = mapped.sender();
        staging.map_async(wgpu::MapMode::Read, .., done);
        // Natively the callback runs inside poll; in the browser poll does nothing and
        // the event loop runs it once this task yields at the await below.
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| device_err(format!("poll: {e}")))?;
        mapped
            .await
            .map_err(|e| device_err(format!("map_async: {e}")))?;
        self.read_staged(&staging, buf)
    }
}
