//! The boot console: a PL011 or 16550 UART, whichever the device tree names.
//!
//! The console is the one piece of hardware every path uses, including the fatal-exception and
//! panic paths, so the writer takes a spin lock that those paths can break (they never return).
//!
//! Input: when a task holds the ConsoleInput capability, the kernel turns on the UART's receive
//! interrupts ([`enable_input`]) and moves what arrives into a ring ([`drain_input`], from the
//! UART's interrupt and on every timer tick), which `ConsoleRead` empties ([`take_input`]).

use core::fmt::{self, Write};
use core::ptr::{read_volatile, write_volatile};

use moat_kernel_core::platform::UartKind;
use moat_kernel_core::ring::ByteRing;
use spin::Mutex;

/// A memory-mapped UART the kernel has mapped at `base`.
pub struct Uart {
    kind: UartKind,
    base: usize,
}

const PL011_DR: usize = 0x00;
const PL011_FR: usize = 0x18;
const PL011_FR_TXFF: u32 = 1 << 5;
const PL011_FR_RXFE: u32 = 1 << 4;
const PL011_IMSC: usize = 0x38;
/// Receive and receive-timeout interrupts.
const PL011_IMSC_RXIM_RTIM: u32 = (1 << 4) | (1 << 6);
const PL011_ICR: usize = 0x44;
const PL011_CR_RXE: u32 = 1 << 9;
const PL011_CR: usize = 0x30;
const PL011_CR_UARTEN_TXE: u32 = (1 << 0) | (1 << 8);

const NS16550_THR: usize = 0;
const NS16550_LSR: usize = 5;
const NS16550_LSR_THRE: u32 = 1 << 5;
const NS16550_RBR: usize = 0;
const NS16550_IER: usize = 1;
/// Received-data-available interrupt.
const NS16550_IER_ERBFI: u32 = 1 << 0;
const NS16550_LSR_DR: u32 = 1 << 0;

impl Uart {
    /// Takes over the UART mapped at virtual address `base`.
    ///
    /// # Safety
    ///
    /// `base` must be the kernel mapping (Device memory) of the UART's registers, covering the
    /// register block for `kind`, and nothing else may drive this UART.
    pub unsafe fn new(kind: UartKind, base: usize) -> Self {
        let uart = Self { kind, base };
        if kind == UartKind::Pl011 {
            // Firmware or the VMM has set the line up; make sure the transmitter is on.
            let cr = uart.read(PL011_CR);
            if cr & PL011_CR_UARTEN_TXE != PL011_CR_UARTEN_TXE {
                uart.write(PL011_CR, cr | PL011_CR_UARTEN_TXE);
            }
        }
        uart
    }

    fn register(&self, index: usize) -> usize {
        match self.kind {
            UartKind::Pl011 => self.base + index,
            UartKind::Ns16550 { reg_shift, .. } => self.base + (index << reg_shift),
        }
    }

    fn read(&self, index: usize) -> u32 {
        let address = self.register(index);
        // SAFETY: `new`'s contract: the register block is mapped as Device memory and ours.
        unsafe {
            match self.kind {
                UartKind::Ns16550 {
                    reg_io_width: 1, ..
                } => u32::from(read_volatile(address as *const u8)),
                _ => read_volatile(address as *const u32),
            }
        }
    }

    fn write(&self, index: usize, value: u32) {
        let address = self.register(index);
        // SAFETY: as in `read`.
        unsafe {
            match self.kind {
                UartKind::Ns16550 {
                    reg_io_width: 1, ..
                } => write_volatile(address as *mut u8, value as u8),
                _ => write_volatile(address as *mut u32, value),
            }
        }
    }

    /// Sends one byte, waiting for room in the transmit FIFO.
    pub fn put(&self, byte: u8) {
        match self.kind {
            UartKind::Pl011 => {
                while self.read(PL011_FR) & PL011_FR_TXFF != 0 {
                    core::hint::spin_loop();
                }
                self.write(PL011_DR, u32::from(byte));
            }
            UartKind::Ns16550 { .. } => {
                while self.read(NS16550_LSR) & NS16550_LSR_THRE == 0 {
                    core::hint::spin_loop();
                }
                self.write(NS16550_THR, u32::from(byte));
            }
        }
    }
}

impl Uart {
    /// Turns the receiver and its interrupts on (PL011: RXIM and RTIM, so a short burst that
    /// stays below the FIFO trigger level still interrupts; 16550: IER bit 0).
    pub fn enable_receive(&self) {
        match self.kind {
            UartKind::Pl011 => {
                let cr = self.read(PL011_CR);
                if cr & PL011_CR_RXE == 0 {
                    self.write(PL011_CR, cr | PL011_CR_RXE);
                }
                let imsc = self.read(PL011_IMSC);
                self.write(PL011_IMSC, imsc | PL011_IMSC_RXIM_RTIM);
            }
            UartKind::Ns16550 { .. } => {
                let ier = self.read(NS16550_IER);
                self.write(NS16550_IER, ier | NS16550_IER_ERBFI);
            }
        }
    }

    /// Takes one received byte, if the receive FIFO holds one.
    pub fn get(&self) -> Option<u8> {
        match self.kind {
            UartKind::Pl011 => {
                if self.read(PL011_FR) & PL011_FR_RXFE != 0 {
                    return None;
                }
                // Bits 8-11 are framing/parity/break/overrun flags: the byte is kept anyway.
                Some(self.read(PL011_DR) as u8)
            }
            UartKind::Ns16550 { .. } => {
                if self.read(NS16550_LSR) & NS16550_LSR_DR == 0 {
                    return None;
                }
                Some(self.read(NS16550_RBR) as u8)
            }
        }
    }

    /// Clears the receive interrupts (an emptied PL011 FIFO drops them too; this makes sure).
    fn clear_receive_interrupts(&self) {
        if self.kind == UartKind::Pl011 {
            self.write(PL011_ICR, PL011_IMSC_RXIM_RTIM);
        }
    }
}

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                self.put(b'\r');
            }
            self.put(byte);
        }
        Ok(())
    }
}

static CONSOLE: Mutex<Option<Uart>> = Mutex::new(None);

/// Console input not yet read: 4 KiB, so a pasted line or a scripted session fits.
static INPUT: Mutex<ByteRing<4096>> = Mutex::new(ByteRing::new());

/// Turns console input on: receive interrupts at the UART (the caller routes the UART's
/// interrupt at the GIC). Input is taken only after this.
pub fn enable_input() {
    if let Some(uart) = CONSOLE.lock().as_ref() {
        uart.enable_receive();
    }
}

/// Moves everything in the UART's receive FIFO into the input ring; true if the ring holds
/// anything afterwards. Bytes beyond the ring's room are dropped (the reader is not reading).
pub fn drain_input() -> bool {
    let mut input = INPUT.lock();
    if let Some(uart) = CONSOLE.lock().as_ref() {
        // Bounded: a host that streams faster than we drain cannot keep the kernel here.
        for _ in 0..4096 {
            match uart.get() {
                Some(byte) => {
                    input.push(byte);
                }
                None => break,
            }
        }
        uart.clear_receive_interrupts();
    }
    !input.is_empty()
}

/// Moves up to `out.len()` bytes of input into `out`; returns how many.
pub fn take_input(out: &mut [u8]) -> usize {
    INPUT.lock().pop_into(out)
}

/// Installs the console. Output before this is dropped.
pub fn init(uart: Uart) {
    *CONSOLE.lock() = Some(uart);
}

/// Writes formatted text to the console (used by `kprint!`).
pub fn write_fmt(args: fmt::Arguments<'_>) {
    if let Some(uart) = CONSOLE.lock().as_mut() {
        let _ = uart.write_fmt(args);
    }
}

/// Writes formatted text even if the console lock is held: for paths that never return
/// (fatal exceptions, panics), where waiting for the interrupted holder would hang forever.
pub fn write_fmt_breaking_lock(args: fmt::Arguments<'_>) {
    if CONSOLE.is_locked() {
        // SAFETY: only called on the way to power-off; the interrupted holder never resumes, so
        // its guard is never used again. Interleaved bytes are acceptable there.
        unsafe { CONSOLE.force_unlock() };
    }
    write_fmt(args);
}

/// Prints to the kernel console.
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!($($arg)*)) };
}

/// Prints a line to the kernel console.
#[macro_export]
macro_rules! kprintln {
    () => { $crate::kprint!("\n") };
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}
