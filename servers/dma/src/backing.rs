//! The window backing: the privileged acts (sharing pages, mapping them into a client, zeroing)
//! behind a trait, so the server logic runs on the host against a fake.

use crate::error::DmaError;
use crate::grant::ClientRef;

/// A batch of pages made shared for one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedRegion {
    /// The backing's handle for the region.
    pub handle: u32,
    /// Device address of the region's first byte.
    pub device_base: u64,
    /// Number of pages.
    pub pages: usize,
}

/// The memory operations the DMA server needs; the real server implements them with the share,
/// map and memory syscalls.
///
/// The server calls them in this order and never per I/O:
/// `share` → `zero` → `map_into_client` (again for each restarted instance) … `unmap_from_client`
/// → `unshare` → `zero` → `release`.
pub trait Backing {
    /// The page size in bytes.
    fn page_size(&self) -> usize;

    /// Takes `pages` frames from the server's memory and makes them shared, in one batch.
    /// Their content is whatever the host left there until the server calls [`zero`](Self::zero).
    fn share(&mut self, pages: usize) -> Result<SharedRegion, DmaError>;

    /// Writes zeros over the whole region through the mapping that matches its current state:
    /// the unprotected alias while shared, the private mapping once private again.
    fn zero(&mut self, region: &SharedRegion) -> Result<(), DmaError>;

    /// Maps the region into one client instance's address space, without the right to transfer
    /// it further, and returns its client-virtual base address.
    fn map_into_client(
        &mut self,
        region: &SharedRegion,
        client: ClientRef,
    ) -> Result<u64, DmaError>;

    /// Removes the region from a client instance's address space (the instance may be dead
    /// already; then this only drops bookkeeping).
    fn unmap_from_client(
        &mut self,
        region: &SharedRegion,
        client: ClientRef,
    ) -> Result<(), DmaError>;

    /// Makes the region private again; its frames stay the server's until
    /// [`release`](Self::release).
    fn unshare(&mut self, region: &SharedRegion) -> Result<(), DmaError>;

    /// Returns the region's frames to the server's free memory.
    fn release(&mut self, region: SharedRegion) -> Result<(), DmaError>;
}
