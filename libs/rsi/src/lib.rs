//! The Arm Realm Services Interface (RSI) 1.0 as typed Rust.
#![no_std]
