//! Where the driver's device-visible memory comes from: [`DmaMemory`], implemented for the DMA
//! server's client (and, in tests, for a fake window).

use moat_dma_api::{ClientError, DmaClient, FromDevice, Grant, ToDevice};
use moat_userlib::Syscalls;
use moat_virtio::CoherentAllocator;

/// Coherent ring memory plus streaming grants in both directions.
pub trait DmaMemory: CoherentAllocator {
    /// A grant of exactly `len` bytes the device will read.
    fn map_to_device(&self, len: usize) -> Result<Grant<ToDevice>, Self::Error>;
    /// A grant of exactly `len` bytes the device will write.
    fn map_from_device(&self, len: usize) -> Result<Grant<FromDevice>, Self::Error>;
}

impl<S: Syscalls> DmaMemory for DmaClient<S> {
    fn map_to_device(&self, len: usize) -> Result<Grant<ToDevice>, ClientError> {
        self.map::<ToDevice>(len, 0, 0)
    }

    fn map_from_device(&self, len: usize) -> Result<Grant<FromDevice>, ClientError> {
        self.map::<FromDevice>(len, 0, 0)
    }
}
