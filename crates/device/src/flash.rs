//! Flash as the door's storage sees it: blocking [`NorFlash`] (the ESP32-C3's partitions, a file,
//! or memory), and the adapter that lets `sequential-storage`, whose API is async, run on it.
//!
//! Flash on the door is blocking anyway (the CPU stalls while the chip erases or writes), so
//! every future `sequential-storage` returns over [`Blocking`] completes on its first poll;
//! [`block_on`] polls it there, without an executor.
//!
//! With the `std` feature: [`MemFlash`], NOR flash in memory that can lose power after any byte
//! (the fleet simulation and the tests), and [`FileFlash`], NOR flash in a file (the virtual
//! doors, whose data directory is their flash).

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use embedded_storage::nor_flash::{ErrorType, MultiwriteNorFlash, NorFlash, ReadNorFlash};

/// A blocking [`NorFlash`] seen through `embedded-storage-async`'s traits.
pub struct Blocking<F>(pub F);

impl<F: ErrorType> embedded_storage_async::nor_flash::ErrorType for Blocking<F> {
    type Error = F::Error;
}

impl<F: ReadNorFlash> embedded_storage_async::nor_flash::ReadNorFlash for Blocking<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.0.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl<F: NorFlash> embedded_storage_async::nor_flash::NorFlash for Blocking<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.0.erase(from, to)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.write(offset, bytes)
    }
}

impl<F: MultiwriteNorFlash> embedded_storage_async::nor_flash::MultiwriteNorFlash for Blocking<F> {}

/// Why [`block_on`] gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WouldBlock;

/// Runs a future over [`Blocking`] flash to completion. Such a future never waits; one that
/// does after many polls is reported instead of spinning for ever.
pub fn block_on<T>(future: impl Future<Output = T>) -> Result<T, WouldBlock> {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000 {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return Ok(v);
        }
    }
    Err(WouldBlock)
}

#[cfg(any(test, feature = "std"))]
mod host;
#[cfg(any(test, feature = "std"))]
pub use host::{FileFlash, FlashFault, MemFlash};
