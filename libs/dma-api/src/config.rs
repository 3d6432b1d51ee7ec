//! The DMA server's configuration: which manifest identities may register, with what quota.
//!
//! `cargo xtask` compiles it from the system manifest (`dma-quota-kib` on client tasks) and
//! packs it, encoded with postcard, into the DMA server's task configuration blob
//! (`TaskInfo::config`, at most [`moat_abi::MAX_TASK_CONFIG`] bytes). The server decodes it at
//! start with [`DmaConfig::decode`], which is strict: a blob that does not decode, has trailing
//! bytes or breaks a rule below is refused (the server then registers nobody).

use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

use crate::types::{ClientIdentity, DmaError};

/// The DMA server's client endpoint (manifest name; capability `call:dma`).
pub const CLIENT_ENDPOINT: &str = "dma";

/// The supervisor's endpoint to the DMA server (`Revoke`; capability `call:dma-admin`).
pub const ADMIN_ENDPOINT: &str = "dma-admin";

/// Most clients with a quota in one system (the encoded configuration must fit the task
/// configuration blob: 16 clients of 32-character names take under 800 bytes).
pub const MAX_CLIENTS: usize = 16;

/// Longest client name (the manifest's task-name limit).
pub const MAX_NAME_LEN: usize = 32;

/// Page size the quotas are counted in.
pub const QUOTA_GRANULE: u64 = 4096;

/// One client that may register: its identity (the badge low bits: manifest task index + 1),
/// its window size and its manifest name (for logs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    /// The manifest identity (never 0).
    pub identity: ClientIdentity,
    /// Window size in bytes: whole pages, at least one.
    pub quota_bytes: u64,
    /// The task's manifest name.
    pub name: String<MAX_NAME_LEN>,
}

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmaConfig {
    /// The most bytes the server shares for windows altogether (at least the sum of the
    /// quotas; the manifest compiler sets exactly that sum).
    pub budget_bytes: u64,
    /// The clients, by identity.
    pub clients: Vec<ClientConfig, MAX_CLIENTS>,
}

impl DmaConfig {
    /// Adds a client (the budget grows by its quota). [`DmaError::TooLarge`] when
    /// [`MAX_CLIENTS`] are configured already or the name is longer than [`MAX_NAME_LEN`].
    pub fn add_client(
        &mut self,
        identity: ClientIdentity,
        quota_bytes: u64,
        name: &str,
    ) -> Result<(), DmaError> {
        let name = String::try_from(name).map_err(|_| DmaError::TooLarge)?;
        self.clients
            .push(ClientConfig {
                identity,
                quota_bytes,
                name,
            })
            .map_err(|_| DmaError::TooLarge)?;
        self.budget_bytes = self.budget_bytes.saturating_add(quota_bytes);
        Ok(())
    }

    /// Encodes into `buffer`; returns the bytes used.
    pub fn encode(&self, buffer: &mut [u8]) -> Result<usize, DmaError> {
        self.check()?;
        postcard::to_slice(self, buffer)
            .map(|used| used.len())
            .map_err(|_| DmaError::TooLarge)
    }

    /// Decodes a configuration blob; an empty blob is the empty configuration (no client).
    pub fn decode(bytes: &[u8]) -> Result<DmaConfig, DmaError> {
        if bytes.is_empty() {
            return Ok(DmaConfig::default());
        }
        let config: DmaConfig = crate::protocol::decode_payload(bytes)?;
        config.check()?;
        Ok(config)
    }

    /// Checks the rules: identities non-zero and distinct, quotas whole pages and non-zero, and
    /// their sum within the budget.
    pub fn check(&self) -> Result<(), DmaError> {
        let mut total = 0u64;
        for (index, client) in self.clients.iter().enumerate() {
            if client.identity.0 == 0
                || client.quota_bytes == 0
                || !client.quota_bytes.is_multiple_of(QUOTA_GRANULE)
                || self.clients[..index]
                    .iter()
                    .any(|other| other.identity == client.identity)
            {
                return Err(DmaError::InvalidArgument);
            }
            total = total
                .checked_add(client.quota_bytes)
                .ok_or(DmaError::InvalidArgument)?;
        }
        if total > self.budget_bytes {
            return Err(DmaError::OutOfMemory);
        }
        Ok(())
    }

    /// (identity, quota in bytes) of every client, for the server's dispatcher.
    pub fn quotas(&self) -> impl Iterator<Item = (ClientIdentity, u64)> + '_ {
        self.clients
            .iter()
            .map(|client| (client.identity, client.quota_bytes))
    }

    /// The name of `identity`, if it is a configured client.
    pub fn name_of(&self, identity: ClientIdentity) -> Option<&str> {
        self.clients
            .iter()
            .find(|client| client.identity == identity)
            .map(|client| client.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(identity: u32, quota_bytes: u64, name: &str) -> ClientConfig {
        ClientConfig {
            identity: ClientIdentity(identity),
            quota_bytes,
            name: String::try_from(name).expect("short"),
        }
    }

    #[test]
    fn round_trips_and_the_largest_fits_the_task_blob() {
        let mut config = DmaConfig {
            budget_bytes: 32 << 20,
            clients: Vec::new(),
        };
        for index in 0..MAX_CLIENTS as u32 {
            let name = "x".repeat(MAX_NAME_LEN);
            config
                .clients
                .push(client(u32::MAX - index, 2 << 20, &name))
                .expect("room");
        }
        let mut buffer = [0u8; moat_abi::MAX_TASK_CONFIG];
        let used = config.encode(&mut buffer).expect("fits");
        assert!(used <= moat_abi::MAX_TASK_CONFIG);
        assert_eq!(DmaConfig::decode(&buffer[..used]), Ok(config.clone()));
        assert_eq!(config.quotas().count(), MAX_CLIENTS);
        assert_eq!(
            config.name_of(ClientIdentity(u32::MAX)),
            Some(&*"x".repeat(32))
        );
    }

    #[test]
    fn empty_blob_is_no_client_and_bad_blobs_are_refused() {
        assert_eq!(DmaConfig::decode(&[]), Ok(DmaConfig::default()));
        assert_eq!(DmaConfig::decode(&[0xff; 8]), Err(DmaError::Malformed));
        let mut built = DmaConfig::default();
        built
            .add_client(ClientIdentity(2), 8192, "blk")
            .expect("room");
        assert_eq!(built.budget_bytes, 8192);
        assert_eq!(
            built.add_client(ClientIdentity(3), 4096, &"n".repeat(MAX_NAME_LEN + 1)),
            Err(DmaError::TooLarge)
        );
        let good = DmaConfig {
            budget_bytes: 8192,
            clients: Vec::from_slice(&[client(2, 8192, "blk")]).expect("room"),
        };
        let mut buffer = [0u8; 64];
        let used = good.encode(&mut buffer).expect("fits");
        // Trailing bytes.
        assert_eq!(
            DmaConfig::decode(&buffer[..used + 1]),
            Err(DmaError::Malformed)
        );
        for bad in [
            DmaConfig {
                budget_bytes: 4096,
                ..good.clone()
            },
            DmaConfig {
                budget_bytes: 1 << 20,
                clients: Vec::from_slice(&[client(0, 4096, "zero")]).expect("room"),
            },
            DmaConfig {
                budget_bytes: 1 << 20,
                clients: Vec::from_slice(&[client(3, 100, "odd")]).expect("room"),
            },
            DmaConfig {
                budget_bytes: 1 << 20,
                clients: Vec::from_slice(&[client(3, 4096, "a"), client(3, 4096, "b")])
                    .expect("room"),
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
            assert!(bad.encode(&mut buffer).is_err());
        }
    }
}
