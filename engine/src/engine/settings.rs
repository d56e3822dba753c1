//! Settings the layers above keep with the data, so that they survive restarts (the runtime's
//! replication mode, switched by an operator): small named values in the metadata.

use super::Engine;
use crate::error::Result;
use crate::store::keys;

/// Longest setting name, in bytes.
const SETTING_NAME_BYTES_MAX: usize = 64;
/// Largest setting value, in bytes.
const SETTING_VALUE_BYTES_MAX: usize = 4096;

impl Engine {
    /// A setting kept with the data (`None`: never set).
    pub fn setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        check(name, &[])?;
        Ok(self.inner.store.get_meta(&keys::setting_key(name))?)
    }

    /// Keeps a setting with the data, synced before this returns.
    pub fn set_setting(&self, name: &str, value: &[u8]) -> Result<()> {
        check(name, value)?;
        Ok(self
            .inner
            .store
            .put_meta_sync(&keys::setting_key(name), value)?)
    }
}

fn check(name: &str, value: &[u8]) -> Result<()> {
    if name.is_empty() || name.len() > SETTING_NAME_BYTES_MAX {
        return Err(crate::Error::InvalidOperation(
            "a setting name has 1 to 64 bytes",
        ));
    }
    if value.len() > SETTING_VALUE_BYTES_MAX {
        return Err(crate::Error::InvalidOperation(
            "a setting value has at most 4096 bytes",
        ));
    }
    Ok(())
}
