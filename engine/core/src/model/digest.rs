//! Stable 64-bit hashing (FNV-1a) for record ids in anti-entropy and for state digests: the
//! same bytes give the same value on every machine, run and build.

/// FNV-1a, 64 bits.
#[derive(Clone, Debug)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Mixes bytes in.
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// Mixes a number in.
    pub fn write_u64(&mut self, n: u64) {
        self.write(&n.to_le_bytes());
    }
}

/// The hash of a key, as anti-entropy names keys (the same on every replica and build).
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h = Fnv::default();
    h.write(key);
    h.0
}

/// The hash of a record's stored bytes (canonical: equal states, equal hashes).
pub fn state_hash(bytes: &[u8]) -> u64 {
    let mut h = Fnv::default();
    h.write_u64(bytes.len() as u64);
    h.write(bytes);
    h.0
}

/// The id of one stored record version: equal key and bytes, equal id.
pub fn record_id(key: &[u8], record: &[u8]) -> u64 {
    let mut h = Fnv::default();
    h.write_u64(key.len() as u64);
    h.write(key);
    h.write(record);
    h.0
}
