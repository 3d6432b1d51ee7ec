//! Host tests: the transport against the fake register model, the queue against well-behaved
//! and hostile fake devices, and property tests over random interleavings.

mod proptests;
mod queue;
mod transport;
