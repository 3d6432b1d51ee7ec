//! The DMA server: sole holder of the Share capability; bounce pool, grants and quarantine.
#![no_std]
