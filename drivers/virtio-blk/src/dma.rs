//! What the driver needs from the DMA server, as a trait: the task uses
//! [`moat_dma_api::DmaClient`], host tests a fake window (`crate::fake::FakeDma`).

use moat_dma_api::{ClientError, Coherent, DirectionMarker, DmaClient, DmaError, Grant};
use moat_userlib::Syscalls;

/// Why the DMA server did not give the driver memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaFailure {
    /// The window is full for now (grants in use): try again after completions.
    Exhausted,
    /// Anything else (IPC failure, refusal, malformed reply).
    Failed,
}

impl From<ClientError> for DmaFailure {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Dma(DmaError::PoolExhausted)
            | ClientError::Dma(DmaError::QuotaExceeded) => DmaFailure::Exhausted,
            _ => DmaFailure::Failed,
        }
    }
}

/// Device-visible memory for the driver: coherent ring memory and streaming grants (always
/// used through `moat_dma_api::Bounce`).
pub trait DmaPort {
    /// The largest single grant, in bytes.
    fn max_mapping_size(&self) -> usize;
    /// Tells the server the device has been reset (status read back 0), so the grants a
    /// previous instance left in quarantine may be reused.
    fn reset_complete(&self) -> Result<(), DmaFailure>;
    /// A coherent allocation of `size` bytes, device address aligned to `align`.
    fn alloc_coherent(&self, size: usize, align: usize) -> Result<Coherent, DmaFailure>;
    /// A streaming grant of `len` bytes for direction `D`.
    fn map<D: DirectionMarker>(&self, len: usize) -> Result<Grant<D>, DmaFailure>;
    /// Returns a streaming grant.
    fn unmap<D: DirectionMarker>(&self, grant: Grant<D>);
}

impl<S: Syscalls> DmaPort for DmaClient<S> {
    fn max_mapping_size(&self) -> usize {
        self.window()
            .and_then(|(_, info)| usize::try_from(info.max_mapping_size).ok())
            .unwrap_or(0)
    }

    fn reset_complete(&self) -> Result<(), DmaFailure> {
        DmaClient::reset_complete(self)
            .map(drop)
            .map_err(DmaFailure::from)
    }

    fn alloc_coherent(&self, size: usize, align: usize) -> Result<Coherent, DmaFailure> {
        DmaClient::alloc_coherent(self, size, align as u64).map_err(DmaFailure::from)
    }

    fn map<D: DirectionMarker>(&self, len: usize) -> Result<Grant<D>, DmaFailure> {
        DmaClient::map::<D>(self, len, 0, 0).map_err(DmaFailure::from)
    }

    fn unmap<D: DirectionMarker>(&self, grant: Grant<D>) {
        // A failed unmap leaves the slots allocated until the driver dies: nothing to do.
        let _ = DmaClient::unmap(self, grant);
    }
}
