//! A fake [`Backing`] for tests: models each page's state and records every operation that
//! touches a page whose state changed and which has not been zeroed since.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::backing::{Backing, SharedRegion};
use crate::error::DmaError;
use crate::grant::ClientRef;

/// The fake's page size.
pub const FAKE_PAGE_SIZE: usize = 4096;

/// Device (physical) address of the fake's first frame.
pub const FAKE_MEMORY_BASE: u64 = 0x4800_0000;

/// Client-virtual address of the first window mapping.
pub const FAKE_CLIENT_BASE: u64 = 0x10_0000_0000;

/// The state of one fake page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageState {
    /// Private and not held by the server's DMA pool.
    Free,
    /// Shared with the host.
    Shared,
    /// Private again, still held by the server.
    Private,
}

/// One fake page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FakePage {
    /// Current state.
    pub state: PageState,
    /// Whether the page was zeroed after its last state change.
    pub zeroed_since_change: bool,
    /// The client instance the page is mapped into, if any.
    pub mapped_into: Option<ClientRef>,
}

/// The fake backing.
#[derive(Clone, Debug)]
pub struct FakeBacking {
    /// Every page the server may use.
    pub pages: Vec<FakePage>,
    /// Broken rules, in words; tests assert this stays empty.
    pub violations: Vec<String>,
    /// Calls to `share` that succeeded.
    pub share_calls: usize,
    /// Calls to `map_into_client` that succeeded.
    pub client_maps: usize,
    /// When set, the next `share` fails with [`DmaError::Backing`].
    pub fail_next_share: bool,
    regions: Vec<Option<(SharedRegion, usize)>>,
    next_client_address: u64,
}

impl FakeBacking {
    /// A fake with `pages` free frames.
    pub fn new(pages: usize) -> Self {
        FakeBacking {
            pages: alloc::vec![
                FakePage {
                    state: PageState::Free,
                    zeroed_since_change: true,
                    mapped_into: None,
                };
                pages
            ],
            violations: Vec::new(),
            share_calls: 0,
            client_maps: 0,
            fail_next_share: false,
            regions: Vec::new(),
            next_client_address: FAKE_CLIENT_BASE,
        }
    }

    /// Pages currently in `state`.
    pub fn count(&self, state: PageState) -> usize {
        self.pages.iter().filter(|page| page.state == state).count()
    }

    /// Whether every page that is not free was zeroed after its last state change.
    pub fn all_zeroed_since_change(&self) -> bool {
        self.pages
            .iter()
            .all(|page| page.state == PageState::Free || page.zeroed_since_change)
    }

    fn region_pages(&mut self, region: &SharedRegion) -> Result<core::ops::Range<usize>, DmaError> {
        match self.regions.get(region.handle as usize) {
            Some(Some((known, first))) if known == region => Ok(*first..*first + region.pages),
            _ => {
                self.violations.push(format!("unknown region {:?}", region));
                Err(DmaError::Backing)
            }
        }
    }

    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }
}

impl Backing for FakeBacking {
    fn page_size(&self) -> usize {
        FAKE_PAGE_SIZE
    }

    fn share(&mut self, pages: usize) -> Result<SharedRegion, DmaError> {
        if core::mem::take(&mut self.fail_next_share) || pages == 0 {
            return Err(DmaError::Backing);
        }
        // First fit over free frames.
        let mut run = 0;
        let mut first = None;
        for (index, page) in self.pages.iter().enumerate() {
            if page.state == PageState::Free {
                run += 1;
                if run == pages {
                    first = Some(index + 1 - pages);
                    break;
                }
            } else {
                run = 0;
            }
        }
        let first = first.ok_or(DmaError::OutOfMemory)?;
        for page in &mut self.pages[first..first + pages] {
            // The host's content: not zero until the server zeroes it.
            page.state = PageState::Shared;
            page.zeroed_since_change = false;
        }
        let region = SharedRegion {
            handle: self.regions.len() as u32,
            device_base: FAKE_MEMORY_BASE + (first * FAKE_PAGE_SIZE) as u64,
            pages,
        };
        self.regions.push(Some((region, first)));
        self.share_calls += 1;
        Ok(region)
    }

    fn zero(&mut self, region: &SharedRegion) -> Result<(), DmaError> {
        let range = self.region_pages(region)?;
        for index in range {
            if self.pages[index].state == PageState::Free {
                self.violation(format!("zero of free page {index}"));
            }
            self.pages[index].zeroed_since_change = true;
        }
        Ok(())
    }

    fn map_into_client(
        &mut self,
        region: &SharedRegion,
        client: ClientRef,
    ) -> Result<u64, DmaError> {
        let range = self.region_pages(region)?;
        for index in range {
            let page = self.pages[index];
            if page.state != PageState::Shared || !page.zeroed_since_change {
                self.violation(format!("map of page {index} in {page:?}"));
            }
            if page.mapped_into.is_some() {
                self.violation(format!("page {index} mapped twice: {page:?}"));
            }
            self.pages[index].mapped_into = Some(client);
        }
        let address = self.next_client_address;
        self.next_client_address += (region.pages * FAKE_PAGE_SIZE) as u64 + 0x10_0000;
        self.client_maps += 1;
        Ok(address)
    }

    fn unmap_from_client(
        &mut self,
        region: &SharedRegion,
        client: ClientRef,
    ) -> Result<(), DmaError> {
        let range = self.region_pages(region)?;
        for index in range {
            if self.pages[index].mapped_into != Some(client) {
                self.violation(format!("unmap of page {index} not mapped by {client:?}"));
            }
            self.pages[index].mapped_into = None;
        }
        Ok(())
    }

    fn unshare(&mut self, region: &SharedRegion) -> Result<(), DmaError> {
        let range = self.region_pages(region)?;
        for index in range {
            let page = self.pages[index];
            if page.state != PageState::Shared || page.mapped_into.is_some() {
                self.violation(format!("unshare of page {index} in {page:?}"));
            }
            self.pages[index].state = PageState::Private;
            self.pages[index].zeroed_since_change = false;
        }
        Ok(())
    }

    fn release(&mut self, region: SharedRegion) -> Result<(), DmaError> {
        let range = self.region_pages(&region)?;
        for index in range {
            let page = self.pages[index];
            if page.state != PageState::Private || !page.zeroed_since_change {
                self.violation(format!("release of page {index} in {page:?}"));
            }
            self.pages[index].state = PageState::Free;
        }
        self.regions[region.handle as usize] = None;
        Ok(())
    }
}
