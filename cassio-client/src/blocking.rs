//! A blocking wrapper: the async client on a private runtime, for programs
//! (and the CLI) that are not async.

use std::net::SocketAddr;
use std::time::Duration;

use cassio_core::coordinator::ConsistencyLevel;
use cassio_core::coordinator::repair::RepairSummary;
use cassio_core::proto::ClusterStatus;
use cassio_core::proto::{CleanupSummary, KeyRange, MoveSummary};

use crate::client::{ClientConfig, ScanPage, Versioned};
use crate::error::Error;

pub struct Client {
    runtime: tokio::runtime::Runtime,
    inner: crate::Client,
}

impl Client {
    pub fn connect(seeds: &[SocketAddr], config: ClientConfig) -> Result<Client, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Transport(cassio_core::Error::io("client runtime", e)))?;
        let inner = runtime.block_on(crate::Client::connect(seeds, config))?;
        Ok(Client { runtime, inner })
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.runtime.block_on(self.inner.get(key))
    }

    pub fn get_versioned(
        &self,
        key: &[u8],
        level: Option<ConsistencyLevel>,
    ) -> Result<Option<Versioned>, Error> {
        self.runtime.block_on(self.inner.get_versioned(key, level))
    }

    pub fn set(&self, key: &[u8], value: &[u8]) -> Result<u64, Error> {
        self.runtime.block_on(self.inner.set(key, value))
    }

    pub fn set_with(
        &self,
        key: &[u8],
        value: &[u8],
        level: Option<ConsistencyLevel>,
        ttl: Option<Duration>,
    ) -> Result<u64, Error> {
        self.runtime
            .block_on(self.inner.set_with(key, value, level, ttl))
    }

    pub fn delete(&self, key: &[u8], level: Option<ConsistencyLevel>) -> Result<u64, Error> {
        self.runtime.block_on(self.inner.delete(key, level))
    }

    pub fn scan(
        &self,
        range: &KeyRange,
        limit: u32,
        level: Option<ConsistencyLevel>,
    ) -> Result<ScanPage, Error> {
        self.runtime.block_on(self.inner.scan(range, limit, level))
    }

    pub fn status(&self) -> Result<ClusterStatus, Error> {
        self.runtime.block_on(self.inner.status())
    }

    /// See [`crate::Client::repair`]; `timeout` bounds the whole repair.
    pub fn repair(&self, timeout: Duration) -> Result<RepairSummary, Error> {
        self.runtime
            .block_on(self.inner.with_timeout(timeout).repair())
    }

    /// See [`crate::Client::decommission`]; `timeout` bounds the whole leave.
    pub fn decommission(&self, timeout: Duration) -> Result<MoveSummary, Error> {
        self.runtime
            .block_on(self.inner.with_timeout(timeout).decommission())
    }

    /// See [`crate::Client::cleanup`]; `timeout` bounds the whole cleanup.
    pub fn cleanup(&self, timeout: Duration) -> Result<CleanupSummary, Error> {
        self.runtime
            .block_on(self.inner.with_timeout(timeout).cleanup())
    }

    /// See [`crate::Client::remove_node`]; `timeout` bounds the removal and
    /// the repairs after it.
    pub fn remove_node(&self, node: &str, timeout: Duration) -> Result<MoveSummary, Error> {
        self.runtime
            .block_on(self.inner.with_timeout(timeout).remove_node(node))
    }
}
