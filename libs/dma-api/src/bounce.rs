//! Grants and the [`Bounce`] type: the Linux DMA API copy rules, enforced by the types.
//!
//! A streaming [`Grant`] is typed by its direction. The only way to let a device at it is
//! [`Bounce`], which consumes the grant and returns an [`InFlight`] only after the copy in that
//! direction needs; the only way to get the grant back is [`InFlight::complete`], which performs
//! the copy out that direction needs:
//!
//! | direction          | before the device sees it                         | after completion |
//! |--------------------|---------------------------------------------------|------------------|
//! | [`ToDevice`]       | data copied in, rest of the grant zeroed          | —                |
//! | [`FromDevice`]     | whole grant zeroed, or filled from the caller's buffer | copied out  |
//! | [`Bidirectional`]  | data copied in, rest of the grant zeroed          | copied out       |
//!
//! Initialising a from-device buffer matters: a device that writes fewer bytes than it was
//! given must not make stale window bytes (an earlier transfer's data, or whatever the host put
//! there) look like its output. After a short write the caller sees zeros, or its own original
//! bytes with [`Bounce::from_device_over`] (what Linux's SWIOTLB does since CVE-2022-0854).
//!
//! The device's bytes are copied out of shared memory once, into the caller's private buffer,
//! and only then may be looked at (copy, then validate). Nothing here forms a reference into
//! the window; the copies are in [`crate::shared`].

use core::fmt;
use core::marker::PhantomData;

use crate::protocol::GrantReply;
use crate::shared::{Span, Window};
use crate::types::{Direction, GrantId};

mod sealed {
    pub trait Sealed {}
}

/// A direction as a type, so each [`Grant`] and [`InFlight`] offers only its direction's
/// operations.
pub trait DirectionMarker: sealed::Sealed {
    /// The direction on the wire.
    const DIRECTION: Direction;
}

/// The device reads the buffer ([`Direction::ToDevice`]).
#[derive(Debug)]
pub enum ToDevice {}
/// The device writes the buffer ([`Direction::FromDevice`]).
#[derive(Debug)]
pub enum FromDevice {}
/// The device reads and writes the buffer ([`Direction::Bidirectional`]).
#[derive(Debug)]
pub enum Bidirectional {}

impl sealed::Sealed for ToDevice {}
impl sealed::Sealed for FromDevice {}
impl sealed::Sealed for Bidirectional {}
impl DirectionMarker for ToDevice {
    const DIRECTION: Direction = Direction::ToDevice;
}
impl DirectionMarker for FromDevice {
    const DIRECTION: Direction = Direction::FromDevice;
}
impl DirectionMarker for Bidirectional {
    const DIRECTION: Direction = Direction::Bidirectional;
}

/// A streaming bounce buffer in the client's window, for transfers in direction `D`.
///
/// Not `Clone`: a grant is handed from [`Bounce`] to [`InFlight`] and back by value. Give it back
/// to the server with `DmaClient::unmap`; a grant that is dropped stays allocated until the
/// client dies.
#[must_use = "a grant holds window slots until it is unmapped"]
pub struct Grant<D: DirectionMarker> {
    id: GrantId,
    window_offset: u64,
    device_address: u64,
    span: Span,
    _direction: PhantomData<D>,
}

impl<D: DirectionMarker> fmt::Debug for Grant<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("id", &self.id)
            .field("direction", &D::DIRECTION)
            .field(
                "device_address",
                &format_args!("{:#x}", self.device_address),
            )
            .field("len", &self.span.len())
            .finish()
    }
}

impl<D: DirectionMarker> Grant<D> {
    /// The grant in `window` that `reply` describes, or `None` if the reply does not describe a
    /// range of the window (offset or length out of range, device address inconsistent).
    pub(crate) fn from_reply(window: &Window, reply: &GrantReply) -> Option<Grant<D>> {
        let span = span_for(window, reply)?;
        Some(Grant {
            id: reply.id,
            window_offset: reply.window_offset,
            device_address: reply.device_address,
            span,
            _direction: PhantomData,
        })
    }

    /// The server's id for the grant.
    pub const fn id(&self) -> GrantId {
        self.id
    }

    /// Length in bytes.
    pub const fn len(&self) -> usize {
        self.span.len()
    }

    /// Whether the grant is empty (never: the server refuses zero-length maps).
    pub const fn is_empty(&self) -> bool {
        self.span.len() == 0
    }

    /// Device address of the first byte.
    pub const fn device_address(&self) -> u64 {
        self.device_address
    }

    /// Byte offset in the window.
    pub const fn window_offset(&self) -> u64 {
        self.window_offset
    }

    /// Client-virtual address of the first byte (for logs; the memory is reached only through
    /// [`Bounce`]).
    pub fn client_address(&self) -> usize {
        self.span.address()
    }
}

/// The span `reply` names in `window`, if consistent.
pub(crate) fn span_for(window: &Window, reply: &GrantReply) -> Option<Span> {
    let offset = usize::try_from(reply.window_offset).ok()?;
    let len = usize::try_from(reply.length).ok()?;
    if len == 0 || window.device_base().checked_add(reply.window_offset)? != reply.device_address {
        return None;
    }
    window.span(offset, len)
}

/// Why [`Bounce`] or [`InFlight::complete`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BounceError {
    /// The caller's buffer is longer than the grant (to the device) or than the transfer (from
    /// the device).
    TooLong {
        /// The caller's length.
        len: usize,
        /// The most allowed.
        capacity: usize,
    },
}

impl fmt::Display for BounceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BounceError::TooLong { len, capacity } => {
                write!(f, "{len} bytes do not fit in {capacity}")
            }
        }
    }
}

/// A refused bounce operation: the error and the value handed in, returned unchanged.
#[derive(Debug)]
#[must_use = "the refused value still holds window slots"]
pub struct Refused<T> {
    /// Why.
    pub error: BounceError,
    /// The grant or transfer, as it was.
    pub value: T,
}

fn refuse<T>(value: T, len: usize, capacity: usize) -> Refused<T> {
    Refused {
        error: BounceError::TooLong { len, capacity },
        value,
    }
}

/// Starts transfers: the copy or initialisation each direction needs before the device may see
/// the buffer.
#[derive(Debug)]
pub struct Bounce;

impl Bounce {
    /// Copies `data` into the grant and zeroes the rest of it; the device is then to read
    /// `data.len()` bytes ([`InFlight::len`]) at [`InFlight::device_address`].
    pub fn to_device(
        grant: Grant<ToDevice>,
        data: &[u8],
    ) -> Result<InFlight<ToDevice>, Refused<Grant<ToDevice>>> {
        copy_in(grant, data)
    }

    /// Zeroes the whole grant; the device is then to write at most `len` bytes.
    pub fn from_device(
        grant: Grant<FromDevice>,
        len: usize,
    ) -> Result<InFlight<FromDevice>, Refused<Grant<FromDevice>>> {
        if len > grant.len() {
            let capacity = grant.len();
            return Err(refuse(grant, len, capacity));
        }
        grant.span.fill(0, grant.len(), 0);
        Ok(InFlight { grant, len })
    }

    /// Fills the grant from `current` (the caller's buffer as it is now, zero beyond it); the
    /// device is then to write at most `current.len()` bytes. After a short device write the
    /// bytes it did not write come back as they were in `current`.
    pub fn from_device_over(
        grant: Grant<FromDevice>,
        current: &[u8],
    ) -> Result<InFlight<FromDevice>, Refused<Grant<FromDevice>>> {
        copy_in(grant, current)
    }

    /// Copies `data` into the grant and zeroes the rest; the device then reads and writes
    /// `data.len()` bytes.
    pub fn bidirectional(
        grant: Grant<Bidirectional>,
        data: &[u8],
    ) -> Result<InFlight<Bidirectional>, Refused<Grant<Bidirectional>>> {
        copy_in(grant, data)
    }
}

/// Copies `data` to the start of the grant and zeroes its tail.
fn copy_in<D: DirectionMarker>(
    grant: Grant<D>,
    data: &[u8],
) -> Result<InFlight<D>, Refused<Grant<D>>> {
    let capacity = grant.len();
    if data.len() > capacity {
        return Err(refuse(grant, data.len(), capacity));
    }
    // Both fit: checked above.
    grant.span.copy_in(0, data);
    grant.span.fill(data.len(), capacity - data.len(), 0);
    Ok(InFlight {
        grant,
        len: data.len(),
    })
}

/// A transfer the device may be working on. Give it back with [`InFlight::complete`] once the
/// device has finished (its completion was seen), never before.
#[must_use = "complete the transfer to get the grant (and, from the device, the data) back"]
pub struct InFlight<D: DirectionMarker> {
    grant: Grant<D>,
    len: usize,
}

impl<D: DirectionMarker> fmt::Debug for InFlight<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight")
            .field("grant", &self.grant)
            .field("len", &self.len)
            .finish()
    }
}

impl<D: DirectionMarker> InFlight<D> {
    /// Device address to give the device.
    pub const fn device_address(&self) -> u64 {
        self.grant.device_address
    }

    /// Bytes the device is to read or write.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the transfer is empty.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The grant's id.
    pub const fn id(&self) -> GrantId {
        self.grant.id
    }
}

impl InFlight<ToDevice> {
    /// The device has read the buffer: nothing to copy back.
    pub fn complete(self) -> Grant<ToDevice> {
        self.grant
    }
}

impl InFlight<FromDevice> {
    /// The device has finished: copies the first `out.len()` bytes of the buffer into `out`
    /// and returns the grant. `out` may be shorter than the transfer (e.g. sliced to the length
    /// the device reported, after checking it); a longer `out` is refused and the transfer
    /// returned.
    pub fn complete(self, out: &mut [u8]) -> Result<Grant<FromDevice>, Refused<Self>> {
        copy_out(self, out)
    }
}

impl InFlight<Bidirectional> {
    /// The device has finished: copies the first `out.len()` bytes back, as for
    /// [`InFlight::<FromDevice>::complete`].
    pub fn complete(self, out: &mut [u8]) -> Result<Grant<Bidirectional>, Refused<Self>> {
        copy_out(self, out)
    }
}

fn copy_out<D: DirectionMarker>(
    in_flight: InFlight<D>,
    out: &mut [u8],
) -> Result<Grant<D>, Refused<InFlight<D>>> {
    if out.len() > in_flight.len {
        let capacity = in_flight.len;
        return Err(refuse(in_flight, out.len(), capacity));
    }
    // Fits: out.len() <= len <= the grant's length.
    in_flight.grant.span.copy_out(0, out);
    Ok(in_flight.grant)
}

/// A coherent allocation (e.g. a virtqueue ring): device-visible for as long as it is held,
/// accessed field by field with volatile reads and writes or copied in bulk. Every access is
/// bounds-checked; a value read from it is untrusted (the device and host may change it at any
/// time): copy it once, then validate it.
#[must_use = "a coherent allocation holds window slots until it is freed"]
pub struct Coherent {
    id: GrantId,
    device_address: u64,
    span: Span,
}

impl fmt::Debug for Coherent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coherent")
            .field("id", &self.id)
            .field(
                "device_address",
                &format_args!("{:#x}", self.device_address),
            )
            .field("len", &self.span.len())
            .finish()
    }
}

impl Coherent {
    pub(crate) fn from_reply(window: &Window, reply: &GrantReply) -> Option<Coherent> {
        Some(Coherent {
            id: reply.id,
            device_address: reply.device_address,
            span: span_for(window, reply)?,
        })
    }

    /// The server's id for the allocation.
    pub const fn id(&self) -> GrantId {
        self.id
    }

    /// Device address of the first byte.
    pub const fn device_address(&self) -> u64 {
        self.device_address
    }

    /// Length in bytes.
    pub const fn len(&self) -> usize {
        self.span.len()
    }

    /// Whether the allocation is empty (never).
    pub const fn is_empty(&self) -> bool {
        self.span.len() == 0
    }

    /// Volatile little-endian `u16` at byte `offset` (naturally aligned), or `None`.
    pub fn read_u16(&self, offset: usize) -> Option<u16> {
        self.span.read_volatile::<2>(offset).map(|v| v as u16)
    }

    /// Volatile little-endian `u32` at byte `offset` (naturally aligned), or `None`.
    pub fn read_u32(&self, offset: usize) -> Option<u32> {
        self.span.read_volatile::<4>(offset).map(|v| v as u32)
    }

    /// Volatile little-endian `u64` at byte `offset` (naturally aligned), or `None`.
    pub fn read_u64(&self, offset: usize) -> Option<u64> {
        self.span.read_volatile::<8>(offset)
    }

    /// Volatile little-endian `u16` write; `false` if out of range or misaligned.
    pub fn write_u16(&self, offset: usize, value: u16) -> bool {
        self.span.write_volatile::<2>(offset, value.into())
    }

    /// Volatile little-endian `u32` write; `false` if out of range or misaligned.
    pub fn write_u32(&self, offset: usize, value: u32) -> bool {
        self.span.write_volatile::<4>(offset, value.into())
    }

    /// Volatile little-endian `u64` write; `false` if out of range or misaligned.
    pub fn write_u64(&self, offset: usize, value: u64) -> bool {
        self.span.write_volatile::<8>(offset, value)
    }

    /// Copies `data` in at `offset`; `false` (nothing copied) if it does not fit.
    pub fn copy_in(&self, offset: usize, data: &[u8]) -> bool {
        self.span.copy_in(offset, data)
    }

    /// Copies out from `offset` into `out`; `false` (nothing copied) if it does not fit.
    pub fn copy_out(&self, offset: usize, out: &mut [u8]) -> bool {
        self.span.copy_out(offset, out)
    }

    /// Zeroes the whole allocation.
    pub fn zero(&self) {
        self.span.fill(0, self.span.len(), 0);
    }
}
