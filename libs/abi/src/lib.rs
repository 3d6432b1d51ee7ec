//! Moat ABI: syscall numbers, errors and rights shared by the kernel and user tasks.
#![no_std]
